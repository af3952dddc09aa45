"""The real texts of the fastai tokenizer parity fixture, picked from ``shared/data``:
the first 2,000 IMDb training reviews, the first 500 TREC training questions and the
first 1,000 paragraphs of the Wikipedia subset (its first file)."""

from __future__ import annotations

import csv
import lzma
import os
from pathlib import Path

DATA = Path(
    os.environ.get("ULMFIT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
SOURCES = {"imdb": 2000, "trec": 500, "wikipedia": 1000}


def texts(data: Path, source: str) -> list[str]:
    n = SOURCES[source]
    if source in ("imdb", "trec"):
        enc = "utf-8" if source == "imdb" else "latin-1"
        with lzma.open(data / source / "train.csv.xz", "rt", encoding=enc, newline="") as f:
            return [row["text"] for _, row in zip(range(n), csv.DictReader(f), strict=False)]
    out: list[str] = []
    title_next = False
    with lzma.open(data / "wikipedia_en_2015_subset" / "AA.txt.xz", "rt", encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("<doc "):
                title_next = True
            elif title_next:
                title_next = False  # the article's title line
            elif line and line != "</doc>":
                out.append(line)
                if len(out) == n:
                    break
    return out
