#!/usr/bin/env bash
# Wheels a lent GPU machine (Python 3.12, torch, no network, no diffusers) needs to run the benchmarks,
# at the versions this checkout's .venv holds, downloaded into .whl/ (git-ignored; carry it).
#
#   bash benchmarks/device_wheels.sh
#
# Then begin each device command with
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
#   python3 -c 'import pandas, tqdm, yaml' 2>/dev/null || python3 -m pip install -q --no-index --no-deps \
#       --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/extra/*.whl
#   export PYTHONPATH=/tmp/site:$PWD
# (.whl/extra holds what the image may lack besides diffusers, installed only where it is missing.)
set -euo pipefail
cd "$(dirname "$0")/.."
version() { .venv/bin/python -c "import importlib.metadata as m; print(m.version('$1'))"; }
download=(python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
mkdir -p .whl/extra
"${download[@]}" -d .whl "diffusers==$(version diffusers)" "importlib_metadata==$(version importlib_metadata)" \
    "zipp==$(version zipp)"
"${download[@]}" -d .whl/extra "pandas==$(version pandas)" "python-dateutil==$(version python-dateutil)" \
    "tzdata==$(version tzdata)" "tqdm==$(version tqdm)" "pyyaml==$(version pyyaml)"
du -sh .whl
