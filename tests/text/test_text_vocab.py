"""Vocab: limits, deterministic order, numericalisation, files."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from ulmfit.text.tokenize import SPECIAL_TOKENS
from ulmfit.text.vocab import Vocab

COUNTS = Counter({"the": 10, "cat": 5, "bat": 5, "ant": 5, "dog": 3, "eel": 1, "xxmaj": 7})


def test_from_counts_order_limits_and_ties() -> None:
    v = Vocab.from_counts(COUNTS, max_size=60000, min_freq=2)
    # Specials at 0..8 (xxmaj not moved by its count), then by count, ties alphabetical.
    assert v.itos == [*SPECIAL_TOKENS, "the", "ant", "bat", "cat", "dog"]
    assert [v.stoi[t] for t in SPECIAL_TOKENS] == list(range(9))
    assert "eel" not in v  # below min_freq
    assert Vocab.from_counts(COUNTS, min_freq=1).itos[-1] == "eel"
    small = Vocab.from_counts(COUNTS, max_size=11, min_freq=1)
    assert len(small) == 11 and small.itos[9:] == ["the", "ant"]
    assert Vocab.from_counts(COUNTS, max_size=9).itos == SPECIAL_TOKENS  # specials never dropped
    # Insertion order of the counts does not matter.
    reordered = dict(reversed(list(COUNTS.items())))
    assert Vocab.from_counts(reordered, min_freq=1) == Vocab.from_counts(COUNTS, min_freq=1)


def test_from_counts_bad_limits() -> None:
    with pytest.raises(ValueError, match="max_size"):
        Vocab.from_counts(COUNTS, max_size=5)
    with pytest.raises(ValueError, match="min_freq"):
        Vocab.from_counts(COUNTS, min_freq=0)


def test_constructor_validates() -> None:
    with pytest.raises(ValueError, match="special tokens"):
        Vocab(["the", *SPECIAL_TOKENS[1:], SPECIAL_TOKENS[0]])  # shuffled specials
    with pytest.raises(ValueError, match="special tokens"):
        Vocab(["the", *SPECIAL_TOKENS[:4], "a", *SPECIAL_TOKENS[4:]])  # in the middle
    with pytest.raises(ValueError, match="special tokens"):
        Vocab(SPECIAL_TOKENS[:5])
    with pytest.raises(ValueError, match="duplicate token in vocabulary: 'a'"):
        Vocab([*SPECIAL_TOKENS, "a", "b", "a"])


def test_specials_last_keep_a_pretrained_tokenizers_ids() -> None:
    """GPT-2's layout: its pieces keep their ids, the specials follow them."""
    v = Vocab(["the", "cat", *SPECIAL_TOKENS])
    assert (v.unk_id, v.pad_id) == (2, 3)
    assert v.numericalize(["cat", "the", "dog", "xxbos"]).tolist() == [1, 0, 2, 4]
    assert (Vocab(SPECIAL_TOKENS).unk_id, Vocab(SPECIAL_TOKENS).pad_id) == (0, 1)
    assert "the" in repr(v)


def test_numericalize_and_textify() -> None:
    v = Vocab([*SPECIAL_TOKENS, "hello", "world"])
    ids = v.numericalize(["xxbos", "hello", "unseen", "world", "xxpad"])
    assert ids.dtype == np.int32
    assert ids.tolist() == [2, 9, 0, 10, 1]
    assert v.numericalize([]).shape == (0,)
    assert v.textify(ids) == "xxbos hello xxunk world xxpad"
    assert v.textify([9, 10], sep="|") == "hello|world"
    with pytest.raises(ValueError, match="out of range"):
        v.textify([3, 99])


def test_save_load_round_trip(tmp_path: Path) -> None:
    v = Vocab([*SPECIAL_TOKENS, "héllo", "wörld", "日本"])
    path = tmp_path / "sub" / "vocab.json"
    v.save(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data == {"format": "ulmfit-vocab", "version": 1, "itos": v.itos}
    loaded = Vocab.load(path)
    assert loaded == v and loaded.stoi == v.stoi
    assert loaded.fingerprint() == v.fingerprint()
    assert [p.name for p in path.parent.iterdir()] == ["vocab.json"]  # no temp files left
    # Saving again replaces the file in place.
    Vocab([*SPECIAL_TOKENS, "x"]).save(path)
    assert Vocab.load(path).itos[-1] == "x"


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "invalid JSON"),
        ('{"itos": ["a"]}', "format"),
        ('{"format": "ulmfit-vocab", "version": 9, "itos": []}', "version"),
        ('{"format": "ulmfit-vocab", "version": 1}', "itos"),
        ('{"format": "ulmfit-vocab", "version": 1, "itos": ["a", "b"]}', "special tokens"),
        ("[1, 2]", "format"),
    ],
)
def test_load_malformed_names_file(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "broken_vocab.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=match) as info:
        Vocab.load(path)
    assert "broken_vocab.json" in str(info.value)


def test_fingerprint_depends_on_order() -> None:
    a = Vocab([*SPECIAL_TOKENS, "a", "b"])
    b = Vocab([*SPECIAL_TOKENS, "b", "a"])
    assert a.fingerprint() != b.fingerprint()
    assert a.fingerprint() == Vocab(list(a.itos)).fingerprint()
    assert len(a.fingerprint()) == 64
    # Entry boundaries count: ["ab"] is not ["a", "b"].
    assert Vocab([*SPECIAL_TOKENS, "ab"]).fingerprint() != a.fingerprint()
