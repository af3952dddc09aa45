"""Tokenised corpora: streaming (parallel) tokenisation into flat id arrays, cached on disk.

A corpus is stored as one int32 array of token ids (all documents back to back), the
document offsets into it, and the list of token types (``itos``) with their counts.
Ids here index ``itos``, which holds *every* type seen; :meth:`TokenizedCorpus.numericalize`
maps them into a (smaller) model :class:`~ulmfit.text.vocab.Vocab`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ulmfit.checkpoint import atomic_write_text
from ulmfit.text._parallel import chunked, imap_chunks, worker_state
from ulmfit.text.readers import CorpusError
from ulmfit.text.tokenize import SPECIAL_TOKENS, TOKENIZER_VERSION, Tokenizer, TokenizerConfig
from ulmfit.text.vocab import Vocab

log = logging.getLogger(__name__)

# Bump when the cache layout changes (part of every cache key).
CACHE_FORMAT_VERSION = 1
CACHE_FILES = ("ids.npy", "offsets.npy", "itos.json", "counts.npy", "meta.json")
# Chunks are cut at this many characters too, so that long documents (whole Wikipedia
# articles) still spread over the workers and a chunk's memory stays small.
_CHUNK_CHARS = 1 << 22
# Ids are remapped this many at a time (bounded memory for corpora larger than RAM).
_REMAP_BLOCK = 1 << 24


def default_cache_dir() -> Path:
    """``$ULMFIT_CACHE`` or ``~/.cache/ulmfit``."""
    return Path(os.environ.get("ULMFIT_CACHE") or "~/.cache/ulmfit").expanduser()


@dataclass
class TokenizedCorpus:
    """Documents as token ids: document ``i`` is ``ids[offsets[i]:offsets[i + 1]]``."""

    itos: list[str]  # every type seen: specials first, then by count (ties alphabetical)
    counts: np.ndarray  # int64, occurrences of each itos entry
    ids: np.ndarray  # int32 indices into itos (possibly a read-only np.memmap)
    offsets: np.ndarray  # int64, n_docs + 1 entries

    @property
    def n_docs(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_tokens(self) -> int:
        return len(self.ids)

    def doc(self, i: int) -> np.ndarray:
        """Token ids of document ``i`` (negative counts from the end)."""
        n = self.n_docs
        if not -n <= i < n:
            raise IndexError(f"document {i} out of range for a corpus of {n}")
        i %= n
        return self.ids[self.offsets[i] : self.offsets[i + 1]]

    def tokens(self, i: int) -> list[str]:
        """Token strings of document ``i``."""
        return [self.itos[j] for j in self.doc(i)]

    def to_vocab(self, max_size: int = 60000, min_freq: int = 2) -> Vocab:
        """The model vocabulary: same result as ``Vocab.from_counts`` on these counts."""
        n_special = len(SPECIAL_TOKENS)
        if max_size < n_special:
            raise ValueError(f"max_size must be >= {n_special} (the specials), got {max_size}")
        if min_freq < 1:
            raise ValueError(f"min_freq must be >= 1, got {min_freq}")
        # itos is already in from_counts order, so the vocabulary is a prefix of it.
        n_frequent = int(np.count_nonzero(self.counts[n_special:] >= min_freq))
        n_keep = min(n_frequent, max_size - n_special)
        return Vocab(SPECIAL_TOKENS + self.itos[n_special : n_special + n_keep])

    def lookup(self, vocab: Vocab) -> np.ndarray:
        """int32 table: corpus type id -> ``vocab`` id (``xxunk``'s when missing)."""
        unk = vocab.unk_id
        return np.fromiter(
            (vocab.stoi.get(t, unk) for t in self.itos), dtype=np.int32, count=len(self.itos)
        )

    def numericalize(self, vocab: Vocab) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, offsets)`` with ids in ``vocab`` (types it lacks become ``xxunk``)."""
        lut = self.lookup(vocab)
        out = np.empty(len(self.ids), dtype=np.int32)
        for s in range(0, len(self.ids), _REMAP_BLOCK):  # blocks: no corpus-sized temporaries
            out[s : s + _REMAP_BLOCK] = lut[self.ids[s : s + _REMAP_BLOCK]]
        return out, np.array(self.offsets, dtype=np.int64)

    def unigram_perplexity(self, vocab: Vocab) -> float:
        """Perplexity of a unigram model fitted on this corpus in ``vocab``: a baseline."""
        if self.n_tokens == 0:
            raise ValueError("unigram perplexity of an empty corpus")
        per_id = np.bincount(self.lookup(vocab), weights=self.counts, minlength=len(vocab))
        total = per_id.sum()
        c = per_id[per_id > 0]
        return float(np.exp(-(c * np.log(c / total)).sum() / total))


# ---------------------------------------------------------------------------------
# Tokenising
# ---------------------------------------------------------------------------------

_Chunk = tuple[list[str], np.ndarray, np.ndarray, np.ndarray]


def _encode(tok: Tokenizer, texts: list[str]) -> _Chunk:
    """Tokenise a chunk: (local types, local int32 ids, local counts, doc lengths)."""
    tokens: list[str] = []
    lengths = np.empty(len(texts), dtype=np.int64)
    for k, text in enumerate(texts):
        t = tok(text)
        lengths[k] = len(t)
        tokens += t
    local_itos = list(dict.fromkeys(tokens))  # first-seen order, at C speed
    stoi = {t: i for i, t in enumerate(local_itos)}
    ids = np.fromiter(map(stoi.__getitem__, tokens), dtype=np.int32, count=len(tokens))
    counts = np.bincount(ids, minlength=len(local_itos)).astype(np.int64)
    return local_itos, ids, counts, lengths


def _encode_in_worker(texts: list[str]) -> _Chunk:
    return _encode(worker_state(), texts)


def _encoded_chunks(
    texts: Iterable[str], tokenizer: Tokenizer, n_workers: int, chunk_size: int
) -> Iterator[_Chunk]:
    chunks = chunked(texts, chunk_size, _CHUNK_CHARS)
    if n_workers <= 1:
        return (_encode(tokenizer, c) for c in chunks)
    return imap_chunks(_encode_in_worker, chunks, n_workers, tokenizer)


def _frequency_order(itos: list[str], counts: np.ndarray) -> np.ndarray:
    """Permutation putting specials first, then by descending count, ties alphabetical."""
    n_special = len(SPECIAL_TOKENS)
    rest = sorted(range(n_special, len(itos)), key=itos.__getitem__)  # alphabetical
    rest_arr = np.array(rest, dtype=np.int64)
    # A stable sort by count keeps the alphabetical order within equal counts.
    rest_arr = rest_arr[np.argsort(-counts[rest_arr], kind="stable")]
    return np.concatenate([np.arange(n_special, dtype=np.int64), rest_arr])


def _build(
    texts: Iterable[str],
    tokenizer: Tokenizer,
    n_workers: int,
    chunk_size: int,
    work: Path,
    ids_out: Path | None,
    show_progress: bool,
) -> TokenizedCorpus:
    """Tokenise into ``work``; final ids go to the .npy ``ids_out`` (or stay in memory)."""
    stoi: dict[str, int] = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    counts = np.zeros(1 << 16, dtype=np.int64)
    lengths: list[np.ndarray] = []
    n_tokens = 0
    raw_path = work / "ids.raw"
    start = time.perf_counter()
    with (
        raw_path.open("wb") as raw,
        tqdm(unit=" docs", disable=None if show_progress else True, desc="tokenizing") as bar,
    ):
        for local_itos, local_ids, local_counts, doc_lens in _encoded_chunks(
            texts, tokenizer, n_workers, chunk_size
        ):
            # Local ids -> global ids; new types are appended in first-seen order.
            gmap = np.fromiter(
                (stoi.setdefault(t, len(stoi)) for t in local_itos),
                dtype=np.int32,
                count=len(local_itos),
            )
            if len(stoi) > len(counts):
                counts = np.concatenate([counts, np.zeros(max(len(stoi), len(counts)), np.int64)])
            counts[gmap] += local_counts  # gmap has no repeats, so += is exact
            raw.write(gmap[local_ids].tobytes())
            lengths.append(doc_lens)
            n_tokens += len(local_ids)
            bar.update(len(doc_lens))
    n_docs = sum(len(x) for x in lengths)
    if n_docs == 0:
        raise CorpusError("tokenize_corpus: no documents to tokenise")
    itos_seen = list(stoi)  # dicts keep insertion order: position == global id
    counts = counts[: len(itos_seen)]
    order = _frequency_order(itos_seen, counts)
    new_id = np.empty(len(order), dtype=np.int32)
    new_id[order] = np.arange(len(order), dtype=np.int32)

    old_ids = np.memmap(raw_path, dtype=np.int32, mode="r", shape=(n_tokens,)) if n_tokens else None
    ids: np.ndarray
    if ids_out is not None:
        ids = np.lib.format.open_memmap(ids_out, mode="w+", dtype=np.int32, shape=(n_tokens,))
    else:
        ids = np.empty(n_tokens, dtype=np.int32)
    for s in range(0, n_tokens, _REMAP_BLOCK):
        assert old_ids is not None
        ids[s : s + _REMAP_BLOCK] = new_id[old_ids[s : s + _REMAP_BLOCK]]
    if isinstance(ids, np.memmap):
        ids.flush()
    del old_ids
    raw_path.unlink()

    offsets = np.zeros(n_docs + 1, dtype=np.int64)
    np.cumsum(np.concatenate(lengths), out=offsets[1:])
    elapsed = time.perf_counter() - start
    log.info(
        "tokenised %d documents, %d tokens, %d types in %.1fs (%.0f tokens/s, %d workers)",
        n_docs,
        n_tokens,
        len(order),
        elapsed,
        n_tokens / max(elapsed, 1e-9),
        max(n_workers, 1),
    )
    return TokenizedCorpus(
        itos=[itos_seen[i] for i in order], counts=counts[order], ids=ids, offsets=offsets
    )


def _save_rest(corpus: TokenizedCorpus, folder: Path, meta: Mapping[str, Any]) -> None:
    """Everything but ids.npy (written while building)."""
    np.save(folder / "offsets.npy", corpus.offsets)
    np.save(folder / "counts.npy", corpus.counts)
    atomic_write_text(folder / "itos.json", json.dumps(corpus.itos, ensure_ascii=False))
    atomic_write_text(folder / "meta.json", json.dumps(dict(meta), indent=1))


def load_cached_corpus(folder: Path) -> TokenizedCorpus:
    """Load a corpus cache folder (ids memory-mapped); ValueError if it is damaged."""
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        if meta.get("cache_format") != CACHE_FORMAT_VERSION:
            raise ValueError(f"cache format {meta.get('cache_format')!r}")
        itos = json.loads((folder / "itos.json").read_text(encoding="utf-8"))
        counts = np.load(folder / "counts.npy")
        offsets = np.load(folder / "offsets.npy")
        ids = np.load(folder / "ids.npy", mmap_mode="r")
    except (OSError, ValueError, json.JSONDecodeError) as e:
        raise ValueError(f"{folder}: unreadable corpus cache ({e})") from e
    if (
        not isinstance(itos, list)
        or len(counts) != len(itos)
        or itos[: len(SPECIAL_TOKENS)] != SPECIAL_TOKENS
        or ids.dtype != np.int32
        or len(offsets) != meta.get("n_docs", -1) + 1
        or int(offsets[-1]) != len(ids)
    ):
        raise ValueError(f"{folder}: inconsistent corpus cache")
    return TokenizedCorpus(itos=itos, counts=counts, ids=ids, offsets=offsets)


def tokenize_corpus(
    texts: Iterable[str],
    tokenizer: Tokenizer,
    n_workers: int = 1,
    cache_dir: Path | str | None = None,
    cache_key: str | None = None,
    show_progress: bool = False,
    chunk_size: int = 1000,
) -> TokenizedCorpus:
    """Tokenise ``texts`` into a :class:`TokenizedCorpus`, streaming.

    Workers tokenise chunks of documents and send back local ids; this process maps
    them to global ids and appends them to a file, so memory holds a few chunks and
    the vocabulary, not the corpus. With ``cache_dir`` and ``cache_key`` the result is
    stored in ``cache_dir/cache_key/`` (atomically) and later calls load it, ids
    memory-mapped, without tokenising. Output is the same for any ``n_workers``.
    """
    if (cache_dir is None) != (cache_key is None):
        raise ValueError("tokenize_corpus: give both cache_dir and cache_key, or neither")
    if cache_dir is None or cache_key is None:
        work = Path(tempfile.mkdtemp(prefix="ulmfit-tok-"))
        try:
            return _build(texts, tokenizer, n_workers, chunk_size, work, None, show_progress)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    cache_dir = Path(cache_dir)
    final = cache_dir / cache_key
    if final.exists():
        try:
            corpus = load_cached_corpus(final)
            log.info(
                "loaded tokenised corpus from cache %s (%d documents, %d tokens)",
                final,
                corpus.n_docs,
                corpus.n_tokens,
            )
            return corpus
        except ValueError as e:
            log.warning("%s; tokenising again", e)
            shutil.rmtree(final, ignore_errors=True)

    cache_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".tmp-{cache_key}-", dir=cache_dir))
    try:
        corpus = _build(
            texts, tokenizer, n_workers, chunk_size, work, work / "ids.npy", show_progress
        )
        meta = {
            "cache_format": CACHE_FORMAT_VERSION,
            "tokenizer_version": TOKENIZER_VERSION,
            "tokenizer": tokenizer.config.to_dict(),
            "n_docs": corpus.n_docs,
            "n_tokens": corpus.n_tokens,
            "n_types": len(corpus.itos),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        _save_rest(corpus, work, meta)
        del corpus  # drop the memmap on the temporary path before renaming
        try:
            os.rename(work, final)
        except OSError:
            if not final.exists():
                raise
            log.info("%s was written by another process meanwhile; using it", final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("cached tokenised corpus in %s", final)
    return load_cached_corpus(final)


# ---------------------------------------------------------------------------------
# Cache keys
# ---------------------------------------------------------------------------------


def _file_stats(path: Path) -> list[Any]:
    try:
        rp = path.resolve()
        if rp.is_dir():
            files = sorted(p for p in rp.rglob("*") if p.is_file())
            return [
                str(rp),
                [[p.relative_to(rp).as_posix(), *_size_mtime(p)] for p in files],
            ]
        return [str(rp), *_size_mtime(rp)]
    except FileNotFoundError as e:
        raise CorpusError(f"{path}: no such file or folder") from e


def _size_mtime(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def corpus_cache_key(
    paths: Sequence[Path | str],
    reader_options: Mapping[str, Any],
    tokenizer_config: TokenizerConfig,
    extra: str = "",
) -> str:
    """sha256 (hex) of what decides the tokenised corpus.

    Covers each input's resolved path, size and mtime (every file of a folder), the
    reader options, the tokenizer config and code version, the cache layout version
    and ``extra`` (e.g. a SentencePiece model hash). Editing a file changes the key.
    """
    parts = {
        "cache_format": CACHE_FORMAT_VERSION,
        "tokenizer_version": TOKENIZER_VERSION,
        "files": [_file_stats(Path(p)) for p in paths],
        "reader": dict(reader_options),
        "tokenizer": tokenizer_config.to_dict(),
        "extra": extra,
    }
    blob = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


__all__ = [
    "CACHE_FORMAT_VERSION",
    "TokenizedCorpus",
    "corpus_cache_key",
    "default_cache_dir",
    "load_cached_corpus",
    "tokenize_corpus",
]
