#!/usr/bin/env bash
# One device call that does every GPU check (prepare with benchmarks/gpu_prepare.sh):
#   1. the GPU tests (pytest -m gpu): mixed precision, DropConnect on cuDNN, fused AdamW;
#   2. LM training tokens/s: our fit loop vs the raw cuDNN ceiling vs fastai's Learner,
#      bf16 and fp16, bs 64 and 256, peak memory (benchmarks/lm_throughput.py);
#   3. GPU classifier inference and training docs/s (benchmarks/speed.py --sections gpu).
# Everything it writes goes under $OUT; the table is printed last. About 6-8 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/ulmfit-gpu-out}
mkdir -p "$OUT"
export PYTHONPATH=src PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=src:/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv \
  | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cudnn', torch.backends.cudnn.version())" \
  | tee -a "$OUT/gpu.txt"
python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.log"
python3 benchmarks/speed.py --data .devdata --sections lm gpu --results "$OUT/RESULTS.md" \
  --lm-args "--bs 64 256 --precision bf16 fp16 --json $OUT/lm_throughput.json" \
  2>&1 | tee "$OUT/speed.log"
