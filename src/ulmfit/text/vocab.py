"""Token <-> id mapping. The special tokens hold ids 0..8, or, after a pretrained
tokenizer's own pieces (GPT-2's byte-level BPE), the last nine ids, so that its ids stay
its own."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np

from ulmfit.checkpoint import atomic_write_text
from ulmfit.text.tokenize import PAD, SPECIAL_TOKENS, UNK

VOCAB_FORMAT = "ulmfit-vocab"
VOCAB_VERSION = 1


def sort_by_count(counts: Mapping[str, int]) -> list[str]:
    """Non-special tokens by descending count, ties alphabetical (deterministic)."""
    special = set(SPECIAL_TOKENS)
    return sorted((t for t in counts if t not in special), key=lambda t: (-counts[t], t))


class Vocab:
    """The list of tokens a model knows (``itos``) and its inverse (``stoi``)."""

    def __init__(self, itos: Sequence[str]) -> None:
        itos = list(itos)
        n_special = len(SPECIAL_TOKENS)
        if itos[:n_special] == SPECIAL_TOKENS:
            self.first_special = 0
        elif len(itos) > n_special and itos[-n_special:] == SPECIAL_TOKENS:
            self.first_special = len(itos) - n_special
        else:
            raise ValueError(
                f"a vocabulary must start (or end) with the special tokens {SPECIAL_TOKENS}, "
                f"got {itos[:n_special]}"
            )
        bad = [t for t in itos if not isinstance(t, str)]
        if bad:
            raise ValueError(f"vocabulary entries must be strings, got {bad[0]!r}")
        self.itos: list[str] = itos
        self.stoi: dict[str, int] = {t: i for i, t in enumerate(itos)}
        if len(self.stoi) != len(itos):
            seen: set[str] = set()
            for t in itos:
                if t in seen:
                    raise ValueError(f"duplicate token in vocabulary: {t!r}")
                seen.add(t)

    def __len__(self) -> int:
        return len(self.itos)

    @property
    def unk_id(self) -> int:
        """The id of ``xxunk``, which every token the vocabulary lacks becomes."""
        return self.first_special + SPECIAL_TOKENS.index(UNK)

    @property
    def pad_id(self) -> int:
        """The id of ``xxpad``."""
        return self.first_special + SPECIAL_TOKENS.index(PAD)

    def __contains__(self, token: object) -> bool:
        return token in self.stoi

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.itos == other.itos

    __hash__ = None  # type: ignore[assignment]  # mutable-looking container

    def __repr__(self) -> str:
        start = len(SPECIAL_TOKENS) if self.first_special == 0 else 0
        return f"Vocab({len(self)} tokens: {self.itos[start : start + 5]}...)"

    def numericalize(self, tokens: Sequence[str]) -> np.ndarray:
        """int32 ids of ``tokens``; unknown tokens get ``xxunk``'s."""
        unk = repeat(self.unk_id)
        return np.fromiter(map(self.stoi.get, tokens, unk), dtype=np.int32, count=len(tokens))

    def textify(self, ids: Iterable[int] | np.ndarray, sep: str = " ") -> str:
        """The tokens of ``ids`` joined by ``sep``."""
        itos = self.itos
        try:
            return sep.join(itos[int(i)] for i in ids)
        except IndexError:
            bad = [int(i) for i in ids if not 0 <= int(i) < len(itos)]
            raise ValueError(f"id {bad[0]} out of range for a vocabulary of {len(itos)}") from None

    @classmethod
    def from_counts(
        cls, counts: Mapping[str, int], max_size: int = 60000, min_freq: int = 2
    ) -> Vocab:
        """Specials, then tokens seen ``min_freq``+ times, most frequent first.

        ``max_size`` includes the specials, which are never dropped; ties are broken
        alphabetically so the same counts always give the same vocabulary.
        """
        if max_size < len(SPECIAL_TOKENS):
            raise ValueError(
                f"max_size must be >= {len(SPECIAL_TOKENS)} (the special tokens), got {max_size}"
            )
        if min_freq < 1:
            raise ValueError(f"min_freq must be >= 1, got {min_freq}")
        kept = {t: c for t, c in counts.items() if c >= min_freq}
        rest = sort_by_count(kept)[: max_size - len(SPECIAL_TOKENS)]
        return cls(SPECIAL_TOKENS + rest)

    def fingerprint(self) -> str:
        """sha256 of the token list: equal fingerprints, same ids."""
        h = hashlib.sha256()
        for t in self.itos:
            h.update(t.encode("utf-8"))
            h.update(b"\0")
        return h.hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {"format": VOCAB_FORMAT, "version": VOCAB_VERSION, "itos": self.itos}

    def save(self, path: Path | str) -> None:
        """JSON file, written atomically."""
        atomic_write_text(Path(path), json.dumps(self.to_dict(), ensure_ascii=False))

    @classmethod
    def load(cls, path: Path | str) -> Vocab:
        """Read a file written by :meth:`save`; a malformed one raises ValueError naming it."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not a vocabulary file (invalid JSON: {e})") from e
        if not isinstance(data, dict) or data.get("format") != VOCAB_FORMAT:
            raise ValueError(f'{path}: not a vocabulary file (no "format": "{VOCAB_FORMAT}")')
        if data.get("version") != VOCAB_VERSION:
            raise ValueError(
                f"{path}: vocabulary format version {data.get('version')!r} is not supported "
                f"(expected {VOCAB_VERSION})"
            )
        itos = data.get("itos")
        if not isinstance(itos, list):
            raise ValueError(f'{path}: vocabulary file has no "itos" list')
        try:
            return cls(itos)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e


__all__ = ["Vocab", "sort_by_count"]
