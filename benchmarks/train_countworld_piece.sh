#!/usr/bin/env bash
# One piece of CountWorld training on a lent GPU machine that keeps nothing between calls.
#
#   CARRY=.scratch/countworld-portable BUDGET=8 bash benchmarks/train_countworld_piece.sh [train options]
#   TRAINER=experiments/train_countworld2.py CARRY=.scratch/countworld2-portable BUDGET=8 bash ...
#
# Resumes from the portable checkpoint carried in (CARRY) when the work folder (WORK, outside the
# checkout) is new; on a machine still warm from the last piece the work folder goes on with its full
# checkpoint. Trains for BUDGET minutes, then packs the portable checkpoint (and the loss curves) into
# $OUT as countworld.tar.* parts of 15 MB; with FINAL=1 it packs the exported float16 pipeline beside
# them (the first CountWorld's trainer writes it outside `portable`). Unpack here with
# `cat countworld.tar.* | tar x`; the next piece carries the unpacked `portable`.
set -euo pipefail
work=${WORK:-/tmp/countworld}
if [ "${FINAL:-0}" = 1 ] && [ "${TRAINER:-experiments/train_countworld.py}" != experiments/train_countworld.py ]; then
    echo "FINAL=1 packs the first CountWorld's exported pipeline; CountWorld 2's is the portable copy" >&2
    exit 2
fi
carried=${CARRY:-.scratch/countworld-portable}
resume=()
if [ -d "$carried" ] && [ ! -f "$work/state.json" ]; then
    resume=(--resume-from "$carried")
fi
"${PYTHON:-python3}" "${TRAINER:-experiments/train_countworld.py}" --work "$work" \
    --budget-minutes "${BUDGET:-8}" "${resume[@]}" "$@"
packed=(portable)
if [ -f "$work/loss_curves.png" ]; then packed+=(loss_curves.png); fi
if [ "${FINAL:-0}" = 1 ]; then packed+=(pipeline); fi
tar cf - -C "$work" "${packed[@]}" | split -b 15m - "${OUT:?set OUT to the folder that comes back}/countworld.tar."
