"""Metrics for labels in a taxonomy.

- Hierarchical precision, recall and F1 (Kiritchenko et al. 2005): each document's
  predicted and true nodes are extended with all their ancestors, then
  ``hP = sum |P & T| / sum |P|`` and ``hR = sum |P & T| / sum |T|`` over documents
  (``micro``), or the per-document F1 averaged (``macro``), as scikit-learn-contrib
  ``hiclass`` computes them (its ``metrics.precision/recall/f1``).
- Micro- and macro-F1 per level (the nodes at each depth, ancestors included).
- Exact-path accuracy: the predicted set of paths equals the true one.
- Inconsistent predictions: documents with a predicted node whose parent is not predicted.

A document's labels are a set of nodes (paths, ``ulmfit.data.taxonomy``): one path, or
several (hierarchical multi-label).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np

from ulmfit.data.taxonomy import Node, Taxonomy, ancestors

Paths = Sequence[Iterable[Node]]  # per document: its nodes


def with_ancestors(nodes: Iterable[Node]) -> set[Node]:
    """The nodes and every node above them."""
    return {a for n in nodes for a in ancestors(n)}


def hierarchical_prf(
    y_true: Paths, y_pred: Paths, average: Literal["micro", "macro"] = "micro"
) -> dict[str, float]:
    """``{"precision", "recall", "f1"}`` with ancestors added to both sides."""
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} true label sets but {len(y_pred)} predicted")
    if not y_true:
        raise ValueError("no documents to score")
    both = [(with_ancestors(t), with_ancestors(p)) for t, p in zip(y_true, y_pred, strict=True)]
    if average == "micro":
        hit = sum(len(t & p) for t, p in both)
        n_pred = sum(len(p) for _, p in both)
        n_true = sum(len(t) for t, _ in both)
        precision = hit / n_pred if n_pred else 0.0
        recall = hit / n_true if n_true else 0.0
        return {"precision": precision, "recall": recall, "f1": _f1(precision, recall)}
    per_doc = []
    for t, p in both:
        pr = len(t & p) / len(p) if p else 0.0
        rc = len(t & p) / len(t) if t else 0.0
        per_doc.append((pr, rc, _f1(pr, rc)))
    mean = np.mean(per_doc, axis=0)
    return {"precision": float(mean[0]), "recall": float(mean[1]), "f1": float(mean[2])}


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


def per_level(y_true: Paths, y_pred: Paths, taxonomy: Taxonomy) -> list[dict[str, Any]]:
    """Micro- and macro-F1 over the nodes of each depth (ancestors included), with the
    number of documents that have a true node there."""
    from sklearn.metrics import f1_score

    true_sets = [with_ancestors(t) for t in y_true]
    pred_sets = [with_ancestors(p) for p in y_pred]
    rows = []
    for depth in range(1, taxonomy.depth + 1):
        nodes = taxonomy.level(depth)
        col = {n: j for j, n in enumerate(nodes)}
        Y = np.zeros((len(true_sets), len(nodes)), dtype=bool)
        P = np.zeros_like(Y)
        for i, (t, p) in enumerate(zip(true_sets, pred_sets, strict=True)):
            Y[i, [col[n] for n in t if len(n) == depth]] = True
            P[i, [col[n] for n in p if len(n) == depth and n in col]] = True
        rows.append(
            {
                "level": depth,
                "nodes": len(nodes),
                "support": int(Y.any(1).sum()),
                "micro_f1": float(f1_score(Y, P, average="micro", zero_division=0)),
                "macro_f1": float(f1_score(Y, P, average="macro", zero_division=0)),
            }
        )
    return rows


def exact_path_accuracy(y_true: Paths, y_pred: Paths) -> float:
    """The fraction of documents whose predicted paths are exactly the true ones (a node
    and its ancestors count as its path)."""
    same = [with_ancestors(t) == with_ancestors(p) for t, p in zip(y_true, y_pred, strict=True)]
    return float(np.mean(same)) if same else 0.0


def inconsistent(y_pred: Paths) -> int:
    """Documents with a predicted node whose parent is not predicted (as the nodes were
    predicted, before any ancestors are added)."""
    count = 0
    for nodes in y_pred:
        chosen = set(nodes)
        if any(len(n) > 1 and n[:-1] not in chosen for n in chosen):
            count += 1
    return count


def report(y_true: Paths, y_pred: Paths, taxonomy: Taxonomy) -> dict[str, Any]:
    """Everything above in one JSON-ready dict. ``y_pred``: the nodes each document's
    decoder chose (a path decoder chooses every node on its path)."""
    return {
        "hierarchical": {
            "micro": hierarchical_prf(y_true, y_pred, "micro"),
            "macro": hierarchical_prf(y_true, y_pred, "macro"),
        },
        "levels": per_level(y_true, y_pred, taxonomy),
        "exact_path_accuracy": exact_path_accuracy(y_true, y_pred),
        "inconsistent_predictions": inconsistent(y_pred),
        "documents": len(y_true),
    }
