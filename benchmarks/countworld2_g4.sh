#!/usr/bin/env bash
# Gate G4 on a lent GPU: CountBench on CountWorld 2 with NUMINA's presets and both controls (the oracle
# layout and a random head, `numina.evaluation.controls`), NPROC CountBench ranks sharing the GPU.
#
#   G4_OUT=$OUT/g4 BUDGET=420 bash benchmarks/countworld2_g4.sh [countbench.py options]
#
# The ranks stop after BUDGET seconds (a finished job's file is written atomically, so nothing is half
# written); then the tables are built from the jobs finished so far. Put an earlier call's folder back
# at G4_OUT and the same command goes on with the jobs still missing (countbench refuses changed
# settings). Defaults: single-kind and mixed images of the CountWorld 2 prompt set (--frames 1), one
# seed, 160 prompts, the model's sampler (50 steps, CFG 5, shift 5), the exact counter.
set -uo pipefail
out=${G4_OUT:?set G4_OUT to the output folder}
python=${PYTHON:-python3}
args=(--model countworld2 --frames 1 --seeds "${SEEDS:-1}" --countworld-prompts "${PROMPTS:-160}"
    --methods "${METHODS:-baseline,official,paper,improved,oracle,random_head}" --counter exact
    --samples 0 --wandb disabled --out "$out" "$@")
started=$(date +%s)
timeout --signal=TERM "${BUDGET:-420}" "$python" -m torch.distributed.run --nproc_per_node "${NPROC:-8}" \
    experiments/countbench.py "${args[@]}" >"${LOG:-/dev/stderr}" 2>&1
echo "ranks: rc $?, $(($(date +%s) - started)) s, $(ls "$out/videos" | grep -c '\.json$') jobs done"
"$python" experiments/countbench.py "${args[@]}" --merge 2>&1 | tail -3
