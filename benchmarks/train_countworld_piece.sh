#!/usr/bin/env bash
# One piece of CountWorld training on a lent GPU machine that keeps nothing between calls.
#
#   CARRY=.scratch/countworld-portable BUDGET=8 bash benchmarks/train_countworld_piece.sh [train options]
#
# Resumes from the portable checkpoint carried in (CARRY) when the work folder (WORK, outside the
# checkout) is new, trains for BUDGET minutes, then packs the portable checkpoint (state, loss log,
# weights: about 50 MB) and the loss curves into $OUT as countworld.tar.* parts of 15 MB; with
# FINAL=1 it packs the exported float16 pipeline beside them (the folder to commit as models/countworld).
# Unpack here with `cat countworld.tar.* | tar x`; the next piece carries the unpacked `portable`.
set -euo pipefail
work=${WORK:-/tmp/countworld}
carried=${CARRY:-.scratch/countworld-portable}
resume=()
if [ -d "$carried" ] && [ ! -f "$work/state.json" ]; then
    resume=(--resume-from "$carried")
fi
"${PYTHON:-python3}" experiments/train_countworld.py --work "$work" --budget-minutes "${BUDGET:-8}" "${resume[@]}" "$@"
packed=(portable loss_curves.png)
if [ "${FINAL:-0}" = 1 ]; then packed+=(pipeline); fi
tar cf - -C "$work" "${packed[@]}" | split -b 15m - "${OUT:?set OUT to the folder that comes back}/countworld.tar."
