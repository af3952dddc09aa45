"""GPT-2's byte-level BPE, through the ``tokenizers`` library (the ``bytebpe`` kind).

No rules run first: GPT-2 reads text as it is (case, spaces and all). Its pieces are the
tokens, and they keep GPT-2's own ids: the vocabulary is GPT-2's pieces in its order,
then ulmfit's nine special tokens. A document starts with ``xxbos``, whose embedding an
imported GPT-2 takes from ``<|endoftext|>`` (GPT-2's document separator).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ulmfit.text.tokenize import BOS, EOS, SPECIAL_TOKENS, TokenizerConfig, tokenize_many_with


class ByteBPETokenizer:
    """``tok(text)`` -> ``["xxbos", *GPT-2 pieces]``; ``itos()`` -> the whole vocabulary."""

    def __init__(self, config: TokenizerConfig, path: Path | str) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError as e:  # pragma: no cover - a declared dependency
            raise RuntimeError("the bytebpe tokenizer needs the 'tokenizers' package") from e
        self.config = config
        self.path = Path(path)
        self._tok = Tokenizer.from_file(str(self.path))

    def __getstate__(self) -> dict[str, Any]:  # workers rebuild it from the file
        return {"config": self.config, "path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"], state["path"])  # type: ignore[misc]

    def encode_ids(self, text: str) -> list[int]:
        """GPT-2's own ids for ``text`` (no special tokens added)."""
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def __call__(self, text: str) -> list[str]:
        pieces = self._tok.encode(text, add_special_tokens=False).tokens
        bos = [BOS] if self.config.add_bos else []
        eos = [EOS] if self.config.add_eos else []
        return [*bos, *pieces, *eos]

    def tokenize_many(
        self, texts: Iterable[str], n_workers: int = 1, chunk_size: int = 1000
    ) -> Iterator[list[str]]:
        """Tokenise many documents, in order (``n_workers`` > 1: a process pool)."""
        return tokenize_many_with(self, texts, n_workers, chunk_size)

    def itos(self) -> list[str]:
        """GPT-2's pieces by id (so its ids stay its own), then ulmfit's special tokens."""
        n = self._tok.get_vocab_size(with_added_tokens=True)
        pieces = [self._tok.id_to_token(i) or "" for i in range(n)]
        if "" in pieces:
            raise ValueError(f"{self.path}: its vocabulary has gaps (ids without a token)")
        clash = sorted(set(pieces) & set(SPECIAL_TOKENS))
        if clash:
            raise ValueError(f"{self.path}: its vocabulary holds ulmfit's special tokens {clash}")
        return [*pieces, *SPECIAL_TOKENS]
