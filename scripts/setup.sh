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
python -m pip install -q -e ".[dev,plot,baselines,hf,fastai,serve,onnx]"
# The page test drives Debian's chromium (tests/test_serve_page.py). Installed where this
# runs as root with apt (CI does); elsewhere, or if the install fails, that one test skips.
if ! command -v chromedriver >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 \
  && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null) \
    || echo "setup: chromium could not be installed; the browser test will be skipped" >&2
fi
