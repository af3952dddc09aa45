"""ONNX export: one graph with dynamic axes and explicit state, run by ONNX Runtime with
the same windows as PyTorch. Parity on real TREC-6 and IMDb test documents of many
lengths (long ones take the prefix path), fp32 and int8; the CLI; refusals."""

from __future__ import annotations

import csv
import lzma
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from ulmfit.cli.main import main
from ulmfit.data.classification import LabelEncoder
from ulmfit.export_onnx import OnnxClassifier, export_onnx
from ulmfit.inference import num_threads
from ulmfit.models.awd_lstm import AWDLSTMConfig
from ulmfit.models.backbone import KINDS
from ulmfit.models.classifier import ClassifierConfig, TextClassifierModel
from ulmfit.tasks.classify import ClassifierTrainConfig, TextClassifier
from ulmfit.text.tokenize import TokenizerConfig, get_tokenizer
from ulmfit.text.vocab import Vocab


def read_texts(path: Path, n: int, encoding: str) -> list[str]:
    with lzma.open(path, "rt", encoding=encoding, newline="") as f:
        return [row["text"] for _, row in zip(range(n), csv.DictReader(f), strict=False)]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    with num_threads(1):
        yield


@pytest.fixture(scope="module")
def texts(shared_data: Path) -> list[str]:
    trec = read_texts(shared_data / "trec/test.csv.xz", 200, "latin-1")
    imdb = read_texts(shared_data / "imdb/test.csv.xz", 40, "utf-8")
    return [*trec, *imdb, "", "Why?"]


def classifier(texts: list[str], kind: str = "awd_lstm") -> TextClassifier:
    """A small random-weight classifier over the texts' words; max_len 64, so most IMDb
    reviews are read with a prefix (or, for the Transformer, cut to their last 64)."""
    tok = get_tokenizer(TokenizerConfig())
    counts = Counter(t for text in texts for t in tok(text))
    vocab = Vocab.from_counts(counts, max_size=3000, min_freq=1)
    torch.manual_seed(0)
    enc = AWDLSTMConfig(kind=kind, vocab_size=len(vocab), emb_size=16, hidden_size=32, n_layers=3)
    model = TextClassifierModel(ClassifierConfig(n_classes=6, bptt=16, max_len=64, encoder=enc))
    with torch.no_grad():  # random BatchNorm statistics, so the head is not the identity
        for m in model.head.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        # Random weights give near-ties (median top-2 margin 0.01 for the transformer), where
        # any rounding flips labels, torch's own int8 included; a trained classifier has
        # opinions. Larger output weights give this one some.
        model.head[-1][-1].weight.mul_(10)
    clf = TextClassifier(None, ClassifierTrainConfig(device="cpu"))
    clf.model, clf.vocab, clf.tokenizer_config = model.eval(), vocab, TokenizerConfig()
    clf.labels = LabelEncoder.fit(list("abcdef"), "multiclass")
    return clf


@pytest.fixture(scope="module")
def saved(texts: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return classifier(texts).save(tmp_path_factory.mktemp("onnx") / "clf")


@pytest.mark.parametrize("kind", KINDS)
def test_fp32_and_int8_parity_on_real_documents(
    kind: str, saved: Path, texts: list[str], tmp_path: Path
) -> None:
    if kind != "awd_lstm":
        saved = classifier(texts, kind).save(tmp_path / kind)
    ref = TextClassifier.load(saved, device="cpu")
    lengths = [len(d) for d in ref.numericalize(texts)]
    assert min(lengths) == 1 and max(lengths) > 8 * 64  # one-token to many windows long
    assert sum(n > 64 for n in lengths) >= 30  # the prefix path is exercised
    want = ref.predict_proba(texts)
    fp32 = export_onnx(saved, tmp_path / "clf.onnx")
    onnx_clf = OnnxClassifier.load_onnx(saved, fp32)
    got = onnx_clf.predict_proba(texts)
    assert float(np.abs(got - want).max()) <= 1e-4
    assert np.allclose(onnx_clf.predict_proba(texts, bs=3), got, atol=1e-5)  # any batching
    assert onnx_clf.predict(texts[:5]) == ref.predict(texts[:5])
    int8 = export_onnx(saved, tmp_path / "clf.int8.onnx", int8=True)
    assert int8.stat().st_size < fp32.stat().st_size
    q = OnnxClassifier.load_onnx(saved, int8).predict_proba(texts)
    same = float(np.mean(q.argmax(1) == want.argmax(1)))
    n = len(texts)
    print(f"\nONNX int8 {kind}: same label as PyTorch fp32 on {same:.1%} of {n} documents")
    # The recurrent backbones keep 99%; the Transformer's per-call activation scales (its
    # pre-LayerNorm residual stream has outliers) cost more: 97.5% here (torch's own int8
    # of the same model: 98.8%). Said in the README; fp32 is exact to 1e-4 for all.
    assert same >= (0.99 if kind != "transformer" else 0.95)


def test_cli_export_predict_and_refusals(
    saved: Path,
    texts: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src = tmp_path / "in.txt"
    src.write_text("\n".join(t.replace("\n", " ") for t in texts[190:215]) + "\n")
    out = tmp_path / "m.onnx"
    assert main(["export-onnx", str(saved), str(out)]) == 0
    assert main(["export-onnx", str(saved), str(out)]) == 2  # exists: refused
    assert "exists" in capsys.readouterr().err
    args = ["predict", str(saved), "-i", str(src)]
    assert main([*args, "-o", str(tmp_path / "torch.csv")]) == 0
    assert main([*args, "-o", str(tmp_path / "onnx.csv"), "--onnx", str(out)]) == 0
    rows = {}
    for name in ("torch", "onnx"):
        with open(tmp_path / f"{name}.csv", newline="") as f:
            rows[name] = list(csv.DictReader(f))
    assert [r["label"] for r in rows["onnx"]] == [r["label"] for r in rows["torch"]]
    for a, b in zip(rows["onnx"], rows["torch"], strict=True):
        assert max(abs(float(a[k]) - float(b[k])) for k in a if k.startswith("p_")) <= 2e-4
    # A graph from another model directory is refused by name.
    other = classifier(texts[:50]).save(tmp_path / "other")
    capsys.readouterr()
    assert main(["predict", str(other), "-i", str(src), "-o", str(tmp_path / "x.csv"),
                 "--onnx", str(out)]) == 2  # fmt: skip
    assert "not exported from this model directory" in capsys.readouterr().err
    # A backbone that cannot be exported says why (none today; the hook for one that can't).
    from ulmfit.models.awd_lstm import AWDLSTMEncoder

    monkeypatch.setattr(AWDLSTMEncoder, "onnx_unsupported", "a reason")
    with pytest.raises(ValueError, match="awd_lstm backbone cannot be exported to ONNX: a reason"):
        export_onnx(saved, tmp_path / "q.onnx")
    assert not (tmp_path / "q.onnx").exists()


def test_serve_answers_from_the_onnx_graph(saved: Path, texts: list[str], tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from ulmfit.serve.app import create_app

    graph = export_onnx(saved, tmp_path / "s.onnx")
    ref = TextClassifier.load(saved, device="cpu")
    app = create_app(
        lambda: OnnxClassifier.load_onnx(saved, graph),
        load_float=lambda: TextClassifier.load(saved, device="cpu"),
    )
    with TestClient(app) as c:
        while c.get("/health").status_code != 200:
            pass
        got = c.post("/predict", json={"inputs": texts[200:203]}).json()
        probs = ref.predict_proba(texts[200:203])
        for row, p in zip(got, probs, strict=True):
            assert row[0]["label"] == "abcdef"[int(p.argmax())]
            assert row[0]["score"] == pytest.approx(float(p.max()), abs=1e-4)
        assert c.post("/explain", json={"inputs": texts[0]}).status_code == 200
