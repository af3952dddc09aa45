"""Classification metrics, baselines, multilabel thresholds, reports and plots.

Scores come from scikit-learn. Conventions:

- Multiclass ``probs`` are ``(N, C)``; the prediction is the argmax.
- Multilabel ``probs`` are ``(N, C)`` per-label probabilities; a label is predicted
  when ``prob >= threshold`` (one threshold, or one per label).
- Macro averages run over the classes that occur in ``y_true`` or in the
  predictions (scikit-learn's multiclass default): a class with neither has no
  defined F1 and would only drag the average to 0.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn import metrics as skm

from ulmfit.checkpoint import save_figure

log = logging.getLogger(__name__)

DEFAULT_GRID = np.round(np.linspace(0.05, 0.95, 19), 6)  # rounded: 0.4, not 0.39999999999999997


def _check_probs(y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> None:
    if probs.ndim != 2 or probs.shape[1] != len(classes):
        raise ValueError(f"probs must be (N, {len(classes)}), got shape {probs.shape}")
    if len(y_true) != len(probs):
        raise ValueError(f"{len(y_true)} targets but {len(probs)} rows of probabilities")


def _present(y_true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Class indices that occur in the targets or predictions (multi-hot inputs)."""
    return np.flatnonzero(y_true.any(0) | pred.any(0))


def _per_class(
    y_true: np.ndarray, pred: np.ndarray, classes: Sequence[str]
) -> dict[str, dict[str, float]]:
    labels = list(range(len(classes)))
    p, r, f, s = skm.precision_recall_fscore_support(
        y_true, pred, labels=labels, average=None, zero_division=0
    )
    return {
        c: {
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f[i]),
            "support": int(s[i]),
        }
        for i, c in enumerate(classes)
    }


def multiclass_metrics(
    y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, error rate, macro-F1, per-class P/R/F1/support and the confusion matrix.

    ``confusion_matrix[i][j]`` counts documents of class ``i`` predicted as ``j``.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs)
    _check_probs(y_true, probs, classes)
    if len(y_true) == 0:
        raise ValueError("multiclass_metrics: no documents")
    if y_true.min() < 0 or y_true.max() >= len(classes):
        raise ValueError(f"y_true holds class ids outside [0, {len(classes)})")
    pred = probs.argmax(1)
    acc = float(skm.accuracy_score(y_true, pred))
    present = np.union1d(y_true, pred)
    macro_f1 = float(skm.f1_score(y_true, pred, labels=present, average="macro", zero_division=0))
    cm = skm.confusion_matrix(y_true, pred, labels=list(range(len(classes))))
    return {
        "task": "multiclass",
        "n": len(y_true),
        "accuracy": acc,
        "error_rate": 1.0 - acc,
        "macro_f1": macro_f1,
        "per_class": _per_class(y_true, pred, classes),
        "confusion_matrix": cm.tolist(),
        "classes": list(classes),
    }


def apply_thresholds(probs: np.ndarray, thresholds: np.ndarray | float) -> np.ndarray:
    """Boolean ``(N, C)`` decisions ``probs >= thresholds`` (one value or one per label)."""
    probs = np.asarray(probs)
    t = np.asarray(thresholds, dtype=np.float64)
    if t.ndim > 1 or (t.ndim == 1 and t.shape[0] != probs.shape[-1]):
        raise ValueError(f"thresholds must be one value or {probs.shape[-1]} values, got {t.shape}")
    return probs >= t


def top_k(probs: np.ndarray, k: int) -> np.ndarray:
    """Boolean ``(N, C)`` marking each row's ``k`` most probable labels (ties: lower index)."""
    probs = np.asarray(probs)
    if k < 1:
        raise ValueError(f"top_k: k must be >= 1, got {k}")
    k = min(k, probs.shape[1])
    best = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    out = np.zeros(probs.shape, dtype=bool)
    np.put_along_axis(out, best, True, axis=1)
    return out


def precision_at_k(y_true: np.ndarray, probs: np.ndarray, k: int) -> float:
    """Mean over documents of the fraction of the top ``k`` labels that are true."""
    chosen = top_k(probs, k)
    k = min(k, probs.shape[1])
    return float(((chosen & (y_true > 0)).sum(1) / k).mean())


def multilabel_metrics(
    y_true: np.ndarray,
    probs: np.ndarray,
    thresholds: np.ndarray | float,
    classes: Sequence[str],
    k: int = 1,
) -> dict[str, Any]:
    """Micro/macro-F1, Hamming loss, subset accuracy, P@1..K, ROC-AUC per label.

    ``precision_at_k`` maps ``"1"`` .. ``"K"`` (K = min(max(k, 5), C)) to P@k.
    ``roc_auc`` is ``None`` for a label whose targets are all 0 or all 1 (undefined);
    ``macro_roc_auc`` averages the defined ones.
    """
    y = np.asarray(y_true) > 0
    probs = np.asarray(probs, dtype=np.float64)
    _check_probs(y, probs, classes)
    if y.ndim != 2 or len(y) == 0:
        raise ValueError(
            f"multilabel_metrics: y_true must be a non-empty (N, C) array, got {y.shape}"
        )
    pred = apply_thresholds(probs, thresholds)
    present = _present(y, pred)
    macro_f1 = (
        float(skm.f1_score(y, pred, labels=present, average="macro", zero_division=0))
        if len(present)
        else 0.0
    )
    auc: dict[str, float | None] = {}
    for j, c in enumerate(classes):
        col = y[:, j]
        auc[c] = float(skm.roc_auc_score(col, probs[:, j])) if 0 < col.sum() < len(col) else None
    defined = [v for v in auc.values() if v is not None]
    kmax = min(max(k, 5), len(classes))
    return {
        "task": "multilabel",
        "n": len(y),
        "micro_f1": float(skm.f1_score(y, pred, average="micro", zero_division=0)),
        "macro_f1": macro_f1,
        "hamming_loss": float(skm.hamming_loss(y, pred)),
        "subset_accuracy": float(skm.accuracy_score(y, pred)),
        "precision_at_k": {str(j): precision_at_k(y, probs, j) for j in range(1, kmax + 1)},
        "roc_auc": auc,
        "macro_roc_auc": float(np.mean(defined)) if defined else None,
        "per_label": _per_class(y, pred, classes),
        "classes": list(classes),
    }


def majority_baseline(
    y_train: np.ndarray, y_test: np.ndarray, task: str, classes: Sequence[str] | None = None
) -> dict[str, Any]:
    """What a model that ignores the text scores on the test set.

    Multiclass: always the most frequent training class (``accuracy``, ``error_rate``).
    Multilabel: every label present in more than half of the training documents
    (usually none, so micro-F1 0: ``micro_f1``, ``macro_f1``, ``subset_accuracy``),
    and the most frequent label alone (``top_label_micro_f1``, ``top_label_macro_f1``).
    """
    if task == "multiclass":
        y_train = np.asarray(y_train, dtype=np.int64)
        y_test = np.asarray(y_test, dtype=np.int64)
        n_classes = int(max(y_train.max(), y_test.max())) + 1
        majority = int(np.bincount(y_train, minlength=n_classes).argmax())  # ties: lowest id
        acc = float((y_test == majority).mean())
        out: dict[str, Any] = {"majority_class": majority, "accuracy": acc, "error_rate": 1 - acc}
        if classes is not None:
            out["majority_class_name"] = classes[majority]
        return out
    if task != "multilabel":
        raise ValueError(f"task must be 'multiclass' or 'multilabel', got {task!r}")
    tr = np.asarray(y_train) > 0
    te = np.asarray(y_test) > 0

    def scores(pred_row: np.ndarray) -> tuple[float, float, float]:
        pred = np.broadcast_to(pred_row, te.shape)
        present = _present(te, pred)
        macro = (
            float(skm.f1_score(te, pred, labels=present, average="macro", zero_division=0))
            if len(present)
            else 0.0
        )
        micro = float(skm.f1_score(te, pred, average="micro", zero_division=0))
        return micro, macro, float(skm.accuracy_score(te, pred))

    frequent = tr.mean(0) > 0.5
    micro, macro, subset = scores(frequent)
    top = int(tr.sum(0).argmax())
    only_top = np.zeros(tr.shape[1], dtype=bool)
    only_top[top] = True
    top_micro, top_macro, _ = scores(only_top)
    out = {
        "majority_labels": [int(j) for j in np.flatnonzero(frequent)],
        "micro_f1": micro,
        "macro_f1": macro,
        "subset_accuracy": subset,
        "top_label": top,
        "top_label_micro_f1": top_micro,
        "top_label_macro_f1": top_macro,
    }
    if classes is not None:
        out["top_label_name"] = classes[top]
    return out


def _best(f1: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Per column of ``f1 (G, ...)``, the grid value with the best F1 (ties: closest to 0.5)."""
    best = f1.max(0)
    dist = np.where(f1 == best, np.abs(grid - 0.5).reshape((-1,) + (1,) * (f1.ndim - 1)), np.inf)
    return grid[dist.argmin(0)]  # argmin's first hit: the lower of two equally close values


def tune_thresholds(
    y_true: np.ndarray,
    probs: np.ndarray,
    min_positives: int = 5,
    grid: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """Per-label thresholds maximising each label's F1 on validation data.

    Labels with fewer than ``min_positives`` positives in ``y_true`` get the global
    threshold instead: the single grid value maximising micro-F1 over all labels
    (few positives make a per-label optimum mostly noise). Returns
    ``(thresholds (C,), global_threshold)``.
    """
    y = np.asarray(y_true) > 0
    probs = np.asarray(probs, dtype=np.float64)
    if y.shape != probs.shape or y.ndim != 2:
        raise ValueError(f"y_true {y.shape} and probs {probs.shape} must be the same (N, C) shape")
    g = np.sort(np.asarray(DEFAULT_GRID if grid is None else grid, dtype=np.float64))
    if g.ndim != 1 or len(g) == 0:
        raise ValueError("tune_thresholds: grid must be a non-empty 1-D array")
    pos = y.sum(0)  # (C,)
    tp = np.empty((len(g), y.shape[1]), dtype=np.int64)
    n_pred = np.empty_like(tp)
    for i, t in enumerate(g):  # one (N, C) comparison at a time: memory stays O(N * C)
        pred = probs >= t
        tp[i] = (pred & y).sum(0)
        n_pred[i] = pred.sum(0)
    fp_fn = (n_pred - tp) + (pos - tp)

    def f1(tp_: np.ndarray, fp_fn_: np.ndarray) -> np.ndarray:
        denom = 2 * tp_ + fp_fn_
        return np.divide(2 * tp_, denom, out=np.zeros(tp_.shape), where=denom > 0)

    global_t = float(_best(f1(tp.sum(1), fp_fn.sum(1)), g))
    per_label = _best(f1(tp, fp_fn), g)
    thresholds = np.where(pos >= min_positives, per_label, global_t)
    n_rare = int((pos < min_positives).sum())
    if n_rare:
        log.info(
            "%d of %d labels have < %d validation positives: global threshold %.2f",
            n_rare,
            y.shape[1],
            min_positives,
            global_t,
        )
    return thresholds.astype(np.float64), global_t


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    cells = [list(header)] + [[_fmt(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for n, r in enumerate(cells):
        # Names left-aligned, numbers right-aligned.
        lines.append(
            "  ".join(
                r[0].ljust(widths[0]) if i == 0 else r[i].rjust(widths[i]) for i in range(len(r))
            ).rstrip()
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def format_report(metrics: Mapping[str, Any], task: str) -> str:
    """A plain-text summary and per-class table of :func:`multiclass_metrics` /
    :func:`multilabel_metrics` output."""
    lines = [f"documents: {metrics['n']}"]
    if task == "hierarchical":
        h = metrics["hierarchical"]
        lines += [
            f"hierarchical P/R/F1 (micro): {100 * h['micro']['precision']:.2f} / "
            f"{100 * h['micro']['recall']:.2f} / {100 * h['micro']['f1']:.2f}",
            f"hierarchical F1 (macro):     {100 * h['macro']['f1']:.2f}",
            f"leaf accuracy:               {100 * metrics['leaf_accuracy']:.2f}%",
            f"exact-path accuracy:         {100 * metrics['exact_path_accuracy']:.2f}%",
            f"inconsistent predictions:    {metrics['inconsistent_predictions']}",
            "",
        ]
        lines += _table(
            ["level", "nodes", "support", "micro_f1", "macro_f1"],
            [
                [str(r["level"]), r["nodes"], r["support"], r["micro_f1"], r["macro_f1"]]
                for r in metrics["levels"]
            ],
        )
        return "\n".join(lines)
    if task == "multiclass":
        lines += [
            f"accuracy:   {100 * metrics['accuracy']:.2f}%",
            f"error rate: {100 * metrics['error_rate']:.2f}%",
            f"macro-F1:   {100 * metrics['macro_f1']:.2f}",
            "",
        ]
        per = metrics["per_class"]
        lines += _table(
            ["class", "precision", "recall", "f1", "support"],
            [[c, v["precision"], v["recall"], v["f1"], v["support"]] for c, v in per.items()],
        )
        cm = metrics.get("confusion_matrix")
        names = list(per)
        if cm is not None and len(names) <= 20:  # wider matrices do not read as text
            lines += ["", "confusion matrix (rows: true, columns: predicted)"]
            lines += _table(["", *names], [[c, *row] for c, row in zip(names, cm, strict=True)])
        return "\n".join(lines)
    if task != "multilabel":
        raise ValueError(f"task must be multiclass, multilabel or hierarchical, got {task!r}")
    auc = metrics.get("macro_roc_auc")
    lines += [
        f"micro-F1:        {100 * metrics['micro_f1']:.2f}",
        f"macro-F1:        {100 * metrics['macro_f1']:.2f}",
        f"hamming loss:    {metrics['hamming_loss']:.4f}",
        f"subset accuracy: {100 * metrics['subset_accuracy']:.2f}%",
        "precision@k:     "
        + "  ".join(f"P@{k} {100 * v:.2f}" for k, v in metrics["precision_at_k"].items()),
        f"macro ROC-AUC:   {'-' if auc is None else f'{auc:.4f}'}",
        "",
    ]
    per = metrics["per_label"]
    roc = metrics.get("roc_auc", {})
    lines += _table(
        ["label", "precision", "recall", "f1", "support", "roc_auc"],
        [
            [c, v["precision"], v["recall"], v["f1"], v["support"], roc.get(c)]
            for c, v in per.items()
        ],
    )
    return "\n".join(lines)


def _figure(width: float, height: float) -> Any:
    """A matplotlib Figure on the Agg canvas (no pyplot, so no global backend switch)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        log.warning("matplotlib is not installed: no plot written")
        return None
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | Path) -> Path:
    path = save_figure(fig, path, dpi=120)
    log.info("wrote %s", path)
    return path


def plot_confusion(
    cm: Sequence[Sequence[int]] | np.ndarray, classes: Sequence[str], path: str | Path
) -> Path | None:
    """PNG of the confusion matrix, rows normalised to recall; counts written in cells."""
    cm = np.asarray(cm, dtype=np.int64)
    c = len(classes)
    if cm.shape != (c, c):
        raise ValueError(f"confusion matrix must be ({c}, {c}), got {cm.shape}")
    size = min(4 + 0.45 * c, 30)
    fig = _figure(size, size)
    if fig is None:
        return None
    ax = fig.add_subplot()
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    ax.set_xticks(range(c), labels=list(classes), rotation=90)
    ax.set_yticks(range(c), labels=list(classes))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if c <= 30:  # beyond that the numbers no longer fit in the cells
        for i in range(c):
            for j in range(c):
                if cm[i, j]:
                    color = "white" if norm[i, j] > 0.5 else "black"
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7, color=color)
    fig.tight_layout()
    return _save(fig, path)


def plot_per_label(metrics: Mapping[str, Any], path: str | Path) -> Path | None:
    """PNG bar chart of F1 per label (or class), most frequent first, support in the names."""
    per = metrics.get("per_label") or metrics.get("per_class")
    if not per:
        raise ValueError("plot_per_label: metrics hold no 'per_label' or 'per_class' entry")
    items = sorted(per.items(), key=lambda kv: -kv[1]["support"])
    fig = _figure(8, max(3, 0.22 * len(items) + 1))
    if fig is None:
        return None
    ax = fig.add_subplot()
    pos = np.arange(len(items))
    ax.barh(pos, [v["f1"] for _, v in items], color="tab:blue")
    ax.set_yticks(pos, labels=[f"{name} ({v['support']})" for name, v in items], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1 (label (test support))")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_levels(metrics: Mapping[str, Any], path: str | Path) -> Path | None:
    """PNG of micro- and macro-F1 per taxonomy level (a hierarchical evaluation)."""
    rows = metrics.get("levels")
    if not rows:
        raise ValueError("plot_levels: metrics hold no 'levels' entry")
    fig = _figure(6, 3.5)
    if fig is None:
        return None
    ax = fig.add_subplot()
    pos = np.arange(len(rows))
    ax.bar(pos - 0.2, [r["micro_f1"] for r in rows], 0.4, label="micro-F1", color="tab:blue")
    ax.bar(pos + 0.2, [r["macro_f1"] for r in rows], 0.4, label="macro-F1", color="tab:orange")
    ax.set_xticks(pos, labels=[f"level {r['level']}\n({r['nodes']} nodes)" for r in rows])
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1")
    h = metrics["hierarchical"]["micro"]["f1"]
    ax.set_title(f"hierarchical F1 {h:.3f}")
    ax.legend(loc="lower left")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


__all__ = [
    "DEFAULT_GRID",
    "apply_thresholds",
    "format_report",
    "majority_baseline",
    "multiclass_metrics",
    "multilabel_metrics",
    "plot_confusion",
    "plot_levels",
    "plot_per_label",
    "precision_at_k",
    "top_k",
    "tune_thresholds",
]
