"""Classification data: reading labelled files, label encoding, splitting, batching."""

from __future__ import annotations

import csv
import json
import logging
import lzma
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from ulmfit.data.classification import (
    ClassificationBatches,
    LabelEncoder,
    LabelledTexts,
    iter_texts,
    read_labelled,
    stratified_split,
)
from ulmfit.text.readers import CorpusError


@pytest.fixture(scope="module")
def trec(shared_data: Path) -> LabelledTexts:
    return read_labelled(shared_data / "trec" / "train.csv.xz")


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- reading real data -------------------------------------------------------------------


def test_trec_train_rows_and_class_counts(trec: LabelledTexts) -> None:
    assert len(trec.texts) == len(trec.labels) == len(trec.rows) == 5452
    assert Counter(trec.labels) == {
        "ENTY": 1250, "HUM": 1223, "DESC": 1162, "NUM": 896, "LOC": 835, "ABBR": 86,
    }  # fmt: skip
    assert trec.texts[0] == "How did serfdom develop in and then leave Russia ?"
    assert trec.rows[:3] == [2, 3, 4]  # line numbers; line 1 is the header
    assert trec.source.endswith("train.csv.xz")


def test_reuters_multilabel_jsonl(shared_data: Path) -> None:
    d = shared_data / "reuters21578"
    data = read_labelled(d / "train.jsonl.xz", label_column="labels", task="multilabel")
    assert len(data.texts) == 7770
    assert data.labels is not None
    assert sum(len(labs) for labs in data.labels) == 9586
    assert data.texts[0].startswith("BAHIA COCOA REVIEW\n")
    enc = LabelEncoder.fit(data.labels, "multilabel")
    categories = (d / "labels.txt").read_text(encoding="utf-8").split()
    assert enc.classes == sorted(categories) and len(enc) == 90
    hot = enc.encode(data.labels, rows=data.rows, source=data.source)
    assert hot.shape == (7770, 90) and hot.dtype == np.float32
    # Document 5467 lists 'corn' twice: 9586 label entries, 9585 distinct (doc, label) pairs.
    assert hot.sum() == 9585
    assert enc.decode(hot[:50]) == [sorted(set(labs)) for labs in data.labels[:50]]


def test_semeval_empty_label_list_is_valid(shared_data: Path) -> None:
    data = read_labelled(
        shared_data / "semeval2018_ec" / "train.jsonl.xz", label_column="labels", task="multilabel"
    )
    assert data.labels is not None and len(data.labels) == 6838
    assert sum(1 for labs in data.labels if labs == []) == 204


def test_ag_news_two_text_columns_are_joined_with_xxfld(shared_data: Path) -> None:
    path = shared_data / "ag_news" / "test.csv.xz"
    data = read_labelled(path, text_column=["title", "description"])
    assert len(data.texts) == 7600
    assert all(t.startswith("xxfld 1 ") and " xxfld 2 " in t for t in data.texts)
    with lzma.open(path, "rt", encoding="utf-8", newline="") as f:
        first = next(csv.DictReader(f))
    assert data.texts[0] == f"xxfld 1 {first['title']} xxfld 2 {first['description']}"
    assert data.labels is not None and Counter(data.labels)["Sports"] == 1900


# -- reading small files -----------------------------------------------------------------


def test_folder_per_class(tmp_path: Path) -> None:
    for label, docs in {"neg": ["bad .", "awful ."], "pos": ["good ."]}.items():
        (tmp_path / label).mkdir()
        for i, doc in enumerate(docs):
            write(tmp_path / label / f"{i}.txt", doc)
    write(tmp_path / "neg" / "notes.md", "not a document")
    data = read_labelled(tmp_path)
    assert data.texts == ["bad .", "awful .", "good ."]
    assert data.labels == ["neg", "neg", "pos"]
    with pytest.raises(CorpusError, match="multiclass only"):
        read_labelled(tmp_path, task="multilabel")


def test_csv_multilabel_with_separator_and_tsv_quotes_literal(tmp_path: Path) -> None:
    p = write(tmp_path / "d.csv", 'text,tags\n"one, two",a|b\nthree,b\nfour,a| |a|\n')
    data = read_labelled(p, label_column="tags", task="multilabel", label_sep="|")
    assert data.texts == ["one, two", "three", "four"]
    assert data.labels == [["a", "b"], ["b"], ["a", "a"]]  # blanks dropped
    # TSV is read without quoting: a leading '"' stays part of the text.
    t = write(tmp_path / "d.tsv", 'label\ttext\npos\t"quoted" start\nneg\tplain\n')
    assert read_labelled(t).texts == ['"quoted" start', "plain"]


def test_unlabelled_input(tmp_path: Path) -> None:
    p = write(tmp_path / "u.csv", "text\nhello\n\nworld\n")
    data = read_labelled(p, require_labels=False)
    assert data.labels is None and data.texts == ["hello", "world"] and data.rows == [2, 4]
    j = write(tmp_path / "u.jsonl", '{"text": "a"}\n{"text": "b"}\n')
    assert read_labelled(j, require_labels=False).labels is None
    assert read_labelled(j, label_column=None).labels is None


def test_iter_texts_reads_what_read_labelled_reads(tmp_path: Path) -> None:
    """Prediction input follows the training reader's rules, record for record."""
    # TSV unquoted: a '"' is a character and a '"' at a cell start swallows no lines.
    tsv = write(tmp_path / "d.tsv", 'text\tlabel\nsay "hi\ta\n"so-called" news\tb\n\nlast\ta\n')
    csv_ = write(tmp_path / "d.csv", '\ufefftitle,body,label\n"one, two",x,a\n,,b\n')
    jsonl = write(tmp_path / "d.jsonl", '{"text": "a", "label": "x"}\n\n{"text": null}\n')
    for path, cols in ((tsv, ["text"]), (csv_, ["title", "body"]), (jsonl, ["text"])):
        ref = read_labelled(path, text_column=cols, require_labels=False)
        assert list(iter_texts(path, text_column=cols)) == list(
            zip(ref.rows, ref.texts, strict=True)
        )
    assert [t for _, t in iter_texts(tsv)] == ['say "hi', '"so-called" news', "last"]
    assert [t for _, t in iter_texts(csv_, text_column=["title", "body"])][1] == (
        "xxfld 1  xxfld 2 "
    )
    txt = write(tmp_path / "d.txt", "first\r\n\nthird\n")  # every line, empty ones too
    assert list(iter_texts(txt)) == [(1, "first"), (2, ""), (3, "third")]


@pytest.mark.parametrize(
    ("name", "content", "error"),
    [
        (
            "x.jsonl",
            '{"text": "ok"}\n{"text": 0}\n',
            "line 2: text field 'text' is not a string: 0",
        ),
        ("x.jsonl", '{"text": "ok"}\n[1, 2]\n', "line 2: expected a JSON object, got list"),
        ("x.jsonl", '{"body": "ok"}\n', "line 1: no text field 'text'; the record has 'body'"),
        ("x.csv", "text,label\na,b\nc,d,e\n", "line 3: 3 fields but the header has 2"),
        ("x.tsv", "text\tlabel\na\n", "line 2: 1 fields but the header has 2"),
        ("x.csv", "body,label\na,b\n", "line 1: no text column 'text'; the header has 'body'"),
    ],
)
def test_iter_texts_errors_name_file_and_line(
    tmp_path: Path, name: str, content: str, error: str
) -> None:
    path = write(tmp_path / name, content)
    with pytest.raises(CorpusError, match=f"^{re.escape(f'{path}: {error}')}"):
        list(iter_texts(path))


def test_empty_text_is_kept_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    p = write(tmp_path / "e.csv", "label,text\na,\nb,x\n")
    with caplog.at_level(logging.WARNING):
        data = read_labelled(p)
    assert data.texts == ["", "x"]
    assert "1 of 2 texts are empty" in caplog.text


# -- errors name the file, the line and the field ----------------------------------------


def test_missing_column_lists_the_columns(tmp_path: Path) -> None:
    p = write(tmp_path / "d.csv", "sentence,label\nhi,a\n")
    with pytest.raises(CorpusError, match=r"d\.csv.*no text column 'text'.*'sentence', 'label'"):
        read_labelled(p)
    with pytest.raises(CorpusError, match=r"no label column 'category'.*'sentence', 'label'"):
        read_labelled(p, text_column="sentence", label_column="category")
    j = write(tmp_path / "d.jsonl", '{"text": "a", "label": "x"}\n{"body": "b", "label": "y"}\n')
    with pytest.raises(CorpusError, match=r"d\.jsonl: line 2: no text field 'text'.*'body'"):
        read_labelled(j)


def test_row_without_label_names_the_line(tmp_path: Path) -> None:
    p = write(tmp_path / "d.csv", 'label,text\na,one\nb,"two\nlines"\n,three\n')
    with pytest.raises(CorpusError, match=r"d\.csv: line 5: no label"):
        read_labelled(p)  # the quoted line break makes the third record start on line 5
    j = write(
        tmp_path / "d.jsonl", '{"text": "a", "labels": ["x"]}\n{"text": "b", "labels": null}\n'
    )
    with pytest.raises(CorpusError, match=r"line 2: no label"):
        read_labelled(j, label_column="labels", task="multilabel")


def test_malformed_jsonl_names_the_line(tmp_path: Path) -> None:
    j = write(tmp_path / "d.jsonl", '{"text": "a", "label": "x"}\n\n{"text": "b", "label": \n')
    with pytest.raises(CorpusError, match=r"d\.jsonl: line 3: not valid JSON"):
        read_labelled(j)


def test_wrong_field_count_and_list_label_for_multiclass(tmp_path: Path) -> None:
    p = write(tmp_path / "d.csv", "label,text\na,one\nb,two,extra\n")
    with pytest.raises(CorpusError, match=r"line 3: 3 fields but the header has 2"):
        read_labelled(p)
    j = write(tmp_path / "d.jsonl", '{"text": "a", "label": ["x", "y"]}\n')
    with pytest.raises(CorpusError, match=r"line 1: .*list.*task='multilabel'"):
        read_labelled(j)


def test_multilabel_csv_with_the_wrong_separator_gets_a_hint(tmp_path: Path) -> None:
    p = write(tmp_path / "d.csv", "text,labels\none,a\ntwo,a;b\nthree,b\n")
    with pytest.raises(
        CorpusError, match=r"line 3: label 'a;b' has no separator '\|'.*label_sep=';'"
    ):
        read_labelled(p, label_column="labels", task="multilabel", label_sep="|")
    # The right separator reads fine.
    data = read_labelled(p, label_column="labels", task="multilabel", label_sep=";")
    assert data.labels == [["a"], ["a", "b"], ["b"]]
    # If some row uses '|', a ';' in a label is taken as part of the name, unless the
    # label is not a known one.
    q = write(tmp_path / "e.csv", "text,labels\none,a|b\ntwo,a;b\n")
    data = read_labelled(q, label_column="labels", task="multilabel", label_sep="|")
    assert data.labels == [["a", "b"], ["a;b"]]
    with pytest.raises(
        CorpusError, match=r"line 3: unknown label 'a;b'.*label_sep=';'.*known: 'a', 'b'"
    ):
        read_labelled(
            q, label_column="labels", task="multilabel", label_sep="|", known_labels=["a", "b"]
        )
    with pytest.raises(CorpusError, match="need label_sep"):
        read_labelled(q, label_column="labels", task="multilabel")


def test_unknown_label_at_evaluation_names_row_and_label(trec: LabelledTexts) -> None:
    enc = LabelEncoder.fit(trec.labels, "multiclass")
    labels = ["HUM", "LOC", "LOCATION"]
    with pytest.raises(CorpusError, match=r"test\.csv: line 7: label 'LOCATION'.*known: 'ABBR'"):
        enc.encode(labels, rows=[2, 5, 7], source="test.csv")
    with pytest.raises(CorpusError, match=r"row 3: label 'LOCATION'"):
        enc.encode(labels)


# -- labels ------------------------------------------------------------------------------


def test_label_encoder_round_trip() -> None:
    enc = LabelEncoder.fit(["pos", "neg", "pos", "neutral"], "multiclass")
    assert enc.classes == ["neg", "neutral", "pos"] and len(enc) == 3
    y = enc.encode(["pos", "neg", "neutral"])
    assert y.dtype == np.int64 and y.tolist() == [2, 0, 1]
    assert enc.decode(y) == ["pos", "neg", "neutral"]
    assert LabelEncoder.from_dict(json.loads(json.dumps(enc.to_dict()))) == enc

    ml = LabelEncoder.fit([["b", "a"], [], ["c"]], "multilabel")
    hot = ml.encode([["b", "a"], [], ["c", "a"]])
    assert hot.shape == (3, 3) and hot.dtype == np.float32
    assert hot.tolist() == [[1, 1, 0], [0, 0, 0], [1, 0, 1]]
    assert ml.decode(hot) == [["a", "b"], [], ["a", "c"]]
    assert LabelEncoder.from_dict(ml.to_dict()) == ml != enc


# -- splitting ---------------------------------------------------------------------------


def test_stratified_split_keeps_class_proportions(trec: LabelledTexts) -> None:
    tr, va = stratified_split(trec.labels, 0.1, seed=0, task="multiclass")
    assert len(va) == 546 and len(tr) + len(va) == 5452
    assert np.array_equal(np.sort(np.concatenate([tr, va])), np.arange(5452))
    counts = Counter(trec.labels[i] for i in va)
    assert abs(counts["ABBR"] - 8.6) <= 1 and abs(counts["ENTY"] - 125) <= 1
    _, va2 = stratified_split(trec.labels, 0.1, seed=0, task="multiclass")
    assert np.array_equal(va, va2)
    _, va3 = stratified_split(trec.labels, 0.1, seed=1, task="multiclass")
    assert not np.array_equal(va, va3)


def test_split_falls_back_to_random_for_a_singleton_class_and_multilabel() -> None:
    labels = ["a"] * 10 + ["b"] * 9 + ["c"]
    tr, va = stratified_split(labels, 0.25, seed=3, task="multiclass")
    assert len(va) == 5 and sorted([*tr, *va]) == list(range(20))
    ml = [["x"]] * 10 + [[]] * 10
    tr, va = stratified_split(ml, 0.5, seed=3, task="multilabel")
    assert len(va) == 10 and sorted([*tr, *va]) == list(range(20))


# -- batching ----------------------------------------------------------------------------


def make_docs(lengths: list[int] | np.ndarray) -> list[np.ndarray]:
    # Token value 100 + doc index: every row of a batch can be traced to its document.
    return [np.full(n, 100 + i, dtype=np.int32) for i, n in enumerate(lengths)]


def test_batches_are_right_padded_with_correct_lengths() -> None:
    docs = make_docs([3, 5, 0, 2])
    y = np.array([0, 1, 2, 1], dtype=np.int64)
    (b,) = list(ClassificationBatches(docs, y, bs=4, train=False).batches(0))
    assert b.index.tolist() == [1, 0, 3, 2]  # longest first; ties keep input order
    assert b.x.dtype == torch.int64 and b.x.shape == (4, 5)
    assert b.lengths.tolist() == [5, 3, 2, 1]  # an empty doc reads as one pad token
    assert b.x.tolist() == [
        [101, 101, 101, 101, 101],
        [100, 100, 100, 1, 1],
        [103, 103, 1, 1, 1],
        [1, 1, 1, 1, 1],
    ]
    assert b.y is not None and b.y.tolist() == [1, 0, 1, 2]
    hot = np.eye(3, dtype=np.float32)[[0, 1, 2, 1]]
    (m,) = list(ClassificationBatches(docs, hot, bs=4, train=True).batches(0))
    assert (
        m.y is not None
        and m.y.dtype == torch.float32
        and torch.equal(m.y, torch.from_numpy(hot[m.index]))
    )


def test_inference_order_is_sorted_and_index_restores_input_order(trec: LabelledTexts) -> None:
    lengths = [len(t.split()) + 1 for t in trec.texts[:1000]]
    docs = make_docs(lengths)
    batches = ClassificationBatches(docs, None, bs=64, train=False)
    out = np.zeros(len(docs), dtype=np.int64)
    served = []
    for b in batches:
        assert b.y is None
        served += b.lengths.tolist()
        out[b.index] = b.x[:, 0].numpy()  # a "prediction" per doc: its first token
    assert served == sorted(lengths, reverse=True)
    assert out.tolist() == [100 + i for i in range(len(docs))]
    assert len(batches) == 16


def test_training_batches_cover_every_doc_once_and_are_sortish(trec: LabelledTexts) -> None:
    lengths = np.array([len(t.split()) + 1 for t in trec.texts])
    docs = make_docs(lengths)
    cb = ClassificationBatches(docs, None, bs=32, train=True, seed=7)
    batches = list(cb.batches(0))
    assert len(batches) == len(cb) == 171
    idx = np.concatenate([b.index for b in batches])
    assert np.array_equal(np.sort(idx), np.arange(len(docs)))
    for b in batches[:5]:
        # Each row holds its own document, padded after it.
        assert b.x[:, 0].tolist() == (100 + b.index).tolist()
        assert b.lengths.tolist() == lengths[b.index].tolist()
    # The batch with the longest document comes first.
    assert batches[0].lengths.max() == lengths.max()
    # Sortish: the spread within a batch is far below that of random batches.
    spread = np.mean([int(b.lengths.max() - b.lengths.min()) for b in batches])
    rng = np.random.default_rng(0)
    rand = rng.permutation(len(docs))
    rand_spread = np.mean([np.ptp(lengths[rand[i : i + 32]]) for i in range(0, len(docs), 32)])
    assert spread < rand_spread / 4
    # Padding wasted is small.
    padded = sum(b.x.numel() for b in batches)
    assert padded < 1.15 * lengths.sum()


def test_training_order_depends_only_on_seed_and_epoch() -> None:
    docs = make_docs(np.random.default_rng(1).integers(1, 60, 500))
    a = ClassificationBatches(docs, None, bs=16, train=True, seed=3)
    b = ClassificationBatches(docs, None, bs=16, train=True, seed=3)

    def order(cb: ClassificationBatches, epoch: int) -> list[list[int]]:
        return [g.index.tolist() for g in cb.batches(epoch)]

    assert order(a, 2) == order(b, 2)
    assert order(a, 0) != order(a, 1)
    assert order(a, 0) != order(ClassificationBatches(docs, None, bs=16, train=True, seed=4), 0)
    b.set_epoch(1)
    assert [g.index.tolist() for g in b] == order(a, 1)


def test_a_lone_leftover_doc_joins_another_training_batch() -> None:
    docs = make_docs(list(range(1, 34)))  # 33 docs, bs 8: the 33rd would be alone
    cb = ClassificationBatches(docs, None, bs=8, train=True)
    sizes = sorted(len(b.index) for b in cb.batches(0))
    assert sizes == [8, 8, 8, 9] and len(cb) == 4
    assert len(ClassificationBatches(docs, None, bs=8, train=False)) == 5


def test_batches_reject_mismatched_targets() -> None:
    with pytest.raises(ValueError, match="2 docs but 3 targets"):
        ClassificationBatches(make_docs([1, 2]), np.zeros(3), bs=2, train=True)


def test_csv_reader_handles_bom_and_crlf(tmp_path: Path) -> None:
    p = tmp_path / "w.csv"
    p.write_bytes("\ufefflabel,text\r\nx,hello\r\n".encode())
    data = read_labelled(p)
    assert data.texts == ["hello"] and data.labels == ["x"]
