#!/usr/bin/env bash
# CountBench through torchrun against one process, at a real model's shape with random weights:
#
#   COUNTBENCH=../shared/countbench NPROC=2 bash benchmarks/countbench_sharded.sh [countbench.py options]
#
# 1. builds the pipeline folder of VARIANT (default wan2.1-1.3b) at SIZE (default full), random weights;
# 2. runs the PROMPTS subset in one process (`single`), then with NPROC torchrun ranks (`ranks`);
# 3. runs it again with NPROC ranks (`killed`), kills rank 1 with SIGKILL once KILL_AFTER_JOBS (2)
#    jobs are done (torchrun then stops the other ranks), and runs the same command again: it resumes;
# 4. checks that `ranks` and `killed` have exactly the single process's results table, and that no
#    video was made twice (each job's result file is written once, atomically).
# With fewer GPUs than ranks, ranks share the GPUs in turn. Timings and checks go to $WORK/report.txt.
set -euo pipefail
work=${WORK:-/tmp/countbench-sharded}
nproc=${NPROC:-2}
python=${PYTHON:-python3}
mkdir -p "$work"
model="$work/${VARIANT:-wan2.1-1.3b}-${SIZE:-full}"
if [ ! -f "$model/model_index.json" ]; then
    "$python" -c "import sys; from numina.models import build_tiny_pipeline; build_tiny_pipeline(sys.argv[1], sys.argv[2], size=sys.argv[3])" \
        "$model" "${VARIANT:-wan2.1-1.3b}" "${SIZE:-full}"
fi
args=(--model "$model" --countbench "${COUNTBENCH:?set COUNTBENCH to the CountBench folder}"
    --prompts "${PROMPTS:-0,1,2,3}" --seeds "${SEEDS:-1}" --methods "${METHODS:-baseline,official}"
    --steps "${STEPS:-4}" --counter exact --samples 0 --wandb disabled "$@")
ranks=(-m torch.distributed.run --nproc_per_node "$nproc" experiments/countbench.py "${args[@]}")
report="$work/report.txt"

timed() {  # timed NAME COMMAND...: run it, append its wall time to the report
    local name=$1 started finished
    shift
    started=$(date +%s%N)
    "$@" >"$work/$name.log" 2>&1
    finished=$(date +%s%N)
    echo "$name: $(((finished - started) / 1000000)) ms" | tee -a "$report"
}

timed single "$python" experiments/countbench.py "${args[@]}" --out "$work/single"
timed ranks "$python" "${ranks[@]}" --out "$work/ranks"

"$python" "${ranks[@]}" --out "$work/killed" >"$work/killed-1.log" 2>&1 &
agent=$!
finished_jobs() { ls "$work/killed/videos" 2>/dev/null | grep -c '\.json$' || true; }
while kill -0 "$agent" 2>/dev/null && [ "$(finished_jobs)" -lt "${KILL_AFTER_JOBS:-2}" ]; do sleep 0.5; done
for pid in $(pgrep -f "experiments/countbench.py.*$work/killed" || true); do
    if tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx "RANK=1"; then
        kill -KILL "$pid" && echo "killed rank 1 (pid $pid) once $(finished_jobs) jobs were done" | tee -a "$report"
    fi
done
wait || true
echo "jobs finished before the resume: $(finished_jobs)" | tee -a "$report"
timed resumed "$python" "${ranks[@]}" --out "$work/killed"
grep -h "jobs here" "$work/resumed.log" | tee -a "$report"

"$python" - "$work" <<'EOF' | tee -a "$report"
import sys
from pathlib import Path
import pandas as pd
work = Path(sys.argv[1])
single = pd.read_csv(work / "single" / "results.csv")
for name in ("ranks", "killed"):
    table = pd.read_csv(work / name / "results.csv")
    pd.testing.assert_frame_equal(table, single)
    videos = pd.read_csv(work / name / "videos.csv")
    print(f"{name}: results.csv equals the single-process table ({len(table)} rows); {len(videos)} videos, "
          f"{videos.duplicated(['prompt_id', 'seed', 'method']).sum()} repeated")
EOF
