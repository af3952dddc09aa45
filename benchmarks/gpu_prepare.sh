#!/usr/bin/env bash
# Run HERE (the dev machine, with PyPI) before a device call: stages what the offline GPU
# machine needs in git-ignored folders that the call carries.
#   .devdata/  the shared datasets the GPU rows read (IMDb test, Wikipedia subset, WikiText)
#   .whl/      fastai and the few dependencies the GPU image lacks (cp312 wheels), so that
#              fastai's Learner is timed side by side; fastai is never a project dependency.
# Then: run(command="bash benchmarks/gpu_check.sh", carry=[".devdata", ".whl"]).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${ULMFIT_DATA:-../shared/data}
mkdir -p .devdata/imdb .devdata/wikitext .whl
cp "$SHARED/imdb/test.csv.xz" .devdata/imdb/
cp -r "$SHARED/wikitext/wikitext-103" .devdata/wikitext/
if [ "${WITH_WIKI:-0}" = 1 ]; then
  # Pretraining (benchmarks/pretrain.py): 51 MB more. With IMDb, the wheels and the repo
  # that is about 62 MiB of the 64 MiB a call carries; a pretraining call needs neither
  # IMDb nor the wheels, so carry only .devdata and remove .devdata/imdb if it is tight.
  cp -r "$SHARED/wikipedia_en_2015_subset" .devdata/
fi
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl \
  fastai==2.8.12 fastcore fastdownload fasttransform fastprogress==1.0.5 \
  "plum-dispatch<2.10" beartype
du -sh .devdata .whl
