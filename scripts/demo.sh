#!/usr/bin/env bash
# The main job on a small real default: ULMFiT's three stages on TREC-6 (2-core CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ulmfit run configs/demo_trec.toml "$@"
