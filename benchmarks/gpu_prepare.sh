#!/usr/bin/env bash
# Run HERE (the dev machine, with PyPI) before a device call: stages what the offline GPU
# machine needs for the PHASES of benchmarks/gpu_check.sh in git-ignored folders that the
# call carries (64 MiB a call, the repository included):
#   .devdata/  the shared datasets those phases read
#   .whl/      cp312 wheels the GPU image lacks: fastai's (speed: its Learner is timed side
#              by side; never a project dependency) and fastText's (the baseline rows)
# Then: run(command="PHASES='...' bash benchmarks/gpu_check.sh", carry=[".devdata", ".whl"]).
#
#   PHASES="tests speed"                     # issue 5: ~4 MiB
#   DEVDATA=.devdata2 PHASES="pretrain trec6"  # stage 1 on the Wikipedia subset: ~58 MiB
#   DEVDATA=.devdata3 PHASES="imdb"          # a later call on the same warm machine: ~40 MiB
# (all four phases in one folder come to ~63 MiB: too close to the limit to carry)
# DEVDATA (default .devdata) names the folder, so that two calls' data can be staged before
# the first: the machine goes back 30 s after a call. Then DATA=<that folder> for gpu_check.
# NO_WHEELS=1 stages the data only (the tests check the staging without PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${ULMFIT_DATA:-../shared/data}
PHASES=${PHASES:-"tests speed"}
D=${DEVDATA:-.devdata}
has() { [[ " $PHASES " == *" $1 "* ]]; }
rm -rf "$D"  # .whl only grows: a second staging keeps the first one's wheels
mkdir -p "$D/wikitext" "$D/imdb" .whl  # .whl is carried with every call, empty or not
cp -r "$SHARED/wikitext/wikitext-103" "$D/wikitext/"
if has tests; then  # benchmarks/parity.py in bf16
  mkdir -p "$D/wikitext/wikitext-2"
  cp "$SHARED"/wikitext/wikitext-2/wiki.{valid,test}.tokens.xz "$D/wikitext/wikitext-2/"
fi
if has imdb; then
  cp "$SHARED"/imdb/*.csv.xz "$D/imdb/"
elif has speed; then
  # The speed rows read at most 2,048 reviews from each end of the label-sorted test file:
  # keep those (1.4 MB instead of 8.5).
  python3 - "$SHARED/imdb/test.csv.xz" "$D/imdb/test.csv.xz" <<'EOF'
import csv, lzma, sys
with lzma.open(sys.argv[1], "rt", encoding="utf-8", newline="") as f:
    rows = list(csv.reader(f))
head, body = rows[0], rows[1:]
keep = body if len(body) <= 4096 else body[:2048] + body[-2048:]
with lzma.open(sys.argv[2], "wt", encoding="utf-8", newline="") as f:
    csv.writer(f).writerows([head, *keep])
EOF
fi
if has pretrain; then
  cp -r "$SHARED/wikipedia_en_2015_subset" "$D/"
fi
if has trec6; then
  cp -r "$SHARED/trec" "$D/"
fi
wheels() {
  [ "${NO_WHEELS:-0}" = 1 ] && return 0
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl "$@"
}
if has speed; then
  wheels fastai==2.8.12 fastcore fastdownload fasttransform fastprogress==1.0.5 \
    "plum-dispatch<2.10" beartype
fi
if has trec6 || has imdb; then
  wheels "fasttext-numpy2-wheel>=0.9"
fi
du -sh "$D" .whl
total=$(( $(du -sm "$D" | cut -f1) + $(du -sm .whl | cut -f1) + $(git ls-files -z | du -cm --files0-from=- | tail -1 | cut -f1) ))
echo "about ${total} MiB to carry with the repository (limit 64)"
if [ "$total" -gt 63 ]; then
  echo "too close to the limit: split PHASES over two calls" >&2
  exit 1
fi
