"""fastai 2's default tokenisation, reproduced: tokenizer kind ``fastai``.

A language model trained by fastai (its WikiText-103 AWD-LSTM, or one a user trained)
has seen the tokens of fastai's default pipeline: eight string rules in this order,
then spaCy's English tokenizer (``spacy.blank("en")``, the special tokens kept whole),
then spaces inside a token become ``▁``. ulmfit's default ``word`` tokenizer follows the
same ideas with one regular expression instead of spaCy and differs on a few points
(README, "Tokenizers"), so an imported fastai model reads some tokens it never saw. This
kind gives it its own tokens. It needs spaCy: ``pip install 'ulmfit[fastai]'``.

The rules are fastai 2.8's, written here from its documented behaviour: each works on
the whole string, so the case rules see whitespace-separated words (``I`` gets no
``xxmaj``: one letter), repeats are marked from three (``xxrep 3 !``) and ``...``
becomes `` …``.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ulmfit.text.tokenize import (
    BOS,
    EOS,
    SPECIAL_TOKENS,
    TK_MAJ,
    TK_REP,
    TK_UP,
    TK_WREP,
    UNK,
    TokenizerConfig,
    tokenize_many_with,
)

# Plain replacements, in fastai's order (the order matters: "#39;" before "amp;").
_HTML_FIXES = (
    ("#39;", "'"),
    ("amp;", "&"),
    ("#146;", "'"),
    ("nbsp;", " "),
    ("#36;", "$"),
    ("\\n", "\n"),
    ("quot;", "'"),
    ("<br />", "\n"),
    ('\\"', '"'),
    ("<unk>", UNK),
    (" @.@ ", "."),
    (" @-@ ", "-"),
    ("...", " …"),
)
_REP = re.compile(r"(\S)(\1{2,})")
_WREP = re.compile(r"(?:\s|^)(\w+)\s+((?:\1\s+)+)\1(\s|\W|$)")
_SPEC = re.compile(r"([/#\\])")
_SPACES = re.compile(" {2,}")
_ALL_CAPS = re.compile(r"(\s|^)([A-Z]+[^a-z\s]*)(?=(\s|$))")
_MAJ = re.compile(r"(\s|^)([A-Z][^A-Z\s]*)(?=(\s|$))")


def fix_html(text: str) -> str:
    for old, new in _HTML_FIXES:
        text = text.replace(old, new)
    return html.unescape(text)


def replace_rep(text: str) -> str:
    """A character repeated 3+ times: ``!!!`` -> `` xxrep 3 ! ``."""
    return _REP.sub(lambda m: f" {TK_REP} {len(m[2]) + 1} {m[1]} ", text)


def replace_wrep(text: str) -> str:
    """A word repeated 3+ times: ``a a a`` -> `` xxwrep 3 a ``."""
    return _WREP.sub(lambda m: f" {TK_WREP} {len(m[2].split()) + 2} {m[1]} {m[3]}", text)


def spec_add_spaces(text: str) -> str:
    return _SPEC.sub(r" \1 ", text)


def rm_useless_spaces(text: str) -> str:
    return _SPACES.sub(" ", text)


def _case(marker: str) -> Callable[[re.Match[str]], str]:
    def sub(m: re.Match[str]) -> str:
        mark = f"{marker} " if len(m[2]) > 1 else ""  # one letter: no marker
        return f"{m[1]}{mark}{m[2].lower()}"

    return sub


def replace_all_caps(text: str) -> str:
    return _ALL_CAPS.sub(_case(TK_UP), text)


def replace_maj(text: str) -> str:
    return _MAJ.sub(_case(TK_MAJ), text)


#: fastai's ``defaults.text_proc_rules`` before its final ``lowercase``.
RULES: tuple[Callable[[str], str], ...] = (
    fix_html,
    replace_rep,
    replace_wrep,
    spec_add_spaces,
    rm_useless_spaces,
    replace_all_caps,
    replace_maj,
)


class FastaiTokenizer:
    """fastai 2's default word tokenisation (its rules, then spaCy); ``tok(text)``."""

    def __init__(self, config: TokenizerConfig | None = None) -> None:
        self.config = config if config is not None else TokenizerConfig(kind="fastai")
        try:
            import spacy
            from spacy.symbols import ORTH
        except ImportError as e:
            raise RuntimeError(
                "tokenizer kind 'fastai' needs spaCy: pip install 'ulmfit[fastai]'"
            ) from e
        tokenizer: Any = spacy.blank("en").tokenizer  # spacy's Tokenizer, typed loosely
        for special in SPECIAL_TOKENS:  # never split: "xxbos" stays one token
            tokenizer.add_special_case(special, [{ORTH: special}])
        self._spacy = tokenizer

    def __reduce__(self) -> tuple[Any, ...]:  # workers build their own spaCy
        return (type(self), (self.config,))

    def __repr__(self) -> str:
        return f"FastaiTokenizer({self.config!r})"

    def __call__(self, text: str) -> list[str]:
        text = str(text)
        rules = RULES if self.config.lowercase else RULES[:5]
        for rule in rules:
            text = rule(text)
        text = text.lower().strip() if self.config.lowercase else text.strip()
        if self.config.add_bos:
            text = f"{BOS} {text}"
        if self.config.add_eos:
            text = f"{text} {EOS}"
        return [t.text.replace(" ", "▁") for t in self._spacy(text)]

    def tokenize_many(
        self, texts: Iterable[str], n_workers: int = 1, chunk_size: int = 1000
    ) -> Iterator[list[str]]:
        """Tokenise many documents, in order (``n_workers`` > 1: a process pool)."""
        return tokenize_many_with(self, texts, n_workers, chunk_size)
