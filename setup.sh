#!/usr/bin/env bash
# Create .venv and install numina-lab with its test tools (uv when it can be had, else pip).
# A CPU build of torch found in pip's find-links folders (PIP_FIND_LINKS) is used when present;
# otherwise torch comes from PyPI (the CUDA build on Linux, a few GB).
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip uv
# --compile-bytecode writes the installed modules' bytecode once, here: where PYTHONDONTWRITEBYTECODE
# is set (as on CI), every process would otherwise compile torch, diffusers and transformers again
# (8-10 s a process start: the full test suite went from 543 s to 409 s on 2 cores).
install=(.venv/bin/python -m uv pip install --python .venv/bin/python -q --compile-bytecode)
local_torch=""
for folder in ${PIP_FIND_LINKS:-}; do
  for wheel in "$folder"/torch-*.whl; do [ -f "$wheel" ] && local_torch="$wheel"; done
done
if [ -n "$local_torch" ]; then
  "${install[@]}" "$local_torch"
fi
"${install[@]}" -e ".[dev]"
echo "installed into .venv: $(.venv/bin/python -c 'import torch, diffusers; print("torch", torch.__version__, "diffusers", diffusers.__version__)')"
