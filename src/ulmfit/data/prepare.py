"""From files to numericalised token streams: read, tokenise (cached), split, numericalise."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ulmfit.text.corpus import TokenizedCorpus, corpus_cache_key, default_cache_dir, tokenize_corpus
from ulmfit.text.readers import CorpusError, read_texts
from ulmfit.text.tokenize import Tokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CorpusConfig:
    """Where the text comes from and how it is read."""

    train: tuple[str, ...] = ()  # files or folders of training text
    valid: tuple[str, ...] = ()  # held-out text for validation perplexity
    fmt: str | None = None  # txt|csv|tsv|jsonl|wikitext|wikiextractor; default: from the suffix
    text_column: tuple[str, ...] = ("text",)  # column(s) or field(s) holding text (csv/tsv/jsonl)
    one_doc_per: str = "line"  # plain text: one document per 'line' or per 'file'
    valid_frac: float = 0.1  # with no valid files: fraction of documents held out (seeded)
    max_docs: int = 0  # read only the first N documents of each train file (0: all; logged)
    n_workers: int = 0  # tokeniser processes; 0: all cores
    cache_dir: str | None = None  # tokenised-corpus cache; default $ULMFIT_CACHE or ~/.cache/ulmfit

    def __post_init__(self) -> None:
        if not 0.0 <= self.valid_frac < 1.0:
            raise ValueError(f"CorpusConfig.valid_frac must be in [0, 1), got {self.valid_frac}")
        if self.one_doc_per not in ("line", "file"):
            raise ValueError(
                f"CorpusConfig.one_doc_per must be 'line' or 'file', got {self.one_doc_per!r}"
            )
        if self.max_docs < 0 or self.n_workers < 0:
            raise ValueError("CorpusConfig.max_docs and n_workers must be >= 0")

    def workers(self) -> int:
        return self.n_workers or (os.cpu_count() or 1)

    def reader_options(self) -> dict[str, Any]:
        return {
            "fmt": self.fmt,
            "text_column": list(self.text_column),
            "one_doc_per": self.one_doc_per,
            "max_docs": self.max_docs,
        }


def iter_texts(paths: Sequence[str | Path], config: CorpusConfig, limit: bool) -> Iterator[str]:
    """Documents of every file in order, honouring ``max_docs`` per file if ``limit``."""
    if not paths:
        raise CorpusError("no input files given")
    for path in paths:
        column = config.text_column[0] if len(config.text_column) == 1 else list(config.text_column)
        texts: Iterator[str] = read_texts(
            path,
            fmt=config.fmt,
            text_column=column,
            one_doc_per=config.one_doc_per,  # type: ignore[arg-type]
        )
        if limit and config.max_docs:
            log.info("%s: reading only the first %d documents (max_docs)", path, config.max_docs)
            texts = itertools.islice(texts, config.max_docs)
        yield from texts


def tokenize_files(
    paths: Sequence[str | Path],
    config: CorpusConfig,
    tokenizer: Tokenizer,
    *,
    limit: bool = True,
    key_extra: str = "",
    show_progress: bool = True,
) -> TokenizedCorpus:
    """Tokenise ``paths`` (or load them from the cache keyed by files and settings)."""
    for p in paths:
        if not Path(p).exists():
            raise CorpusError(f"{p}: no such file or folder")
    options = {**config.reader_options(), "limit": limit}
    key = corpus_cache_key([Path(p) for p in paths], options, tokenizer.config, key_extra)
    cache = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    return tokenize_corpus(
        iter_texts(paths, config, limit),
        tokenizer,
        n_workers=config.workers(),
        cache_dir=cache,
        cache_key=key,
        show_progress=show_progress,
    )


def select_docs(
    ids: np.ndarray, offsets: np.ndarray, docs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The documents ``docs`` (indices, in that order) as a new ``(ids, offsets)`` pair."""
    lengths = (offsets[1:] - offsets[:-1])[docs]
    new_offsets = np.zeros(len(docs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_offsets[1:])
    parts = [ids[offsets[d] : offsets[d + 1]] for d in docs]
    new_ids = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
    return new_ids.astype(np.int32, copy=False), new_offsets


def split_docs(
    ids: np.ndarray, offsets: np.ndarray, valid_frac: float, seed: int
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Hold out a seeded random ``valid_frac`` of the documents (at least one each side)."""
    n_docs = len(offsets) - 1
    if n_docs < 2:
        raise CorpusError("need at least 2 documents to hold out a validation split")
    n_valid = min(n_docs - 1, max(1, round(n_docs * valid_frac)))
    perm = np.random.default_rng(seed).permutation(n_docs)
    valid, train = np.sort(perm[:n_valid]), np.sort(perm[n_valid:])
    return select_docs(ids, offsets, train), select_docs(ids, offsets, valid)


def as_dict(config: CorpusConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)
