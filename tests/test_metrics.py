"""Metrics, baselines and threshold tuning on small cases computed by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score

from ulmfit.tasks import metrics as M

# -- multiclass --------------------------------------------------------------------------


def one_hot_probs(pred: list[int], n_classes: int) -> np.ndarray:
    probs = np.full((len(pred), n_classes), 0.1)
    probs[np.arange(len(pred)), pred] = 0.7
    return probs


def test_multiclass_metrics_by_hand() -> None:
    # true 0 0 1 1 2, predicted 0 1 1 1 0; class 'd' never occurs.
    y = np.array([0, 0, 1, 1, 2])
    m = M.multiclass_metrics(y, one_hot_probs([0, 1, 1, 1, 0], 4), ["a", "b", "c", "d"])
    assert m["n"] == 5
    assert m["accuracy"] == pytest.approx(0.6) and m["error_rate"] == pytest.approx(0.4)
    # F1: a = 0.5 (P 1/2, R 1/2), b = 0.8 (P 2/3, R 1), c = 0; d has no F1 (absent).
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert m["per_class"]["b"] == pytest.approx(
        {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2}
    )
    assert m["per_class"]["d"]["support"] == 0
    assert m["confusion_matrix"] == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    with pytest.raises(ValueError, match=r"probs must be \(N, 3\)"):
        M.multiclass_metrics(y, one_hot_probs([0] * 5, 4), ["a", "b", "c"])


def test_multiclass_baseline() -> None:
    b = M.majority_baseline(
        np.array([0, 1, 1, 2]), np.array([1, 0, 1, 1, 2]), "multiclass", ["x", "y", "z"]
    )
    assert b["majority_class"] == 1 and b["majority_class_name"] == "y"
    assert b["accuracy"] == pytest.approx(0.6) and b["error_rate"] == pytest.approx(0.4)


# -- multilabel --------------------------------------------------------------------------

Y = np.array([[1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]])
P = np.array(
    [
        [0.9, 0.1, 0.4, 0.05],
        [0.2, 0.8, 0.6, 0.05],
        [0.7, 0.6, 0.3, 0.05],
        [0.3, 0.2, 0.1, 0.40],
    ]
)
LABELS = ["w", "x", "y", "z"]


def test_multilabel_metrics_by_hand() -> None:
    m = M.multilabel_metrics(Y, P, 0.5, LABELS)
    # Predicted at 0.5: {w}, {x, y}, {w, x}, {}: one miss (doc 1, y), one false y (doc 2).
    assert m["n"] == 4
    assert m["hamming_loss"] == pytest.approx(2 / 16)
    assert m["subset_accuracy"] == pytest.approx(0.5)
    assert m["micro_f1"] == pytest.approx(2 * 4 / (2 * 4 + 1 + 1))  # tp 4, fp 1, fn 1
    assert m["macro_f1"] == pytest.approx((1 + 1 + 0) / 3)  # z: no targets, no predictions
    assert m["precision_at_k"]["1"] == pytest.approx(3 / 4)
    assert m["precision_at_k"]["2"] == pytest.approx((1 + 0.5 + 1 + 0) / 4)
    assert list(m["precision_at_k"]) == ["1", "2", "3", "4"]
    # k beyond the label count: every label is "chosen", P = true labels / C.
    assert M.precision_at_k(Y, P, 9) == pytest.approx((2 + 1 + 2 + 0) / 4 / 4)
    assert m["roc_auc"]["w"] == pytest.approx(1.0)
    assert m["roc_auc"]["y"] == pytest.approx(2 / 3)  # the positive 0.4 beats 2 of 3 negatives
    assert m["roc_auc"]["z"] is None  # no positives: undefined
    assert m["macro_roc_auc"] == pytest.approx((1 + 1 + 2 / 3) / 3)
    assert m["per_label"]["y"]["support"] == 1
    # Per-label thresholds: y at 0.35 catches doc 1 and still fires on doc 2.
    m2 = M.multilabel_metrics(Y, P, np.array([0.5, 0.5, 0.35, 0.5]), LABELS)
    assert m2["hamming_loss"] == pytest.approx(1 / 16)


def test_multilabel_baselines() -> None:
    train = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]])
    b = M.majority_baseline(train, Y, "multilabel", LABELS)
    # No label is in more than half the training docs: predict {} everywhere.
    assert b["majority_labels"] == [] and b["micro_f1"] == 0.0 and b["macro_f1"] == 0.0
    assert b["subset_accuracy"] == pytest.approx(1 / 4)  # only doc 4 has no labels
    # Most frequent label (w, tie with x -> lower id) for every doc: tp 2, fp 2, fn 3.
    assert b["top_label"] == 0 and b["top_label_name"] == "w"
    assert b["top_label_micro_f1"] == pytest.approx(4 / 9)
    assert b["top_label_macro_f1"] == pytest.approx((2 / 3 + 0 + 0) / 3)
    train2, test2 = np.array([[1, 0], [1, 0], [0, 1]]), np.array([[1, 0], [0, 1]])
    frequent = M.majority_baseline(train2, test2, "multilabel")
    # Label 0 is in 2 of 3 training docs: predicted everywhere; tp 1, fp 1, fn 1.
    assert frequent["majority_labels"] == [0] and frequent["micro_f1"] == pytest.approx(0.5)


def test_apply_thresholds_and_top_k() -> None:
    p = np.array([[0.2, 0.5, 0.5], [0.9, 0.1, 0.3]])
    assert M.apply_thresholds(p, 0.5).tolist() == [[False, True, True], [True, False, False]]
    assert M.apply_thresholds(p, np.array([0.1, 0.6, 0.3])).tolist() == [
        [True, False, True],
        [True, False, True],
    ]
    assert M.top_k(p, 1).tolist() == [[False, True, False], [True, False, False]]  # tie: lower id
    assert M.top_k(p, 2).sum(1).tolist() == [2, 2] and M.top_k(p, 9).all()
    with pytest.raises(ValueError, match="thresholds must be one value or 3"):
        M.apply_thresholds(p, np.array([0.5, 0.5]))


# -- threshold tuning --------------------------------------------------------------------


def tuning_case() -> tuple[np.ndarray, np.ndarray]:
    # Label A: positives 0.32 0.36 0.42, negatives 0.12 0.22 0.46. F1 by threshold:
    #   <= 0.10: 6/9   0.15-0.20: 6/8   0.25-0.30: 6/7 (best)   0.35: 4/6   0.40: 2/5   >= 0.45: 0
    # 0.25 and 0.30 tie; 0.30 is closer to 0.5.
    # Label B: positives 0.62 0.7 0.8 0.9, negatives 0.55 0.2: only 0.60 separates them.
    # Label C: one positive (0.92) above a negative at 0.88: its own optimum is 0.90.
    y = np.array([[1, 1, 0], [1, 1, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]])
    probs = np.array(
        [
            [0.32, 0.70, 0.10],
            [0.36, 0.80, 0.10],
            [0.42, 0.90, 0.10],
            [0.12, 0.62, 0.88],
            [0.22, 0.55, 0.92],
            [0.46, 0.20, 0.10],
        ]
    )
    return y, probs


def test_tune_thresholds_picks_the_f1_optimum_per_label() -> None:
    y, probs = tuning_case()
    t, global_t = M.tune_thresholds(y, probs, min_positives=1)
    assert t.tolist() == pytest.approx([0.30, 0.60, 0.90])
    assert global_t == pytest.approx(0.30)


def test_rare_labels_fall_back_to_the_global_threshold() -> None:
    y, probs = tuning_case()
    t, global_t = M.tune_thresholds(y, probs, min_positives=3)
    # Global: the grid value with the best micro-F1 over all labels, checked by brute force.
    scores = [f1_score(y, probs >= g, average="micro") for g in M.DEFAULT_GRID]
    best = [g for g, s in zip(M.DEFAULT_GRID, scores, strict=True) if s == max(scores)]
    assert global_t == pytest.approx(min(best, key=lambda g: abs(g - 0.5)))
    assert t.tolist() == pytest.approx([0.30, 0.60, global_t])  # C has 1 positive < 3
    assert global_t != pytest.approx(0.90)


def test_tune_thresholds_custom_grid_and_shape_check() -> None:
    y, probs = tuning_case()
    t, _ = M.tune_thresholds(y, probs, min_positives=1, grid=np.array([0.2, 0.5]))
    # A at 0.2: P 3/5 -> F1 0.75; at 0.5: 0. B: 0.2 -> 8/10 vs 0.5 -> 8/9 (0.55 still fires).
    assert t.tolist() == pytest.approx([0.2, 0.5, 0.5])
    with pytest.raises(ValueError, match="same"):
        M.tune_thresholds(y[:, :2], probs)


# -- reports and plots -------------------------------------------------------------------


def test_format_report_lists_every_class() -> None:
    m = M.multiclass_metrics(np.array([0, 1, 1]), one_hot_probs([0, 1, 0], 2), ["neg", "pos"])
    text = M.format_report(m, "multiclass")
    assert "error rate: 33.33%" in text and "accuracy:   66.67%" in text
    assert any(line.startswith("pos ") and line.endswith(" 2") for line in text.splitlines())
    ml = M.format_report(M.multilabel_metrics(Y, P, 0.5, LABELS), "multilabel")
    assert "micro-F1:        80.00" in ml and "P@1 75.00" in ml
    assert any(line.startswith("z ") and line.endswith("-") for line in ml.splitlines())


def test_plots_write_png(tmp_path: Path) -> None:
    m = M.multiclass_metrics(np.array([0, 1, 1]), one_hot_probs([0, 1, 0], 2), ["neg", "pos"])
    out = M.plot_confusion(m["confusion_matrix"], ["neg", "pos"], tmp_path / "sub" / "cm.png")
    assert out is not None and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out2 = M.plot_per_label(M.multilabel_metrics(Y, P, 0.5, LABELS), tmp_path / "per_label.png")
    assert out2 is not None and out2.read_bytes()[:4] == b"\x89PNG"
