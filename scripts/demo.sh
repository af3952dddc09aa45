#!/usr/bin/env bash
# The main job on a small real default: ULMFiT's three stages on TREC-6 (2-core CPU).
# With fastai's WikiText-103 LM at hand (cached, in $ULMFIT_MODELS, or downloadable:
# 105 MB, checked), stages 2-3 start from it (configs/demo_trec_wt103.toml); otherwise
# stage 1 pretrains a small LM on a Wikipedia slice here (configs/demo_trec.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
if ulmfit lm get wt103-fwd --no-progress; then
  ulmfit run configs/demo_trec_wt103.toml "$@"
else
  echo "demo: wt103-fwd is not available here (no network, no \$ULMFIT_MODELS);" \
    "pretraining a small LM instead" >&2
  ulmfit run configs/demo_trec.toml "$@"
fi
