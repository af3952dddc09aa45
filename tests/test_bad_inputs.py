"""Bad inputs, replayed: each gets a clear error naming the file, line or field, or a
documented result; nothing is lost and nothing silently wrong is reported.

Faults (damaged checkpoints, concurrent writers, kill -9) are in ``test_faults.py``.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from ulmfit.cli.main import main
from ulmfit.config import ConfigError, load_toml
from ulmfit.data.classification import (
    LabelEncoder,
    audit_labelled,
    read_labelled,
    report_problems,
    stratified_split,
)
from ulmfit.models.awd_lstm import AWDLSTMConfig
from ulmfit.models.classifier import ClassifierConfig, TextClassifierModel
from ulmfit.tasks.classify import ClassifierTrainConfig, TextClassifier
from ulmfit.tasks.pipeline import LabelledDataConfig, PipelineConfig, run_pipeline
from ulmfit.text.readers import CorpusError
from ulmfit.text.tokenize import SPECIAL_TOKENS, TokenizerConfig, get_tokenizer
from ulmfit.text.vocab import Vocab

WORDS = ["good", "bad", "movie", "film", "plot"]


def tiny_classifier(classes: tuple[str, ...] = ("neg", "pos")) -> TextClassifier:
    """An untrained two-word-vocabulary classifier: enough to exercise every input path."""
    torch.manual_seed(0)
    vocab = Vocab([*SPECIAL_TOKENS, *WORDS])
    enc = AWDLSTMConfig(vocab_size=len(vocab), emb_size=8, hidden_size=8, n_layers=1)
    model = TextClassifierModel(
        ClassifierConfig(n_classes=len(classes), bptt=8, max_len=24, encoder=enc)
    )
    clf = TextClassifier(None, ClassifierTrainConfig(device="cpu"))
    clf.model, clf.vocab, clf.tokenizer_config = model.eval(), vocab, TokenizerConfig()
    clf.labels = LabelEncoder(list(classes), "multiclass")
    return clf


@pytest.fixture
def clf_dir(tmp_path: Path) -> Path:
    return tiny_classifier().save(tmp_path / "clf")


def predict(clf_dir: Path, src: Path, out: Path, *extra: str) -> int:
    args = ["predict", str(clf_dir), "-i", str(src), "-o", str(out), "--device", "cpu"]
    return main([*args, *extra])


# --- predict: the input file -----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "error"),
    [
        ("bad.txt", b"caf\xc3\x28 ok\n", "line 1: invalid UTF-8"),
        ("binary.txt", bytes(range(256)) * 8, "invalid UTF-8"),
        ("nocol.csv", b"label\npos\n", "line 1: no text column 'text'; the header has 'label'"),
        ("short.csv", b"text,label\ngood,pos\nbad,neg,extra\n", "line 3: 3 fields"),
        ("nonstring.jsonl", b'{"text": "good"}\n{"text": 7}\n', "line 2: text field 'text'"),
    ],
)
def test_predict_refuses_unreadable_input_by_file_and_line(
    clf_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    content: bytes,
    error: str,
) -> None:
    src = tmp_path / name
    src.write_bytes(content)
    out = tmp_path / "out.csv"
    assert predict(clf_dir, src, out) == 2
    assert f"{src}: " in (err := capsys.readouterr().err) and error in err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize(
    ("name", "content", "n_rows"),
    [
        ("zero.txt", b"", 0),  # nothing to predict: an empty result, and a warning
        ("header_only.csv", b"text,label\n", 0),
        ("blank.txt", b"  \n\t\n", 2),  # a line is a document: empty ones keep their rows
    ],
)
def test_predict_empty_and_whitespace_inputs(
    clf_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    name: str,
    content: bytes,
    n_rows: int,
) -> None:
    src = tmp_path / name
    src.write_bytes(content)
    out = tmp_path / "out.csv"
    with caplog.at_level(logging.WARNING):
        assert predict(clf_dir, src, out) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == n_rows
    assert all(abs(float(r["p_neg"]) + float(r["p_pos"]) - 1) < 1e-5 for r in rows)
    if n_rows == 0:
        assert "no documents to predict" in caplog.text


def test_unusual_characters_are_predicted_in_order(clf_dir: Path, tmp_path: Path) -> None:
    texts = [
        "good\x00\x07\x1b[31m movie\u200b\ufeff",  # control characters, zero-width
        "bad 🎬🍿 film 👍🏽",  # emoji with a skin-tone modifier
        "这部电影很好 good",  # CJK
        "فيلم جيد good שלום",  # right-to-left scripts
        "\u202egood\u202c movie",  # a bidi override
    ]
    src = tmp_path / "odd.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert predict(clf_dir, src, out) == 0
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["row"] for r in got] == [1, 2, 3, 4, 5]
    expected = TextClassifier.load(clf_dir, device="cpu").predict_proba(texts)
    probs = np.array([[r["probs"]["neg"], r["probs"]["pos"]] for r in got])
    assert np.allclose(probs, expected, atol=1e-6)


def test_a_10mb_line_without_spaces_and_a_long_document() -> None:
    """A line of 10 MB is one token to the rules; a document of 200k tokens is read in
    chunks of at most max(bptt, max_len) tokens, so memory beyond its ids stays bounded."""
    tok = get_tokenizer(TokenizerConfig())
    tokens = tok("x" * 10_000_000)
    assert tokens[0] == "xxbos" and len(tokens) <= 6
    clf = tiny_classifier()
    assert clf.model is not None
    seen: list[int] = []
    hook = clf.model.encoder.embedding.register_forward_hook(
        lambda _m, args, _out: seen.append(int(args[0].shape[-1]))
    )
    try:
        probs = clf.predict_proba([" ".join(["good", "movie"] * 100_000), "bad film"])
    finally:
        hook.remove()
    cfg = clf.model.config
    assert np.isfinite(probs).all() and probs.shape == (2, 2)
    assert sum(seen) >= 200_000  # every token was read ...
    assert max(seen) <= max(cfg.bptt, cfg.max_len)  # ... a bounded chunk at a time


# --- predict / evaluate: the output ------------------------------------------------------


def test_output_equal_to_input_is_refused_before_reading(
    clf_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "texts.csv"
    src.write_text("text\ngood movie\n")
    before = src.read_bytes()
    for out in (src, tmp_path / "." / "texts.csv"):
        assert predict(clf_dir, src, out, "--overwrite") == 2
        assert "is also an input" in capsys.readouterr().err
        assert src.read_bytes() == before
    data = tmp_path / "test.csv"
    data.write_text("text,label\ngood movie,pos\n")
    args = ["evaluate", str(clf_dir), "--data", str(data), "--json", str(data), "--device", "cpu"]
    data_before = data.read_bytes()
    assert main([*args, "--overwrite"]) == 2
    assert "is also an input" in capsys.readouterr().err
    assert data.read_bytes() == data_before


def test_existing_output_is_refused_unless_overwrite(
    clf_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "texts.txt"
    src.write_text("good movie\nbad film\n")
    out = tmp_path / "out.csv"
    out.write_text("precious\n")
    assert predict(clf_dir, src, out) == 2
    err = capsys.readouterr().err
    assert f"{out}: output already exists" in err and "--overwrite" in err
    assert out.read_text() == "precious\n"
    assert predict(clf_dir, src, out, "--overwrite") == 0
    assert len(list(csv.DictReader(out.open()))) == 2


@pytest.mark.parametrize("name", ["out.parquet", "out.xlsx", "out"])
def test_output_format_follows_the_suffix_or_is_refused(
    clf_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    src = tmp_path / "texts.txt"
    src.write_text("good movie\n")
    assert predict(clf_dir, src, tmp_path / name) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / name}: cannot write predictions" in err and ".csv" in err
    assert not (tmp_path / name).exists()


def test_tsv_and_jsonl_outputs_are_what_their_suffix_says(clf_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "texts.txt"
    src.write_text('good movie\nbad, "quoted" film\n')
    assert predict(clf_dir, src, tmp_path / "p.tsv") == 0
    rows = list(csv.reader((tmp_path / "p.tsv").open(), delimiter="\t"))
    assert rows[0] == ["row", "label", "p_neg", "p_pos"] and len(rows) == 3
    assert predict(clf_dir, src, tmp_path / "p.jsonl") == 0
    recs = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["row"] for r in recs] == [1, 2]


def test_evaluate_refuses_a_plot_suffix_it_cannot_write_before_scoring(
    clf_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "test.csv"
    data.write_text("text,label\ngood movie,pos\n")
    args = ["evaluate", str(clf_dir), "--data", str(data), "--device", "cpu"]
    assert main([*args, "--plot", str(tmp_path / "cm.docx")]) == 2
    assert "cannot write a plot as '.docx'" in capsys.readouterr().err
    assert main([*args, "--json", str(tmp_path / "report.txt")]) == 2
    assert "give it a .json name" in capsys.readouterr().err


def test_unseen_label_at_evaluation_names_the_line(
    clf_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "test.csv"
    data.write_text("text,label\ngood movie,pos\nbad film,meh\n")
    assert main(["evaluate", str(clf_dir), "--data", str(data), "--device", "cpu"]) == 2
    assert f"{data}: line 3: label 'meh' was not among the training labels" in (
        capsys.readouterr().err
    )


# --- labelled training data ------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"text,label\ngood,pos\nbad,\n", "line 3: no label (field 'label' is empty)"),
        (b"text,topic\ngood,pos\n", "no label column 'label'"),
    ],
)
def test_missing_labels_and_columns_name_the_line(
    tmp_path: Path, content: bytes, error: str
) -> None:
    path = tmp_path / "train.csv"
    path.write_bytes(content)
    with pytest.raises(CorpusError) as info:
        read_labelled(path)
    assert str(path) in str(info.value) and error in str(info.value)


def test_wrong_multilabel_separator_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_text("text,labels\ngood,a;b\nbad,a\n")
    with pytest.raises(CorpusError) as info:
        read_labelled(path, label_column="labels", task="multilabel", label_sep="|")
    assert f"{path}: line 2: label 'a;b' has no separator '|'" in str(info.value)
    assert "did you mean label_sep=';'" in str(info.value)


@pytest.mark.parametrize("content", [b"", b"text,label\n"])
def test_header_only_or_zero_byte_training_file_is_named(
    tmp_path: Path, content: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "train.csv"
    path.write_bytes(content)
    cfg = PipelineConfig(out_dir=str(tmp_path / "run"), data=LabelledDataConfig(train=str(path)))
    with pytest.raises(ValueError) as info:
        run_pipeline(cfg)
    assert str(path) in str(info.value)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_missing_like_labels_duplicates_and_tiny_classes_are_reported(tmp_path: Path) -> None:
    texts = [f"text {i}" for i in range(40)] + ["text 0", "text 1", "text 2"]
    labels = ["a" if i % 2 else "b" for i in range(40)] + ["a", "b", "x"]
    labels[5], labels[6], labels[7] = "nan", "NaN", "None"
    problems = audit_labelled(texts, labels, "multiclass", source="train.csv")
    joined = " | ".join(problems)
    assert "3 label(s) look like missing values" in joined and "'NaN' x1" in joined
    assert "first at row 6" in joined
    # text 0 (b) repeated as a: a conflict; text 1 (a) repeated as b: another; text 2 (b) as x
    assert "3 exact duplicate text(s), 3 with a different label," in joined
    assert "class(es) with fewer than 5 examples" in joined and "'x' (1)" in joined
    with pytest.raises(CorpusError, match="strict mode refuses it"):
        report_problems(problems, strict=True)
    clean = audit_labelled([f"t{i}" for i in range(20)], ["a", "b"] * 10, "multiclass")
    assert clean == []
    overlap = audit_labelled(["t1", "t2"], ["a", "b"], "multiclass", valid_texts=["t2", "t9"])
    assert any("1 text(s) also appear in validation data" in p for p in overlap)


def test_multilabel_missing_like_labels_are_reported() -> None:
    problems = audit_labelled(["a", "b"], [["x", "null"], ["x"]], "multilabel")
    assert any("'null' x1" in p for p in problems)


def test_duplicates_stay_on_one_side_of_the_validation_split() -> None:
    rng = np.random.default_rng(0)
    base = [f"doc {i}" for i in range(200)]
    texts = base + [base[int(i)] for i in rng.integers(0, 200, size=100)]
    labels = [str(int(t.split()[1]) % 3) for t in texts]
    tr, va = stratified_split(labels, 0.2, seed=1, task="multiclass", groups=texts)
    assert len(tr) + len(va) == len(texts) and not set(tr) & set(va)
    assert not {texts[i] for i in tr} & {texts[i] for i in va}
    assert 0.1 < len(va) / len(texts) < 0.3
    # Without duplicates, grouping changes nothing.
    plain = stratified_split(labels[:200], 0.2, seed=1, task="multiclass")
    grouped = stratified_split(labels[:200], 0.2, seed=1, task="multiclass", groups=base)
    assert all(np.array_equal(a, b) for a, b in zip(plain, grouped, strict=True))


def test_strict_flag_refuses_suspicious_training_data_on_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train = tmp_path / "train.csv"
    train.write_text(
        "text,label\n" + "".join(f"text {i},{'nan' if i < 3 else 'a'}\n" for i in range(9))
    )
    args = ["train-classifier", "--lm", str(tmp_path / "no_lm"), "--data.train", str(train)]
    assert main([*args, "--out-dir", str(tmp_path / "run"), "--strict"]) == 2
    err = capsys.readouterr().err
    assert "strict mode refuses it" in err and f"{train}: 3 label(s) look like missing" in err


# --- config files -----------------------------------------------------------------------


def test_a_directory_or_binary_file_as_config_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory, not a TOML config file"):
        load_toml(tmp_path)
    binary = tmp_path / "run.toml"
    binary.write_bytes(b"\xff\xfe[train]\n")
    with pytest.raises(ConfigError, match=f"{binary}: not a text"):
        load_toml(binary)
    assert main(["pretrain", "--config", str(tmp_path)]) == 2
