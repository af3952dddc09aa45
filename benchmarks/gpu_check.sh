#!/usr/bin/env bash
# One device call for the GPU work; stage its data first with the same PHASES:
#   PHASES="..." bash benchmarks/gpu_prepare.sh            (here)
#   run(command="PHASES='...' bash benchmarks/gpu_check.sh", carry=[".devdata", ".whl"])
#
# Phases, in this order (default "tests speed"):
#   tests     pytest -m gpu: mixed precision, DropConnect on cuDNN, fused AdamW (~1 min),
#             then benchmarks/parity.py: bf16 fit against the fp32 plain loop (~1 min)
#   speed     LM training tokens/s (fit loop vs raw cuDNN ceiling vs fastai's Learner, bs 64
#             and 256, LM_PRECISION: default bf16, the issue's bar; "bf16 fp16" adds fp16 at
#             about twice the time) and classifier inference/training docs/s, with peak
#             memory (benchmarks/speed.py --sections lm gpu; ~3-5 min; a torch.profiler
#             report of fit at bs 256 bf16 in profile_fit.txt), then the DDP
#             scaling projection from that bf16 step (benchmarks/scaling.py; ~10 s)
#   pretrain  stage 1 at the paper's sizes on the Wikipedia subset (benchmarks/pretrain.py;
#             PRETRAIN_MINUTES a piece, default 6; PRETRAIN_EPOCHS overrides the config's 8,
#             the same in every piece; PRETRAIN_CONFIG another config). Resumable: a later
#             call on the same warm machine (runs/ stays while it is warm) goes on from
#             where this one stopped.
#   trec6     reproduce.py trec6 --budget full from the finished stage-1 model
#   imdb      reproduce.py imdb --budget full, LM fine-tuning IMDB_LM_EPOCHS (default 2)
# What comes back ($OUT, at most 8 files): session.log, RESULTS.md (every phase's section),
# lm_throughput.json, profile_fit.txt, pretrain.json, reproduce_<dataset>.json. The tables
# print last.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/ulmfit-gpu-out}
PHASES=${PHASES:-"tests speed"}
mkdir -p "$OUT"
has() { [[ " $PHASES " == *" $1 "* ]]; }
export PYTHONPATH=src PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}  # the GPU image's Python 3.12 with its torch
WHEELS=${WHEELS:-.whl}
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$WHEELS"/*.whl && export PYTHONPATH=src:/tmp/site
fi
LOG="$OUT/session.log"
say() { echo "[gpu_check $(date -u +%H:%M:%S)] $*" | tee -a "$LOG"; }
failed=()
check() {  # after a phase's pipeline: remember a failure, go on with the next phase
  local rc=${PIPESTATUS[0]}
  [ "$rc" = 0 ] || { failed+=("$1 (exit $rc)"); say "$1 failed with exit status $rc"; }
}
say "phases: $PHASES"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 | tee -a "$LOG"
"$PY" -c "import torch; print('torch', torch.__version__, 'cudnn', torch.backends.cudnn.version())" \
  2>&1 | tee -a "$LOG"
DATA=${DATA:-.devdata}  # what gpu_prepare.sh staged
RUNS=${RUNS:-runs}     # model directories (they stay on the machine while it is warm)
LM=$RUNS/pretrain_wiki_bf16  # the exported stage-1 model the reproduce phases start from
SYSTEMS=ulmfit,scratch,tfidf
"$PY" -c "import fasttext" 2>/dev/null && SYSTEMS=$SYSTEMS,fasttext

if has tests; then
  say "tests"
  "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py 2>&1 | tee -a "$LOG"
  check tests
  say "parity (bf16 fit against the fp32 plain loop, 2 seeds)"
  "$PY" benchmarks/parity.py --device cuda --precision bf16 --seeds 0 1 --data "$DATA" \
    --results "$OUT/RESULTS.md" 2>&1 | tee -a "$LOG"
  check parity
fi
if has speed; then
  say "speed"
  "$PY" benchmarks/speed.py --data "$DATA" --sections lm gpu --results "$OUT/RESULTS.md" \
    --lm-args "--bs 64 256 --precision ${LM_PRECISION:-bf16} --json $OUT/lm_throughput.json --profile $OUT/profile_fit.txt" 2>&1 | tee -a "$LOG"
  check speed
  say "scaling (DDP projection from the bf16 fit step just measured)"
  "$PY" benchmarks/scaling.py --lm-json "$OUT/lm_throughput.json" --results "$OUT/RESULTS.md" \
    2>&1 | tee -a "$LOG"
  check scaling
fi
if has pretrain; then
  say "pretrain"
  "$PY" benchmarks/pretrain.py --config "${PRETRAIN_CONFIG:-configs/pretrain_wiki_gpu.toml}" \
    --data-dir "$DATA" --max-minutes "${PRETRAIN_MINUTES:-6}" \
    ${PRETRAIN_EPOCHS:+--epochs "$PRETRAIN_EPOCHS"} --export "$LM" \
    --json "$OUT/pretrain.json" --results "$OUT/RESULTS.md" 2>&1 | tee -a "$LOG"
  check pretrain
fi
for ds in trec6 imdb; do
  has "$ds" || continue
  if [ ! -f "$LM/config.json" ]; then
    say "$ds skipped: stage 1 has not finished ($LM missing); run the pretrain phase again"
    continue
  fi
  say "$ds"
  extra=()
  [ "$ds" = imdb ] && extra=(--lm-epochs "${IMDB_LM_EPOCHS:-2}")
  "$PY" benchmarks/reproduce.py "$ds" --budget full --pretrained "$LM" --data-dir "$DATA" \
    --systems "$SYSTEMS" --out-dir "$RUNS/reproduce/${ds}_full" --results "$OUT/RESULTS.md" \
    "${extra[@]}" 2>&1 | tee -a "$LOG"
  check "$ds"
  cp "$RUNS/reproduce/${ds}_full/reproduce.json" "$OUT/reproduce_${ds}.json" 2>/dev/null
done
if [ -f "$OUT/RESULTS.md" ]; then cat "$OUT/RESULTS.md"; fi
if [ ${#failed[@]} -gt 0 ]; then
  say "done; failed: ${failed[*]}"
  exit 1
fi
say "done"
