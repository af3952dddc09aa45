"""Word tokenisation with the ULMFiT (fastai-style) text rules, without spaCy.

A document goes through the *pre rules* (on the raw string: HTML clean-up, repeated
characters and words), then a single compiled regular expression splits it into
words, numbers, contractions and punctuation, then the *post rules* mark capitals
(``xxup`` / ``xxmaj``) and lowercase everything. ``xxbos`` starts each document.
"""

from __future__ import annotations

import dataclasses
import html
import logging
import operator
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import compress, count
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from ulmfit.text._parallel import chunked, imap_chunks, worker_state

log = logging.getLogger(__name__)

# Bump whenever a rule or the splitter changes what tokens come out: it is part of
# the corpus cache key, so stale tokenised corpora are not reused.
TOKENIZER_VERSION = "1"

UNK, PAD, BOS, EOS, FLD = "xxunk", "xxpad", "xxbos", "xxeos", "xxfld"
TK_REP, TK_WREP, TK_UP, TK_MAJ = "xxrep", "xxwrep", "xxup", "xxmaj"
# The order fixes the ids: xxunk is 0, xxpad is 1, ... (vocabularies start with these).
SPECIAL_TOKENS: list[str] = [UNK, PAD, BOS, EOS, FLD, TK_REP, TK_WREP, TK_UP, TK_MAJ]
UNK_ID, PAD_ID = 0, 1

# ---------------------------------------------------------------------------------
# Pre rules: str -> str
# ---------------------------------------------------------------------------------

_BR_RE = re.compile(r"<\s*br\s*/?\s*>", re.IGNORECASE)
# WikiText splits numbers and hyphenated words with " @-@ ", " @,@ ", " @.@ ".
_WT_AT_RE = re.compile(r"[ \t]?@([-.,])@[ \t]?")
# Entities whose "&" was lost upstream (IMDb, AG News: "#39;", "quot;", "amp;").
# Only the common ones, so that text such as "issue #12;" is left alone.
# Each branch starts with a literal and checks "not after &" one character in: the engine
# then jumps between candidate first characters instead of trying the lookbehind at
# every position (about 4x faster on Wikipedia articles than a leading (?<!&)).
_BARE_ENTITY_RE = re.compile(
    r"(#(?<!&#)(?:39|146|36|34|38|150|151|8211|8212|8216|8217|8220|8221);"
    r"|q(?<!&q)uot;|a(?<!&a)mp;|n(?<!&n)bsp;)"
)
# Spelled out (\1\1\1+ rather than \1{3,}) because sre runs it noticeably faster.
_REP_RE = re.compile(r"(\S)\1\1\1+")
_WREP_RE = re.compile(r"\b(\w+)\b(?:\s+\1\b){3,}", re.IGNORECASE)
_SPEC_RE = re.compile(r"([/#\\])")
_SPACES_RE = re.compile(r" {2,}")


def fix_html(text: str) -> str:
    """Undo HTML and WikiText escapes; ``<br />`` becomes a newline, ``<unk>`` ``xxunk``."""
    if "<" in text:
        text = _BR_RE.sub("\n", text).replace("<unk>", UNK)
    if "\\" in text:
        text = text.replace("\\n", "\n").replace('\\"', '"')
    if "@" in text:
        text = _WT_AT_RE.sub(r"\1", text)
    if ";" in text:
        text = _BARE_ENTITY_RE.sub(r"&\1", text)
    return html.unescape(text)  # returns at once when there is no "&"


def _rep_sub(m: re.Match[str]) -> str:
    c = m.group(1)
    if c.isdigit():  # keep numbers such as 100000 whole
        return m.group(0)
    return f" {TK_REP} {len(m.group(0))} {c} "


def replace_rep(text: str) -> str:
    """A character repeated 4+ times: ``!!!!`` -> `` xxrep 4 ! ``.

    Digits and whitespace are left alone so that numbers such as ``100000`` stay whole.
    """
    return _REP_RE.sub(_rep_sub, text)


def _wrep_sub(m: re.Match[str]) -> str:
    return f" {TK_WREP} {len(m.group(0).split())} {m.group(1)} "


def _may_have_wrep(text: str) -> bool:
    """False only if ``text`` surely has no match of ``_WREP_RE`` (a cheap pre-check).

    In a match ``w w w w`` the 2nd and 3rd occurrences are whole whitespace-separated
    chunks, the 1st ends the chunk before them and the 4th starts the chunk after. Equal
    neighbours are found in C (map/compress); only those few are looked at in Python.
    """
    words = text.lower().split()
    for i in compress(count(), map(operator.eq, words, words[1:])):
        w = words[i]
        if 0 < i < len(words) - 2 and words[i - 1].endswith(w) and words[i + 2].startswith(w):
            return True
    return False


def replace_wrep(text: str) -> str:
    """A word repeated 4+ times in a row (case-insensitively) -> `` xxwrep n word ``."""
    # The regex is slow to fail on every word: run it only where a repeat may be.
    if not _may_have_wrep(text):
        return text
    return _WREP_RE.sub(_wrep_sub, text)


def spec_add_spaces(text: str) -> str:
    """Spaces around ``/``, ``#`` and ``\\`` so they split from the words they touch."""
    return _SPEC_RE.sub(r" \1 ", text)


def rm_useless_spaces(text: str) -> str:
    """Collapse runs of spaces into one."""
    return _SPACES_RE.sub(" ", text)


PRE_RULES: list[Callable[[str], str]] = [
    fix_html,
    replace_rep,
    replace_wrep,
    spec_add_spaces,
    rm_useless_spaces,
]


def apply_pre_rules(text: str) -> str:
    """All pre rules, in order."""
    for rule in PRE_RULES:
        text = rule(text)
    return text


# ---------------------------------------------------------------------------------
# Post rules: list[str] -> list[str]
# ---------------------------------------------------------------------------------


def replace_all_caps(tokens: list[str]) -> list[str]:
    """``GREAT`` -> ``xxup great`` (tokens longer than one character, all upper case)."""
    out: list[str] = []
    for t in tokens:
        if len(t) > 1 and t.isupper():
            out.append(TK_UP)
            out.append(t.lower())
        else:
            out.append(t)
    return out


def replace_maj(tokens: list[str]) -> list[str]:
    """``Hello`` -> ``xxmaj hello``: a token whose first character is upper case.

    A lone capital (``I``, ``A``) is marked too, so the case can be restored.
    """
    out: list[str] = []
    for t in tokens:
        if t[:1].isupper():
            out.append(TK_MAJ)
            out.append(t.lower())
        else:
            out.append(t)
    return out


def lowercase(tokens: list[str]) -> list[str]:
    """Every token in lower case."""
    return [t.lower() for t in tokens]


POST_RULES: list[Callable[[list[str]], list[str]]] = [replace_all_caps, replace_maj, lowercase]


def _case_rules(tokens: list[str]) -> list[str]:
    """``replace_all_caps``, ``replace_maj`` and ``lowercase`` fused, for speed.

    Lowercasing is done once on the joined string, in C (tokens never contain spaces:
    the splitter drops whitespace). Only the few tokens that lowercasing changed need
    a look in Python; the runs between them are copied as slices.
    """
    if not tokens:
        return tokens
    low = " ".join(tokens).lower().split(" ")
    changed = [i for i, t, lt in zip(range(len(tokens)), tokens, low, strict=True) if t != lt]
    if not changed:
        return low
    out: list[str] = []
    prev = 0
    for i in changed:
        out += low[prev:i]
        t = tokens[i]
        if len(t) > 1 and t.isupper():
            out.append(TK_UP)
        elif t[0].isupper():
            out.append(TK_MAJ)
        prev = i
    out += low[prev:]
    return out


# ---------------------------------------------------------------------------------
# Base splitter
# ---------------------------------------------------------------------------------

_URL = r"(?:https?://|www\.)[^\s<>\"'()\[\]{}]*[^\s<>\"'()\[\]{}.,;:!?]"
_EMAIL = r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"
_BODY = "|".join(
    [
        r"(?:[^\W\d_]\.){2,}",  # abbreviations: U.S., e.g.
        r"\d+(?:[.,]\d+)+",  # 3.5, 1,000, 10.000.000
        r"[nN]['’][tT](?!\w)",  # n't (the word before it was split off by _NT_RE)
        r"['’](?:[sSmMdD]|ll|LL|re|RE|ve|VE)(?!\w)",  # 's 'm 'd 'll 're 've
        r"\w+",
        r"\.\.\.",
        r"\S",  # any other character is a token of its own
    ]
)
# Most tokens are plain words followed by a space; trying that branch first (and only
# taking it when no other branch could start a longer token here) makes the whole
# split about 1.5x faster than the same alternation in its natural order.
_PLAIN_WORD = r"\w+(?![\w.,'’@:/])"
# The leading \s* (outside the one group, which is what findall returns) eats the
# whitespace before a token in one step; without it the engine tried, and failed, every
# branch at every space. Same tokens, about 1.4x faster.
_TOKEN_RE = re.compile(rf"\s*({_PLAIN_WORD}|{_URL}|{_BODY})")
# The e-mail branch backtracks over every word, so it is only used when "@" is present.
_TOKEN_EMAIL_RE = re.compile(rf"\s*({_URL}|{_EMAIL}|{_BODY})")
# "don't" -> "do n't", "can't" -> "ca n't" (spaCy's split): detach "n't" before splitting.
_NT_RE = re.compile(r"([nN]['’][tT])(?!\w)")


def split_words(text: str) -> list[str]:
    """Split on whitespace and punctuation; numbers, URLs and contractions as spaCy does."""
    if "'" in text or "’" in text:
        text = _NT_RE.sub(r" \1", text)
    # rstrip: trailing whitespace would make the leading \s* retry (and fail) from every
    # one of its positions, quadratic in the run's length.
    return (_TOKEN_EMAIL_RE if "@" in text else _TOKEN_RE).findall(text.rstrip())


# ---------------------------------------------------------------------------------
# Config, tokenizer protocol
# ---------------------------------------------------------------------------------

TokenizerKind = Literal["word", "spm", "bytebpe", "fastai"]
_SPM_MODEL_TYPES = ("unigram", "bpe", "char", "word")


@dataclass(frozen=True)
class TokenizerConfig:
    """How text becomes tokens; saved with every model."""

    kind: TokenizerKind = "word"  # word: rules + regex; spm; bytebpe: GPT-2's; fastai: spaCy's
    lowercase: bool = True  # mark capitals with xxup/xxmaj and lowercase
    add_bos: bool = True  # start each document with xxbos
    add_eos: bool = False  # end each document with xxeos
    spm_vocab_size: int = 15000  # SentencePiece vocabulary size (specials included)
    spm_model_type: str = "unigram"  # unigram | bpe | char | word
    spm_character_coverage: float = 0.9999  # share of characters the model must cover
    spm_sample_docs: int = 200_000  # SentencePiece trains on at most this many documents

    def __post_init__(self) -> None:
        if self.kind not in ("word", "spm", "bytebpe", "fastai"):
            raise ValueError(
                "TokenizerConfig.kind must be 'word', 'spm', 'bytebpe' or 'fastai', "
                f"got {self.kind!r}"
            )
        for name in ("lowercase", "add_bos", "add_eos"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"TokenizerConfig.{name} must be a bool")
        if not isinstance(self.spm_vocab_size, int) or self.spm_vocab_size <= len(SPECIAL_TOKENS):
            raise ValueError(
                f"TokenizerConfig.spm_vocab_size must be an int > {len(SPECIAL_TOKENS)}, "
                f"got {self.spm_vocab_size!r}"
            )
        if self.spm_model_type not in _SPM_MODEL_TYPES:
            raise ValueError(
                f"TokenizerConfig.spm_model_type must be one of {_SPM_MODEL_TYPES}, "
                f"got {self.spm_model_type!r}"
            )
        if not 0.0 < self.spm_character_coverage <= 1.0:
            raise ValueError(
                "TokenizerConfig.spm_character_coverage must be in (0, 1], "
                f"got {self.spm_character_coverage!r}"
            )
        if not isinstance(self.spm_sample_docs, int) or self.spm_sample_docs < 1:
            raise ValueError(
                f"TokenizerConfig.spm_sample_docs must be an int >= 1, got {self.spm_sample_docs!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TokenizerConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"TokenizerConfig: unknown field(s) {unknown}; known: {sorted(names)}")
        return cls(**dict(data))


@runtime_checkable
class Tokenizer(Protocol):
    """What the rest of the library needs from a tokeniser."""

    config: TokenizerConfig

    def __call__(self, text: str) -> list[str]: ...

    def tokenize_many(
        self, texts: Iterable[str], n_workers: int = 1, chunk_size: int = 1000
    ) -> Iterator[list[str]]: ...


def _tokenize_chunk(texts: list[str]) -> list[list[str]]:
    """Worker: tokenise a chunk with the tokenizer sent at pool start."""
    tok = worker_state()
    return [tok(t) for t in texts]


def tokenize_many_with(
    tok: Tokenizer, texts: Iterable[str], n_workers: int = 1, chunk_size: int = 1000
) -> Iterator[list[str]]:
    """Shared ``tokenize_many``: in order, in ``n_workers`` processes if > 1."""
    if n_workers <= 1:
        for t in texts:
            yield tok(t)
        return
    for chunk in imap_chunks(_tokenize_chunk, chunked(texts, chunk_size), n_workers, tok):
        yield from chunk


class WordTokenizer:
    """Rules + regex word splitter; ``tok(text)`` gives one document's tokens."""

    def __init__(self, config: TokenizerConfig | None = None) -> None:
        self.config = config if config is not None else TokenizerConfig()
        self._head = [BOS] if self.config.add_bos else []
        self._tail = [EOS] if self.config.add_eos else []

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.config,))

    def __repr__(self) -> str:
        return f"WordTokenizer({self.config!r})"

    def __call__(self, text: str) -> list[str]:
        # spec_add_spaces and rm_useless_spaces only move spaces, which the regex
        # splitter ignores anyway ("/" and "#" are tokens of their own), so skip them.
        text = replace_wrep(replace_rep(fix_html(text)))
        tokens = split_words(text)
        if self.config.lowercase:
            tokens = _case_rules(tokens)
        return self._head + tokens + self._tail

    def tokenize_many(
        self, texts: Iterable[str], n_workers: int = 1, chunk_size: int = 1000
    ) -> Iterator[list[str]]:
        """Tokenise many documents, in order (``n_workers`` > 1: a process pool)."""
        return tokenize_many_with(self, texts, n_workers, chunk_size)


def get_tokenizer(config: TokenizerConfig, spm_model: Path | str | None = None) -> Tokenizer:
    """The tokenizer ``config`` describes; ``kind="spm"`` needs the trained ``spm_model``."""
    if config.kind == "word":
        return WordTokenizer(config)
    if config.kind == "fastai":
        from ulmfit.text.fastai_compat import FastaiTokenizer

        return FastaiTokenizer(config)
    if config.kind == "bytebpe":
        if spm_model is None:
            raise ValueError("a byte-level BPE tokenizer (kind='bytebpe') needs its tokenizer.json")
        from ulmfit.text.bytebpe import ByteBPETokenizer

        return ByteBPETokenizer(config, Path(spm_model))
    if spm_model is None:
        raise ValueError("a SentencePiece tokenizer (kind='spm') needs the trained model file")
    from ulmfit.text.subword import SentencePieceTokenizer

    return SentencePieceTokenizer(config, Path(spm_model))


__all__ = [
    "BOS",
    "EOS",
    "FLD",
    "PAD",
    "PAD_ID",
    "POST_RULES",
    "PRE_RULES",
    "SPECIAL_TOKENS",
    "TK_MAJ",
    "TK_REP",
    "TK_UP",
    "TK_WREP",
    "TOKENIZER_VERSION",
    "UNK",
    "UNK_ID",
    "Tokenizer",
    "TokenizerConfig",
    "WordTokenizer",
    "apply_pre_rules",
    "fix_html",
    "get_tokenizer",
    "lowercase",
    "replace_all_caps",
    "replace_maj",
    "replace_rep",
    "replace_wrep",
    "rm_useless_spaces",
    "spec_add_spaces",
    "split_words",
]
