"""SentencePiece (subword) tokenisation on top of the same text rules as the word tokenizer."""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import sentencepiece as spm

from ulmfit.text.readers import CorpusError
from ulmfit.text.tokenize import (
    BOS,
    EOS,
    PAD,
    SPECIAL_TOKENS,
    UNK,
    TokenizerConfig,
    _case_rules,
    apply_pre_rules,
    split_words,
    tokenize_many_with,
)

log = logging.getLogger(__name__)

SPM_SPACE = "\u2581"  # SentencePiece's word-boundary mark
# Longest line handed to the trainer; SentencePiece silently drops longer "sentences".
_MAX_LINE_CHARS = 4000
_MAX_SENTENCE_BYTES = 4 * _MAX_LINE_CHARS  # worst case: 4 UTF-8 bytes a character
# At most this many lines are loaded by the trainer (randomly sampled by SentencePiece);
# its memory grows with the sample, not with the corpus.
_MAX_TRAIN_LINES = 5_000_000
_TOO_HIGH_RE = re.compile(r"value <= (\d+)")
_SPECIAL_SET = frozenset(SPECIAL_TOKENS)


def _prepare_line(line: str, lowercase: bool) -> str:
    """Rule-processed words of one (pre-ruled) line, space-joined: what SentencePiece sees."""
    words = split_words(line)
    if lowercase:
        words = _case_rules(words)
    return " ".join(words)


def _training_lines(text: str, lowercase: bool) -> Iterator[str]:
    """The lines of one document as the trainer should see them, none too long."""
    for raw in apply_pre_rules(text).split("\n"):
        line = _prepare_line(raw, lowercase)
        while len(line) > _MAX_LINE_CHARS:
            cut = line.rfind(" ", 0, _MAX_LINE_CHARS)
            if cut <= 0:
                cut = _MAX_LINE_CHARS
            yield line[:cut]
            line = line[cut:].lstrip(" ")
        if line:
            yield line


def _trainer_args(tmp: Path, corpus: Path, config: TokenizerConfig) -> dict[str, Any]:
    return {
        "input": str(corpus),
        "model_prefix": str(tmp / "spm"),
        "vocab_size": config.spm_vocab_size,
        "model_type": config.spm_model_type,
        "character_coverage": config.spm_character_coverage,
        "unk_id": 0,
        "pad_id": 1,
        "bos_id": -1,
        "eos_id": -1,
        "unk_piece": UNK,
        "pad_piece": PAD,
        # The other specials in SPECIAL_TOKENS order: they get ids 2..8 and stay whole.
        "user_defined_symbols": SPECIAL_TOKENS[2:],
        "input_sentence_size": _MAX_TRAIN_LINES,
        "shuffle_input_sentence": True,
        "max_sentence_length": _MAX_SENTENCE_BYTES,
        "num_threads": os.cpu_count() or 1,
        "minloglevel": 2,  # SentencePiece's own progress output is very chatty
    }


def _train(args: dict[str, Any]) -> None:
    """Train, falling back to a soft or smaller vocabulary if the corpus is too small."""
    try:
        spm.SentencePieceTrainer.train(**args)
        return
    except RuntimeError as e:
        if "Vocabulary size too high" not in str(e):
            raise
        m = _TOO_HIGH_RE.search(str(e))
        limit = int(m.group(1)) if m else None
    log.warning(
        "SentencePiece: corpus too small for vocab_size=%d (at most %s); retrying with "
        "hard_vocab_limit=False",
        args["vocab_size"],
        limit,
    )
    try:
        spm.SentencePieceTrainer.train(**args, hard_vocab_limit=False)
        return
    except RuntimeError as e:
        if limit is None or "Vocabulary size too high" not in str(e):
            raise
    log.warning("SentencePiece: retrying with vocab_size=%d", limit)
    spm.SentencePieceTrainer.train(**{**args, "vocab_size": limit})


def train_sentencepiece(texts: Iterable[str], out_prefix: Path, config: TokenizerConfig) -> Path:
    """Train a SentencePiece model on ``texts``; returns ``<out_prefix>.model``.

    The texts go through the same rules as :class:`WordTokenizer` (so ``xxmaj`` and
    ``xxup`` are tokens), only the first ``config.spm_sample_docs`` documents are used,
    and the model is written atomically (trained in a temporary folder, then renamed).
    """
    out_prefix = Path(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    model_path = Path(f"{out_prefix}.model")
    tmp = Path(tempfile.mkdtemp(prefix=".spm-tmp-", dir=out_prefix.parent))
    try:
        corpus = tmp / "corpus.txt"
        n_docs = n_lines = 0
        with corpus.open("w", encoding="utf-8") as f:
            for text in texts:
                if n_docs >= config.spm_sample_docs:
                    log.info("SentencePiece: using the first %d documents", n_docs)
                    break
                n_docs += 1
                for line in _training_lines(text, config.lowercase):
                    f.write(line)
                    f.write("\n")
                    n_lines += 1
        if n_lines == 0:
            raise CorpusError(f"{out_prefix}: no text to train SentencePiece on")
        log.info(
            "training SentencePiece (%s, vocab %d) on %d documents, %d lines",
            config.spm_model_type,
            config.spm_vocab_size,
            n_docs,
            n_lines,
        )
        _train(_trainer_args(tmp, corpus, config))
        # .model last: its presence means the pair is complete.
        os.replace(tmp / "spm.vocab", f"{out_prefix}.vocab")
        os.replace(tmp / "spm.model", model_path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("SentencePiece model written to %s", model_path)
    return model_path


class SentencePieceTokenizer:
    """Rules, then SentencePiece pieces; ``tok(text)`` starts with ``xxbos``."""

    def __init__(self, config: TokenizerConfig, model_path: Path | str) -> None:
        if config.kind != "spm":
            raise ValueError(f"SentencePieceTokenizer needs kind='spm', got {config.kind!r}")
        self.config = config
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise FileNotFoundError(f"{self.model_path}: SentencePiece model not found")
        self._sp = spm.SentencePieceProcessor(model_file=str(self.model_path))
        head = [self._sp.id_to_piece(i) for i in range(min(len(SPECIAL_TOKENS), len(self)))]
        if head != SPECIAL_TOKENS:
            raise ValueError(
                f"{self.model_path}: the first pieces are {head}, expected {SPECIAL_TOKENS} "
                "(train it with train_sentencepiece)"
            )
        self._head = [BOS] if config.add_bos else []
        self._tail = [EOS] if config.add_eos else []

    def __reduce__(self) -> tuple[Any, ...]:
        # The processor itself cannot be pickled; workers reload it from the file.
        return (type(self), (self.config, self.model_path))

    def __repr__(self) -> str:
        return f"SentencePieceTokenizer({self.model_path}, {self.config!r})"

    def __len__(self) -> int:
        return int(self._sp.get_piece_size())

    def itos(self) -> list[str]:
        """All pieces by id (the vocabulary)."""
        return [self._sp.id_to_piece(i) for i in range(len(self))]

    def __call__(self, text: str) -> list[str]:
        line = _prepare_line(apply_pre_rules(text), self.config.lowercase)
        pieces: list[str] = self._sp.encode(line, out_type=str)
        # "xxmaj word" encodes as "▁", "xxmaj", "▁word": the lone "▁" carries nothing.
        n = len(pieces)
        keep = [
            p
            for i, p in enumerate(pieces)
            if p != SPM_SPACE or i + 1 >= n or pieces[i + 1] not in _SPECIAL_SET
        ]
        return self._head + keep + self._tail

    def tokenize_many(
        self, texts: Iterable[str], n_workers: int = 1, chunk_size: int = 1000
    ) -> Iterator[list[str]]:
        """Tokenise many documents, in order (``n_workers`` > 1: a process pool)."""
        return tokenize_many_with(self, texts, n_workers, chunk_size)


__all__ = ["SentencePieceTokenizer", "train_sentencepiece"]
