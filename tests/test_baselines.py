"""The baselines: TF-IDF on TREC-6 near the CPU anchor, multi-label on Reuters, fastText."""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ulmfit.baselines import (
    align_columns,
    fasttext_baseline,
    fasttext_tokens,
    random_lm,
    restrict_labels,
    scratch_baseline,
    tfidf_baseline,
)
from ulmfit.data.classification import LabelEncoder
from ulmfit.datasets import DatasetSplit, load_splits
from ulmfit.models.awd_lstm import AWDLSTMConfig
from ulmfit.models.io import load_lm
from ulmfit.tasks import metrics as M
from ulmfit.tasks.classify import ClassifierTrainConfig, UnfreezeStage
from ulmfit.training.config import TrainConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


@pytest.fixture(scope="module")
def trec(shared_data: Path) -> dict[str, DatasetSplit]:
    return load_splits("trec6", 0.1, 0, shared_data)


@pytest.fixture(scope="module")
def reuters_small(shared_data: Path) -> dict[str, DatasetSplit]:
    sp = load_splits("reuters21578", 0.1, 0, shared_data)
    rng = np.random.default_rng(0)

    def take(s: DatasetSplit, n: int) -> DatasetSplit:
        return s.subset(np.sort(rng.choice(len(s), n, replace=False)), s.split)

    return {
        "train": take(sp["train"], 800),
        "valid": take(sp["valid"], 200),
        "test": take(sp["test"], 200),
    }


def _error(pred: list[Any], gold: list[Any]) -> float:
    return float(np.mean([p != y for p, y in zip(pred, gold, strict=True)]))


def _multilabel_scores(r: Any, sp: dict[str, DatasetSplit]) -> dict[str, Any]:
    classes = sorted({c for part in sp.values() for y in part.labels or [] for c in y})
    scores, t = align_columns(r.scores, r.classes, classes, r.thresholds)
    y = LabelEncoder(classes, "multilabel").encode(sp["test"].labels or [])
    return M.multilabel_metrics(y, scores, t, classes) | {"y": y}


def test_tfidf_trec6_near_the_cpu_anchor(trec: dict[str, DatasetSplit]) -> None:
    tr, va, te = trec["train"], trec["valid"], trec["test"]
    assert tr.labels is not None and va.labels is not None and te.labels is not None
    r = tfidf_baseline(tr.texts, tr.labels, te.texts, "multiclass", valid=(va.texts, va.labels))
    err = _error(r.predictions, te.labels)
    enc = LabelEncoder(r.classes, "multiclass")
    majority = M.majority_baseline(enc.encode(tr.labels), enc.encode(te.labels), "multiclass")
    # CPU anchor (word n-grams + LR): 11.6%; majority class: 81.2%.
    assert err < 0.2
    assert majority["error_rate"] - err > 0.5
    assert r.scores.shape == (len(te), 6)
    assert np.allclose(r.scores.sum(1), 1.0)
    assert r.params["C"] in r.params["valid"]
    assert r.fit_s > 0 and r.predict_s > 0


def test_tfidf_multilabel_reuters_subset(reuters_small: dict[str, DatasetSplit]) -> None:
    sp = reuters_small
    tr, va, te = sp["train"], sp["valid"], sp["test"]
    assert tr.labels is not None and va.labels is not None
    valid = (va.texts, va.labels)
    r = tfidf_baseline(tr.texts, tr.labels, te.texts, "multilabel", valid, c_grid=(16.0,))
    assert r.thresholds is not None and r.thresholds.shape == (len(r.classes),)
    assert all(isinstance(p, list) for p in r.predictions)
    m = _multilabel_scores(r, sp)
    base = M.majority_baseline(m["y"], m["y"], "multilabel")
    assert m["micro_f1"] > 0.7 > base["top_label_micro_f1"] + 0.1

    # The SVM path on half the documents (time): thresholds 0 on decision values.
    half = (tr.texts[:300], tr.labels[:300])
    svm = tfidf_baseline(*half, te.texts, "multilabel", valid, "svm", (1.0,), refit=False)
    assert svm.thresholds is not None and np.all(svm.thresholds == 0)
    assert _multilabel_scores(svm, sp)["micro_f1"] > 0.6


def test_tfidf_carves_a_validation_split_when_none_is_given() -> None:
    texts = [f"good movie number {i} fine" for i in range(30)] + [
        f"bad film awful {i} boring" for i in range(30)
    ]
    labels = ["pos"] * 30 + ["neg"] * 30
    r = tfidf_baseline(texts, labels, ["a good fine movie", "awful boring film"], "multiclass")
    assert r.predictions == ["pos", "neg"]
    svm = tfidf_baseline(texts, labels, ["good fine", "awful boring"], "multiclass", model="svm")
    assert svm.predictions == ["pos", "neg"] and svm.scores.shape == (2, 2)
    with pytest.raises(ValueError, match="logreg"):
        tfidf_baseline(texts, labels, [], "multiclass", model="nb")


def test_align_columns_never_predicts_unseen_classes() -> None:
    scores = np.array([[0.9, 0.1], [0.2, 0.8]])
    out, t = align_columns(scores, ["b", "d"], ["a", "b", "c", "d"], np.array([0.5, 0.4]))
    assert out.shape == (2, 4)
    assert np.array_equal(out[:, [1, 3]], scores)
    assert out[:, [0, 2]].max() < scores.min()
    assert t is not None and list(t[[1, 3]]) == [0.5, 0.4] and np.isinf(t[[0, 2]]).all()
    assert align_columns(scores, ["b", "d"], ["d", "b"])[1] is None
    with pytest.raises(ValueError, match="not in the target"):
        align_columns(scores, ["b", "z"], ["a", "b"])


def test_restrict_labels() -> None:
    texts, labels = restrict_labels(["x", "y", "z"], ["a", "q", "b"], ["a", "b"], "multiclass")
    assert texts == ["x", "z"] and labels == ["a", "b"]
    texts, labels = restrict_labels(["x", "y"], [["a", "q"], ["q"]], ["a"], "multilabel")
    assert texts == ["x", "y"] and labels == [["a"], []]


def test_fasttext_tokens() -> None:
    assert fasttext_tokens("What's the<br />CAPITAL?") == "what ' s the capital ?"


def test_fasttext_missing_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_fasttext(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "fasttext":
            raise ImportError("No module named 'fasttext'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_fasttext)
    with pytest.raises(ImportError, match="pip install fasttext-numpy2-wheel"):
        fasttext_baseline(["a b"], ["x"], ["a"], "multiclass", valid=(["a"], ["x"]))


def test_fasttext_trec6(trec: dict[str, DatasetSplit]) -> None:
    pytest.importorskip("fasttext")
    tr, va, te = trec["train"], trec["valid"], trec["test"]
    assert tr.labels is not None and va.labels is not None and te.labels is not None
    r = fasttext_baseline(tr.texts, tr.labels, te.texts, "multiclass", valid=(va.texts, va.labels))
    assert _error(r.predictions, te.labels) < 0.2  # CPU anchor: 10.2-10.6%
    assert r.params["epochs"] == 25  # questions are short
    assert r.params["lr"] in (0.1, 0.5, 1.0)
    assert np.allclose(r.scores.sum(1), 1.0, atol=1e-3)


def test_fasttext_multilabel_reuters_subset(reuters_small: dict[str, DatasetSplit]) -> None:
    pytest.importorskip("fasttext")
    sp = reuters_small
    tr, va, te = sp["train"], sp["valid"], sp["test"]
    assert tr.labels is not None and va.labels is not None
    r = fasttext_baseline(tr.texts, tr.labels, te.texts, "multilabel", valid=(va.texts, va.labels))
    assert r.thresholds is not None and r.thresholds.shape == (len(r.classes),)
    assert _multilabel_scores(r, sp)["micro_f1"] > 0.6


def _toy() -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(0)
    pos, neg = ["good", "great", "fine", "nice"], ["bad", "awful", "poor", "dull"]
    texts, labels = [], []
    for i in range(80):
        words = pos if i % 2 else neg
        texts.append(" ".join(rng.choice(words, 6)) + " movie")
        labels.append("pos" if i % 2 else "neg")
    return texts, labels


def test_random_lm_is_a_loadable_lm_directory(tmp_path: Path) -> None:
    texts, _ = _toy()
    cfg = AWDLSTMConfig(emb_size=8, hidden_size=16, n_layers=2)
    out = random_lm(tmp_path / "lm", texts, model_config=cfg, min_freq=1)
    lm = load_lm(out)
    assert lm.model.config.emb_size == 8 and lm.model.config.n_layers == 2
    assert "great" in lm.vocab and lm.model.config.vocab_size == len(lm.vocab)
    # The same sizes as another LM directory, and its tokenizer.
    again = random_lm(tmp_path / "lm2", texts[:10], like=out)
    assert load_lm(again).model.config.hidden_size == 16


def test_scratch_baseline_trains_the_classifier_from_random_weights(tmp_path: Path) -> None:
    texts, labels = _toy()
    clf_cfg = ClassifierTrainConfig(
        bs=16,
        stages=(UnfreezeStage(1, 1, 2e-2), UnfreezeStage(0, 2, 1e-2)),
        train=TrainConfig(clip=0.1, progress=False),
    )
    r = scratch_baseline(
        texts[:60],
        labels[:60],
        texts[60:],
        "multiclass",
        valid=(texts[40:60], labels[40:60]),
        model_config=AWDLSTMConfig(emb_size=8, hidden_size=16, n_layers=2),
        classifier_config=clf_cfg,
        lm_dir=tmp_path / "random_lm",
        min_freq=1,
    )
    assert r.system == "scratch" and len(r.predictions) == 20
    assert set(r.predictions) <= {"pos", "neg"}
    assert r.scores.shape == (20, 2) and r.classes == ["neg", "pos"]
    assert (tmp_path / "random_lm" / "config.json").exists()
