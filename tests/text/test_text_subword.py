"""SentencePiece: training on the rule-processed text, special ids, tokenisation."""

from __future__ import annotations

import itertools
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm

from ulmfit.text.corpus import tokenize_corpus
from ulmfit.text.readers import CorpusError, read_texts
from ulmfit.text.subword import SPM_SPACE, SentencePieceTokenizer, train_sentencepiece
from ulmfit.text.tokenize import SPECIAL_TOKENS, TokenizerConfig, get_tokenizer
from ulmfit.text.vocab import Vocab

CFG = TokenizerConfig(kind="spm", spm_vocab_size=500)


@pytest.fixture(scope="module")
def trec_texts(shared_data: Path) -> list[str]:
    return list(read_texts(shared_data / "trec" / "train.csv.xz", text_column="text"))


@pytest.fixture(scope="module")
def trec_model(trec_texts: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("spm")
    return train_sentencepiece(trec_texts, out / "trec", CFG)


def test_model_files_and_special_ids(trec_model: Path) -> None:
    assert trec_model.name == "trec.model" and trec_model.is_file()
    # Written atomically: only the final files remain.
    assert sorted(p.name for p in trec_model.parent.iterdir()) == ["trec.model", "trec.vocab"]
    tok = get_tokenizer(CFG, trec_model)
    assert isinstance(tok, SentencePieceTokenizer)
    itos = tok.itos()
    assert len(itos) == 500
    assert itos[:9] == SPECIAL_TOKENS
    assert Vocab(itos).stoi["xxmaj"] == 8


def test_tokenize_round_trip(trec_model: Path) -> None:
    tok = SentencePieceTokenizer(CFG, trec_model)
    pieces = tok("What is the capital of the USA?  I don't know!!!!")
    assert pieces[0] == "xxbos"
    assert pieces[1] == "xxmaj" and pieces[2] == f"{SPM_SPACE}what"
    assert "xxup" in pieces and "xxrep" in pieces
    # No bare "▁" right before a special token.
    for a, b in itertools.pairwise(pieces):
        assert not (a == SPM_SPACE and b in SPECIAL_TOKENS)
    # The pieces spell the rule-processed text back.
    spelled = "".join(pieces).replace(SPM_SPACE, " ")
    for special in SPECIAL_TOKENS:
        spelled = spelled.replace(special, f" {special} ")
    assert spelled.split() == (
        [
            "xxbos",
            "xxmaj",
            "what",
            "is",
            "the",
            "capital",
            "of",
            "the",
            "xxup",
            "usa",
            "?",
            "xxmaj",
            "i",
            "do",
            "n't",
            "know",
            "xxrep",
            "4",
            "!",
        ]
    )
    # Pieces outside the model (characters it does not cover come back as themselves)
    # are exactly the ones that numericalise to xxunk.
    vocab = Vocab(tok.itos())
    ids = vocab.numericalize(pieces)
    assert ids[0] == 2
    assert [p for p, i in zip(pieces, ids, strict=True) if i == 0] == [
        p for p in pieces if p not in vocab
    ]
    common = vocab.numericalize(tok("What is the name of the city ?"))
    assert int((common == 0).sum()) == 0


def test_pickle_and_parallel_corpus(trec_model: Path, trec_texts: list[str]) -> None:
    tok = SentencePieceTokenizer(CFG, trec_model)
    clone = pickle.loads(pickle.dumps(tok))
    assert clone.model_path == tok.model_path
    assert clone(trec_texts[5]) == tok(trec_texts[5])
    corpus = tokenize_corpus(trec_texts[:300], tok, n_workers=2, chunk_size=40)
    serial = tokenize_corpus(trec_texts[:300], tok)
    assert np.array_equal(corpus.ids, serial.ids) and corpus.itos == serial.itos
    assert corpus.tokens(0) == tok(trec_texts[0])
    # Corpus ids map into the SentencePiece vocabulary; unknowns only for uncovered chars.
    vocab = Vocab(tok.itos())
    ids, _ = corpus.numericalize(vocab)
    unknown = {t for t in corpus.itos[9:] if t not in vocab}
    assert int((ids == 0).sum()) == sum(int(corpus.counts[corpus.itos.index(t)]) for t in unknown)
    assert all(len(t) == 1 for t in unknown)


def test_small_corpus_falls_back(
    trec_texts: list[str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="ulmfit.text.subword"):
        model = train_sentencepiece(trec_texts[:20], tmp_path / "small", CFG)
    assert "too small" in caplog.text
    tok = SentencePieceTokenizer(CFG, model)
    assert 9 < len(tok.itos()) < 500
    assert tok.itos()[:9] == SPECIAL_TOKENS


def test_sample_docs_limit_and_empty(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = TokenizerConfig(kind="spm", spm_vocab_size=30, spm_sample_docs=2)
    texts = ["alpha beta gamma", "delta epsilon", "NEVER SEEN zzzz qqqq"]
    with caplog.at_level(logging.INFO, logger="ulmfit.text.subword"):
        model = train_sentencepiece(texts, tmp_path / "m", cfg)
    assert "first 2 documents" in caplog.text
    assert "q" not in SentencePieceTokenizer(cfg, model).itos()
    with pytest.raises(CorpusError, match="no text"):
        train_sentencepiece(["  ", ""], tmp_path / "e", cfg)


def test_foreign_model_is_rejected(tmp_path: Path, trec_texts: list[str]) -> None:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(trec_texts[:500]),
        model_prefix=str(tmp_path / "plain"),
        vocab_size=100,
        minloglevel=2,
    )
    with pytest.raises(ValueError, match="expected"):
        SentencePieceTokenizer(CFG, tmp_path / "plain.model")
    with pytest.raises(ValueError, match="kind='spm'"):
        SentencePieceTokenizer(TokenizerConfig(), tmp_path / "plain.model")
    with pytest.raises(FileNotFoundError):
        SentencePieceTokenizer(CFG, tmp_path / "missing.model")
