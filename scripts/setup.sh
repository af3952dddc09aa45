#!/usr/bin/env bash
# Install ulmfit and its test tools into .venv (CPU PyTorch; a GPU machine keeps its own torch).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# The CPU wheel first: an unpinned torch would pull gigabytes of CUDA packages.
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[dev,plot,baselines,hf,fastai,serve]"
