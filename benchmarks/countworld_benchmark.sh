#!/usr/bin/env bash
# CountWorld's measurements in one call on a GPU machine that keeps nothing between calls:
#
#   MODEL=models/countworld SEEDS=4 SHARDS=8 MINUTES=8 bash benchmarks/countworld_benchmark.sh
#
# 1. the benchmark (baseline, official, improved on PROMPTS CountWorld prompts x SEEDS seeds, exact
#    counter), split over SHARDS processes that share the one GPU (the layout step runs on the CPU
#    cores, so several processes keep the GPU busy), stopped after MINUTES and merged;
# 2. the numeral diagnosis and the counts 1-8 contact sheet, beside it;
# 3. everything except videos and attention stores packed into $OUT as countworld-eval.tar.* parts
#    of 15 MB. A benchmark cut off by MINUTES resumes: carry the unpacked countbench folder back in
#    as RESUME, and the jobs already done are not run again.
set -euo pipefail
model=${MODEL:-countworld}
work=${WORK:-/tmp/countworld-eval}
shards=${SHARDS:-8}
python=${PYTHON:-python3}
mkdir -p "$work"
if [ -n "${RESUME:-}" ] && [ ! -d "$work/countbench" ]; then
    cp -r "$RESUME" "$work/countbench"
fi
common=(--model "$model" --prompt-set countworld --countworld-prompts "${PROMPTS:-160}" --wandb disabled)
# --samples 0: no mp4s (they are not packed, and lent machines may lack ffmpeg for writing them)
benchmark=("${common[@]}" --seeds "${SEEDS:-4}" --methods baseline,official,improved --samples 0
    --out "$work/countbench")

started=$(date +%s)
pids=()
for ((i = 0; i < shards; i++)); do
    timeout --signal=INT "$((${MINUTES:-8} * 60))" "$python" experiments/countbench.py "${benchmark[@]}" \
        --shard "$i/$shards" >"$work/countbench-shard-$i.log" 2>&1 &
    pids+=($!)
done
"$python" experiments/diagnose_numerals.py "${common[@]}" --out "$work/diagnosis" >"$work/diagnosis.log" 2>&1 &
diagnosis=$!
"$python" experiments/countworld_samples.py --model "$model" --out "$work/samples" --wandb disabled \
    >"$work/samples.log" 2>&1 &
samples=$!
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
echo "benchmark shards ended (last status $status) after $(($(date +%s) - started)) s"
"$python" experiments/countbench.py "${benchmark[@]}" --merge 2>&1 | tail -3 || echo "merge failed: see the shard logs"
wait "$diagnosis" || echo "diagnosis failed: see diagnosis.log"
wait "$samples" || echo "samples failed: see samples.log"
tail -n 3 "$work"/*.log
tar cf - -C "$(dirname "$work")" --exclude='*.mp4' --exclude='*.h5' "$(basename "$work")" |
    split -b 15m - "${OUT:?set OUT to the folder that comes back}/countworld-eval.tar."
