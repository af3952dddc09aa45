"""tokenize_corpus: exact output, parallel == serial, the on-disk cache, cache keys."""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from ulmfit.text.corpus import (
    CACHE_FILES,
    TokenizedCorpus,
    corpus_cache_key,
    default_cache_dir,
    tokenize_corpus,
)
from ulmfit.text.readers import CorpusError, read_texts
from ulmfit.text.tokenize import SPECIAL_TOKENS, TokenizerConfig, WordTokenizer
from ulmfit.text.vocab import Vocab

TEXTS = [
    "The cat sat on the mat.",
    "A dog! The dog barked at the cat.",
    "zebra",
    "The end, the END.",
]


class CountingTokenizer(WordTokenizer):
    """A WordTokenizer that counts its calls (in this process)."""

    calls = 0

    def __call__(self, text: str) -> list[str]:
        type(self).calls += 1
        return super().__call__(text)


def test_corpus_arrays_are_exact() -> None:
    tok = WordTokenizer()
    corpus = tokenize_corpus(TEXTS, tok, chunk_size=2)
    docs = [tok(t) for t in TEXTS]
    assert corpus.n_docs == 4
    assert corpus.n_tokens == sum(len(d) for d in docs)
    assert corpus.ids.dtype == np.int32 and corpus.offsets.dtype == np.int64
    assert corpus.offsets.tolist() == np.cumsum([0] + [len(d) for d in docs]).tolist()
    for i, d in enumerate(docs):
        assert corpus.tokens(i) == d
    assert corpus.tokens(-1) == docs[-1]
    with pytest.raises(IndexError):
        corpus.doc(4)
    # itos: specials first (even unseen ones), then by count, ties alphabetical.
    counts = Counter(t for d in docs for t in d)
    assert corpus.itos[:9] == SPECIAL_TOKENS
    rest = corpus.itos[9:]
    assert rest == sorted(rest, key=lambda t: (-counts[t], t))
    assert set(rest) == set(counts) - set(SPECIAL_TOKENS)
    assert corpus.counts.tolist() == [counts[t] for t in corpus.itos]
    assert corpus.itos[9] == "the" and corpus.counts[9] == 6


def test_numericalize_and_vocab() -> None:
    corpus = tokenize_corpus(TEXTS, WordTokenizer())
    vocab = corpus.to_vocab(max_size=60000, min_freq=2)
    assert vocab == Vocab.from_counts(dict(zip(corpus.itos, corpus.counts.tolist(), strict=True)))
    assert corpus.to_vocab(max_size=11, min_freq=1).itos == [*SPECIAL_TOKENS, "the", "."]
    ids, offsets = corpus.numericalize(vocab)
    assert ids.dtype == np.int32
    assert offsets.tolist() == corpus.offsets.tolist()
    words = [corpus.itos[i] for i in corpus.ids]
    # Types the vocabulary lacks (seen once, e.g. "zebra") map to xxunk (0).
    assert [vocab.itos[i] if w in vocab else w for i, w in zip(ids, words, strict=True)] == words
    assert ids[words.index("zebra")] == 0
    assert all((ids[k] == 0) == (w not in vocab) for k, w in enumerate(words))


def test_unigram_perplexity() -> None:
    tok = WordTokenizer(TokenizerConfig(add_bos=False))
    corpus = tokenize_corpus(["a b c d", "a b c d"], tok)
    vocab = corpus.to_vocab(min_freq=1)
    assert corpus.unigram_perplexity(vocab) == pytest.approx(4.0)
    # Everything unknown: one type, perplexity 1.
    assert corpus.unigram_perplexity(Vocab(SPECIAL_TOKENS)) == pytest.approx(1.0)


def test_empty_input_is_an_error() -> None:
    with pytest.raises(CorpusError, match="no documents"):
        tokenize_corpus([], WordTokenizer())


def test_cache_round_trip(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tok = CountingTokenizer()
    CountingTokenizer.calls = 0
    first = tokenize_corpus(TEXTS, tok, cache_dir=tmp_path, cache_key="k1")
    assert CountingTokenizer.calls == len(TEXTS)
    assert sorted(p.name for p in (tmp_path / "k1").iterdir()) == sorted(CACHE_FILES)
    assert [p.name for p in tmp_path.iterdir()] == ["k1"]  # the temp folder is gone
    with caplog.at_level(logging.INFO, logger="ulmfit.text.corpus"):
        second = tokenize_corpus(iter(["never read"]), tok, cache_dir=tmp_path, cache_key="k1")
    assert CountingTokenizer.calls == len(TEXTS)  # nothing tokenised
    assert "from cache" in caplog.text
    assert isinstance(second.ids, np.memmap)
    assert second.itos == first.itos
    for name in ("ids", "offsets", "counts"):
        assert np.array_equal(getattr(second, name), getattr(first, name))
    # Another key tokenises again.
    tokenize_corpus(TEXTS[:1], tok, cache_dir=tmp_path, cache_key="k2")
    assert CountingTokenizer.calls == len(TEXTS) + 1


def test_damaged_cache_is_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tok = WordTokenizer()
    good = tokenize_corpus(TEXTS, tok, cache_dir=tmp_path, cache_key="k")
    (tmp_path / "k" / "offsets.npy").write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING, logger="ulmfit.text.corpus"):
        again = tokenize_corpus(TEXTS, tok, cache_dir=tmp_path, cache_key="k")
    assert "unreadable corpus cache" in caplog.text
    assert np.array_equal(again.ids, good.ids)
    with pytest.raises(ValueError, match="both cache_dir and cache_key"):
        tokenize_corpus(TEXTS, tok, cache_dir=tmp_path)


def test_parallel_equals_serial_on_wikitext(shared_data: Path) -> None:
    path = shared_data / "wikitext" / "wikitext-2" / "wiki.valid.tokens.xz"
    tok = WordTokenizer()
    serial = tokenize_corpus(read_texts(path), tok, chunk_size=7)
    parallel = tokenize_corpus(read_texts(path), tok, n_workers=2, chunk_size=7)
    assert serial.n_docs == parallel.n_docs == 60
    assert serial.itos == parallel.itos
    assert np.array_equal(serial.ids, parallel.ids)
    assert np.array_equal(serial.offsets, parallel.offsets)
    assert np.array_equal(serial.counts, parallel.counts)
    # WikiText markup: "<unk>" became xxunk and no "@-@" / "@" token exists.
    assert "@-@" not in serial.itos and "@" not in serial.itos and "<unk>" not in serial.itos
    assert serial.counts[0] > 5000  # xxunk, from "<unk>"
    assert serial.counts[SPECIAL_TOKENS.index("xxbos")] == 60
    assert serial.tokens(0)[:5] == ["xxbos", "=", "xxmaj", "homarus", "gammarus"]
    assert 200_000 < serial.n_tokens < 260_000


def test_cache_key(tmp_path: Path) -> None:
    f = tmp_path / "a.txt"
    f.write_text("hello\n")
    d = tmp_path / "dir"
    d.mkdir()
    (d / "x.txt").write_text("x")
    cfg = TokenizerConfig()
    opts = {"fmt": None, "text_column": ["text"]}
    key = corpus_cache_key([f, d], opts, cfg)
    assert len(key) == 64 and key == corpus_cache_key([str(f), d], dict(opts), cfg)
    assert key != corpus_cache_key([d, f], opts, cfg)
    assert key != corpus_cache_key([f, d], {**opts, "fmt": "txt"}, cfg)
    assert key != corpus_cache_key([f, d], opts, TokenizerConfig(add_eos=True))
    assert key != corpus_cache_key([f, d], opts, cfg, extra="spm:abc")
    f.write_text("hello, changed\n")
    key2 = corpus_cache_key([f, d], opts, cfg)
    assert key2 != key
    st = (d / "x.txt").stat()
    os.utime(d / "x.txt", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched in a folder
    assert corpus_cache_key([f, d], opts, cfg) != key2
    with pytest.raises(CorpusError, match=r"missing\.txt"):
        corpus_cache_key([tmp_path / "missing.txt"], opts, cfg)


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ULMFIT_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("ULMFIT_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "ulmfit"


def test_corpus_dataclass_fields() -> None:
    c = TokenizedCorpus(
        itos=list(SPECIAL_TOKENS),
        counts=np.zeros(9, np.int64),
        ids=np.array([2, 0], np.int32),
        offsets=np.array([0, 2], np.int64),
    )
    assert (c.n_docs, c.n_tokens) == (1, 2)
    assert c.tokens(0) == ["xxbos", "xxunk"]


def _die(chunk: list[int]) -> list[int]:
    """A worker function that kills its process (spawn imports it from this module)."""
    os._exit(3)


def test_a_dead_worker_is_a_clear_error() -> None:
    from ulmfit.text._parallel import imap_chunks

    # A worker that dies outright (usually an unguarded script re-run by spawn, or the
    # OOM killer) must not surface as a bare BrokenProcessPool.
    with pytest.raises(RuntimeError, match=r"__main__.*n_workers=1"):
        list(imap_chunks(_die, [[1], [2]], 2, None))
