"""Tokenizer kind ``fastai`` against fastai 2.8's own output on real text.

The fixture (``tests/fixtures/fastai_tokens.jsonl.xz``) was written by fastai 2.8.12 with
spaCy (``tests/fixtures/make_fastai_tokens.py``); the texts come from ``shared/data``.
"""

from __future__ import annotations

import json
import lzma
from pathlib import Path

import pytest

from fastai_texts import DATA, SOURCES, texts  # type: ignore[import-not-found]
from ulmfit.text.tokenize import TokenizerConfig, get_tokenizer

pytest.importorskip("spacy")
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "fastai_tokens.jsonl.xz"


def fastai_tokens() -> dict[str, list[list[str]]]:
    out: dict[str, list[list[str]]] = {s: [] for s in SOURCES}
    with lzma.open(FIXTURE, "rt", encoding="utf-8") as f:
        header = json.loads(next(f))
        assert header["fastai"].startswith("2.8")
        for line in f:
            row = json.loads(line)
            assert row["i"] == len(out[row["source"]])
            out[row["source"]].append(row["tokens"])
    return out


@pytest.mark.skipif(not (DATA / "imdb").is_dir(), reason="needs shared/data")
def test_fastai_mode_matches_fastai_on_real_text(capsys: pytest.CaptureFixture[str]) -> None:
    expected = fastai_tokens()
    tok = get_tokenizer(TokenizerConfig(kind="fastai"))
    rates = {}
    for source, n in SOURCES.items():
        docs = texts(DATA, source)
        assert len(docs) == len(expected[source]) == n
        same = sum(tok(d) == e for d, e in zip(docs, expected[source], strict=True))
        rates[source] = same / n
    with capsys.disabled():
        print("\nfastai mode, documents tokenised exactly as fastai 2.8 does:", end=" ")
        print(", ".join(f"{s} {r:.2%}" for s, r in rates.items()))
    assert all(r >= 0.999 for r in rates.values()), rates


def test_fastai_rules_in_their_order() -> None:
    tok = get_tokenizer(TokenizerConfig(kind="fastai"))
    got = tok("I LOVE it!!! so so so good... <br />It's THE best, can't wait")
    # What fastai 2.8.12 gives for this text: one-letter "I" unmarked, repeats from 3,
    # "..." -> "…", <br /> -> a newline token, spaCy's "ca n't".
    assert got == [
        "xxbos", "i", "xxup", "love", "it", "xxrep", "3", "!", "xxwrep", "3", "so", "good",
        "…", "\n", "xxmaj", "it", "'s", "xxup", "the", "best", ",", "ca", "n't", "wait",
    ]  # fmt: skip
    # The special tokens stay whole, and the kind is saved with a model like any other.
    assert tok("xxbos xxmaj") == ["xxbos", "xxbos", "xxmaj"]
    assert TokenizerConfig.from_dict(TokenizerConfig(kind="fastai").to_dict()).kind == "fastai"
