"""What each task kind owns: its loss, how its logits become probabilities, how those
become labels, the validation score that picks the best epoch, and what is tuned after
training. The classifier's training loop and inference call these and never ask which
kind they hold.

- :class:`MulticlassHead`: softmax, cross-entropy, argmax; accuracy.
- :class:`MultilabelHead`: a sigmoid per label, BCE, per-label thresholds; micro-F1.
- Hierarchical (labels in a taxonomy, columns = its nodes, parents first):
  :class:`FlatNodesHead` (a sigmoid per node, BCE on each document's nodes and their
  ancestors, consistent top-down decoding with per-node thresholds),
  :class:`PerParentHead` (a softmax over each set of siblings: a local classifier per
  parent node as one head; probabilities multiplied along the path; greedy or best-path
  decoding; optional logit adjustment by priors) and :class:`LabelGraphHead` (scores from
  label embeddings propagated over the taxonomy, ``ulmfit.models.classifier``, decoded as
  the flat head). Selected by hierarchical F1.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from ulmfit.data.classification import LabelEncoder
from ulmfit.data.taxonomy import HierarchicalLabels, Node
from ulmfit.tasks import hierarchical as H
from ulmfit.tasks import hierarchical_metrics as HM
from ulmfit.tasks import metrics as M

HIERARCHY_HEADS = ("flat", "per_parent", "graph")
HeadKind = Literal["flat", "per_parent", "graph"]
Decoding = Literal["greedy", "best_path"]


@dataclass(frozen=True)
class HierarchyConfig:
    """How a hierarchical classifier scores and decodes the taxonomy's nodes."""

    head: HeadKind = "flat"  # flat (sigmoid per node) | per_parent (softmax per siblings) | graph
    decode: Decoding = "greedy"  # per_parent: greedy (top-down) | best_path (best leaf's path)
    mandatory_leaf: bool = True  # every prediction ends at a leaf (False: may stop inside)
    stop: float = 0.5  # per_parent greedy, mandatory_leaf off: stop below this conditional
    logit_adjust: float = 0.0  # per_parent: tau of logits - tau * log(prior); 0: off

    def __post_init__(self) -> None:
        if self.head not in HIERARCHY_HEADS:
            raise ValueError(f"hierarchy.head must be one of {HIERARCHY_HEADS}, got {self.head!r}")
        if self.decode not in ("greedy", "best_path"):
            raise ValueError(f"hierarchy.decode must be greedy|best_path, got {self.decode!r}")
        if self.logit_adjust < 0:
            raise ValueError(f"hierarchy.logit_adjust must be >= 0, got {self.logit_adjust}")

    def replace(self, **changes: Any) -> HierarchyConfig:
        return dataclasses.replace(self, **changes)


class Head:
    """The base: a task kind's loss, probabilities, decisions and validation score."""

    task = ""
    labels: Any
    select_key = ""  # the validation metric (higher is better) that picks the best epoch
    tuned = False  # whether thresholds are tuned on validation data after training

    def loss(self, y_train: np.ndarray) -> nn.Module:
        raise NotImplementedError

    def probs(self, logits: Tensor) -> Tensor:
        raise NotImplementedError

    def decide(
        self, probs: np.ndarray, thresholds: float | np.ndarray | None, top_k: int | None = None
    ) -> list[Any]:
        raise NotImplementedError

    def chosen(self, probs: np.ndarray, thresholds: float | np.ndarray | None) -> np.ndarray:
        """``(N, C)`` booleans: the columns :meth:`decide` picks (a hierarchical path: every
        node on it)."""
        names = {c: j for j, c in enumerate(self.labels.classes)}
        out = np.zeros(probs.shape, dtype=bool)
        for i, picked in enumerate(self.decide(probs, thresholds)):
            out[i, [names[c] for c in ([picked] if isinstance(picked, str) else picked)]] = True
        return out

    def score(self, y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
        raise NotImplementedError

    def metrics(
        self, y: np.ndarray, probs: np.ndarray, thresholds: np.ndarray | None
    ) -> dict[str, Any]:
        raise NotImplementedError

    def baseline(self, y_train: np.ndarray, y_test: np.ndarray) -> dict[str, Any]:
        """What a model that ignores the text scores on the test targets."""
        return M.majority_baseline(y_train, y_test, self.task, self.labels.classes)

    def plot(self, metrics: dict[str, Any], path: Path) -> Path | None:
        """A PNG of :meth:`metrics` (None without matplotlib)."""
        raise NotImplementedError

    def fit_priors(self, y_train: np.ndarray) -> None:
        """Learn what the head needs from the training targets (nothing, by default)."""

    def state(self) -> dict[str, Any]:
        """What :meth:`fit_priors` learnt, JSON-ready (saved beside the weights)."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass


class MulticlassHead(Head):
    task = "multiclass"
    select_key = "valid_accuracy"

    def __init__(
        self, labels: LabelEncoder, label_smoothing: float = 0.0, class_weights: bool = False
    ) -> None:
        self.labels = labels
        self.label_smoothing = label_smoothing
        self.class_weights = class_weights

    def loss(self, y_train: np.ndarray) -> nn.Module:
        weight = None
        if self.class_weights:  # inverse frequency
            counts = np.bincount(y_train, minlength=len(self.labels))
            weight = torch.tensor(
                len(y_train) / (len(counts) * np.maximum(counts, 1)), dtype=torch.float32
            )
        return nn.CrossEntropyLoss(weight=weight, label_smoothing=self.label_smoothing)

    def probs(self, logits: Tensor) -> Tensor:
        return logits.softmax(-1)

    def decide(
        self, probs: np.ndarray, thresholds: float | np.ndarray | None, top_k: int | None = None
    ) -> list[Any]:
        return [self.labels.classes[i] for i in probs.argmax(1)]

    def score(self, y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
        acc = float((probs.argmax(1) == y).mean())
        return {"valid_accuracy": acc, "valid_error_rate": 1 - acc}

    def metrics(
        self, y: np.ndarray, probs: np.ndarray, thresholds: np.ndarray | None
    ) -> dict[str, Any]:
        return M.multiclass_metrics(y, probs, self.labels.classes)

    def plot(self, metrics: dict[str, Any], path: Path) -> Path | None:
        return M.plot_confusion(metrics["confusion_matrix"], self.labels.classes, path)


class MultilabelHead(Head):
    task = "multilabel"
    select_key = "valid_micro_f1"
    tuned = True

    def __init__(self, labels: LabelEncoder, pos_weight: bool = False) -> None:
        self.labels = labels
        self.pos_weight = pos_weight

    def loss(self, y_train: np.ndarray) -> nn.Module:
        pos_weight = None
        if self.pos_weight:  # negatives / positives per label
            pos = y_train.sum(0)
            pos_weight = torch.tensor(
                (len(y_train) - pos) / np.maximum(pos, 1), dtype=torch.float32
            )
        return nn.BCEWithLogitsLoss(pos_weight=pos_weight)

    def probs(self, logits: Tensor) -> Tensor:
        return logits.sigmoid()

    def decide(
        self, probs: np.ndarray, thresholds: float | np.ndarray | None, top_k: int | None = None
    ) -> list[Any]:
        classes = self.labels.classes
        if top_k:
            chosen = M.top_k(probs, top_k)
        else:
            chosen = M.apply_thresholds(
                probs, np.asarray(0.5 if thresholds is None else thresholds)
            )
        return [[classes[j] for j in np.flatnonzero(row)] for row in chosen]

    def score(self, y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
        pred = probs >= 0.5  # thresholds are tuned after training
        tp = float((pred & (y > 0)).sum())
        denom = float(pred.sum() + (y > 0).sum())
        return {"valid_micro_f1": 2 * tp / denom if denom else 0.0}

    def metrics(
        self, y: np.ndarray, probs: np.ndarray, thresholds: np.ndarray | None
    ) -> dict[str, Any]:
        t = np.full(len(self.labels), 0.5) if thresholds is None else thresholds
        return M.multilabel_metrics(y, probs, t, self.labels.classes)

    def plot(self, metrics: dict[str, Any], path: Path) -> Path | None:
        return M.plot_per_label(metrics, path)


class HierarchicalHead(Head):
    """Columns are the taxonomy's nodes; decisions are node paths, never inconsistent."""

    task = "hierarchical"
    select_key = "valid_hf1"

    def __init__(self, labels: HierarchicalLabels, config: HierarchyConfig) -> None:
        self.labels = labels
        self.taxonomy = labels.taxonomy
        self.config = config

    def decide_nodes(
        self, probs: np.ndarray, thresholds: float | np.ndarray | None
    ) -> list[list[Node]]:
        """Each document's chosen nodes (with their ancestors), in taxonomy order."""
        raise NotImplementedError

    def decide(
        self, probs: np.ndarray, thresholds: float | np.ndarray | None, top_k: int | None = None
    ) -> list[Any]:
        """Per document, the chosen paths' ends as joined path names (``"comp/comp.graphics"``)."""
        if top_k:
            raise ValueError("top_k does not apply to a hierarchical classifier")
        return self.labels.decode(self.chosen(probs, thresholds))

    def chosen(self, probs: np.ndarray, thresholds: float | np.ndarray | None) -> np.ndarray:
        out = np.zeros(probs.shape, dtype=bool)
        for i, nodes in enumerate(self.decide_nodes(probs, thresholds)):
            out[i, [self.taxonomy.index(n) for n in nodes]] = True
        return out

    def _true_nodes(self, y: np.ndarray) -> list[list[Node]]:
        nodes = self.taxonomy.nodes
        return [[nodes[k] for k in np.flatnonzero(row > 0)] for row in y]

    def score(self, y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
        pred = self.decide_nodes(probs, None)  # flat heads: thresholds are tuned later
        prf = HM.hierarchical_prf(self._true_nodes(y), pred, "micro")
        return {"valid_hf1": prf["f1"]}

    def metrics(
        self, y: np.ndarray, probs: np.ndarray, thresholds: np.ndarray | None
    ) -> dict[str, Any]:
        true, pred = self._true_nodes(y), self.decide_nodes(probs, thresholds)
        out = HM.report(true, pred, self.taxonomy)
        out["head"] = self.config.head
        out["n"] = len(y)
        leaves = [[n for n in t if self.taxonomy.is_leaf(n)] for t in true]
        chosen = [[n for n in p if self.taxonomy.is_leaf(n)] for p in pred]
        out["leaf_accuracy"] = float(
            np.mean([set(a) == set(b) for a, b in zip(leaves, chosen, strict=True)])
        )
        return out

    def plot(self, metrics: dict[str, Any], path: Path) -> Path | None:
        return M.plot_levels(metrics, path)

    def baseline(self, y_train: np.ndarray, y_test: np.ndarray) -> dict[str, Any]:
        """Every test document given the most frequent training path(s)."""
        rows, counts = np.unique(np.asarray(y_train) > 0, axis=0, return_counts=True)
        top = rows[counts.argmax()]
        pred = [[n for n, on in zip(self.taxonomy.nodes, top, strict=True) if on]] * len(y_test)
        out = HM.report(self._true_nodes(y_test), pred, self.taxonomy)
        out["majority_path"] = self.labels.decode(top[None])[0]
        return out


class FlatNodesHead(HierarchicalHead):
    """A sigmoid per node, BCE; top-down decoding with per-node thresholds."""

    tuned = True

    def loss(self, y_train: np.ndarray) -> nn.Module:
        return nn.BCEWithLogitsLoss()

    def probs(self, logits: Tensor) -> Tensor:
        return logits.sigmoid()

    def decide_nodes(
        self, probs: np.ndarray, thresholds: float | np.ndarray | None
    ) -> list[list[Node]]:
        t = 0.5 if thresholds is None else thresholds
        return H.decode_thresholds(probs, self.taxonomy, t, self.config.mandatory_leaf)


class LabelGraphHead(FlatNodesHead):
    """Scores from the label-graph output layer (the model's), decoded as the flat head."""


def _groups(taxonomy: Any) -> np.ndarray:
    """Each node's sibling group: its parent's index + 1 (0: the roots)."""
    return np.array(
        [taxonomy.index(n[:-1]) + 1 if len(n) > 1 else 0 for n in taxonomy.nodes], dtype=np.int64
    )


def sibling_log_softmax(logits: Tensor, group: Tensor, n_groups: int) -> Tensor:
    """``log p(node | parent)``: a log-softmax over each set of siblings."""
    idx = group.expand_as(logits)
    top = logits.new_full((logits.size(0), n_groups), float("-inf"))
    top = top.scatter_reduce(1, idx, logits, "amax", include_self=True)
    z = logits - top.gather(1, idx).detach()
    total = logits.new_zeros((logits.size(0), n_groups)).index_add(1, group, z.exp())
    return z - total.log().gather(1, idx)


class PerParentLoss(nn.Module):
    """Cross-entropy of each true node among its siblings, for every set of siblings whose
    parent is true (the roots always): a local classifier per parent node. Several true
    siblings (multi-label) share the target evenly."""

    def __init__(self, groups: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("group", torch.as_tensor(groups))
        self.n_groups = int(groups.max()) + 1

    def forward(self, logits: Tensor, y: Tensor) -> Tensor:
        group: Tensor = self.group  # type: ignore[assignment]
        logp = sibling_log_softmax(logits, group, self.n_groups)
        count = y.new_zeros((y.size(0), self.n_groups)).index_add(1, group, y)
        w = y / count.gather(1, group.expand_as(y)).clamp(min=1)
        return -(w * logp).sum(1).mean()


class PerParentHead(HierarchicalHead):
    """A softmax over each set of siblings; a node's probability is the product of the
    conditional probabilities down its path (the columns of ``predict_proba``)."""

    def __init__(self, labels: HierarchicalLabels, config: HierarchyConfig) -> None:
        super().__init__(labels, config)
        self.groups = _groups(self.taxonomy)
        self.priors: np.ndarray | None = None
        parent = self.groups - 1
        depth = np.array([len(n) for n in self.taxonomy.nodes])
        self._levels = [
            (np.flatnonzero(depth == d), parent[depth == d]) for d in range(2, depth.max() + 1)
        ]

    def fit_priors(self, y_train: np.ndarray) -> None:
        """Each node's share among its siblings in training (for logit adjustment)."""
        count = y_train.sum(0).astype(np.float64) + 1.0  # add-one: no zero priors
        total = np.zeros(self.groups.max() + 1)
        np.add.at(total, self.groups, count)
        self.priors = count / total[self.groups]

    def state(self) -> dict[str, Any]:
        return {} if self.priors is None else {"priors": [float(p) for p in self.priors]}

    def load_state(self, state: dict[str, Any]) -> None:
        p = state.get("priors")
        self.priors = None if p is None else np.asarray(p, dtype=np.float64)

    def loss(self, y_train: np.ndarray) -> nn.Module:
        return PerParentLoss(self.groups)

    def probs(self, logits: Tensor) -> Tensor:
        if self.config.logit_adjust and self.priors is not None:
            prior = torch.as_tensor(self.priors, dtype=logits.dtype, device=logits.device)
            logits = logits - self.config.logit_adjust * prior.log()
        group = torch.as_tensor(self.groups, device=logits.device)
        out = sibling_log_softmax(logits, group, int(self.groups.max()) + 1).exp()
        for nodes, parents in self._levels:  # parents' probabilities are final first
            out[:, nodes] = out[:, nodes] * out[:, parents]
        return out

    def decide_nodes(
        self, probs: np.ndarray, thresholds: float | np.ndarray | None
    ) -> list[list[Node]]:
        if self.config.decode == "best_path":
            return H.decode_best_path(probs, self.taxonomy)
        parent = self.groups - 1
        up = np.where(parent[None, :] >= 0, probs[:, np.maximum(parent, 0)], 1.0)
        cond = np.divide(probs, up, out=np.zeros_like(probs, dtype=np.float64), where=up > 0)
        return H.decode_greedy(cond, self.taxonomy, self.config.mandatory_leaf, self.config.stop)


class RegressionLabels:
    """Real-valued targets: one output column, named after the head."""

    task = "regression"

    def __init__(self, name: str = "value") -> None:
        self.classes = [name]

    def __len__(self) -> int:
        return 1

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RegressionLabels) and other.classes == self.classes

    __hash__ = None  # type: ignore[assignment]

    def encode(
        self, labels: Sequence[Any], rows: Sequence[int] | None = None, source: str = ""
    ) -> np.ndarray:
        """float32 ``(N, 1)``; a value that is not a finite number is an error naming its row."""
        out = np.empty((len(labels), 1), dtype=np.float32)
        for i, v in enumerate(labels):
            try:
                x = float(v) if not isinstance(v, bool) else float("nan")
            except (TypeError, ValueError):
                x = float("nan")
            if not np.isfinite(x):
                line = f"line {rows[i]}" if rows is not None else f"row {i + 1}"
                where = f"{source}: {line}" if source else line
                raise ValueError(f"{where}: regression target {v!r} is not a finite number")
            out[i, 0] = x
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "classes": list(self.classes)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RegressionLabels:
        return cls(d["classes"][0])


class StandardizedLoss(nn.Module):
    """MSE or Huber on targets scaled to zero mean and unit variance (the head predicts
    the scaled value: one learning rate suits any target's units)."""

    def __init__(self, kind: str, mean: float, std: float) -> None:
        super().__init__()
        self.kind, self.mean, self.std = kind, mean, std

    def forward(self, pred: Tensor, y: Tensor) -> Tensor:
        z = (y - self.mean) / self.std
        if self.kind == "huber":
            return nn.functional.huber_loss(pred, z)
        return nn.functional.mse_loss(pred, z)


class RegressionHead(Head):
    """A real-valued target (a star rating, a score): MSE or Huber; MAE, RMSE, R^2,
    Pearson and Spearman. ``predict_proba`` gives the predicted value (in the targets'
    units), ``predict`` the same as floats."""

    task = "regression"
    select_key = "valid_r2"

    def __init__(self, labels: RegressionLabels, loss_kind: str = "mse") -> None:
        if loss_kind not in ("mse", "huber"):
            raise ValueError(f"regression loss must be mse|huber, got {loss_kind!r}")
        self.labels = labels
        self.loss_kind = loss_kind
        self.mean, self.std = 0.0, 1.0

    def fit_priors(self, y_train: np.ndarray) -> None:
        y = np.asarray(y_train, dtype=np.float64)
        self.mean = float(y.mean()) if len(y) else 0.0
        self.std = float(y.std()) if len(y) and y.std() > 0 else 1.0

    def state(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std}

    def load_state(self, state: dict[str, Any]) -> None:
        self.mean = float(state.get("mean", 0.0))
        self.std = float(state.get("std", 1.0))

    def loss(self, y_train: np.ndarray) -> nn.Module:
        return StandardizedLoss(self.loss_kind, self.mean, self.std)

    def probs(self, logits: Tensor) -> Tensor:
        return logits * self.std + self.mean

    def decide(
        self, probs: np.ndarray, thresholds: float | np.ndarray | None, top_k: int | None = None
    ) -> list[Any]:
        return [float(v) for v in np.asarray(probs).reshape(len(probs), -1)[:, 0]]

    def chosen(self, probs: np.ndarray, thresholds: float | np.ndarray | None) -> np.ndarray:
        return np.ones(probs.shape, dtype=bool)

    def score(self, y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
        m = regression_metrics(y, probs)
        return {"valid_r2": m["r2"], "valid_mae": m["mae"]}

    def metrics(
        self, y: np.ndarray, probs: np.ndarray, thresholds: np.ndarray | None
    ) -> dict[str, Any]:
        return regression_metrics(y, probs)

    def baseline(self, y_train: np.ndarray, y_test: np.ndarray) -> dict[str, Any]:
        """Every test document given the training mean."""
        mean = np.full(np.shape(y_test), float(np.mean(y_train)))
        return regression_metrics(y_test, mean)

    def plot(self, metrics: dict[str, Any], path: Path) -> Path | None:
        return None


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """MAE, RMSE, R^2, Pearson's and Spearman's correlation of predictions and targets."""
    from scipy.stats import pearsonr, spearmanr

    t = np.asarray(y, dtype=np.float64).reshape(-1)
    p = np.asarray(pred, dtype=np.float64).reshape(-1)
    err = p - t
    sst = float(((t - t.mean()) ** 2).sum()) if len(t) else 0.0
    varied = len(t) > 1 and t.std() > 0 and p.std() > 0
    return {
        "n": len(t),
        "mae": float(np.abs(err).mean()) if len(t) else float("nan"),
        "rmse": float(np.sqrt((err**2).mean())) if len(t) else float("nan"),
        "r2": 1.0 - float((err**2).sum()) / sst if sst > 0 else 0.0,
        "pearson": float(pearsonr(t, p)[0]) if varied else 0.0,
        "spearman": float(spearmanr(t, p)[0]) if varied else 0.0,
    }


def make_head(
    task: str,
    labels: Any,
    hierarchy: HierarchyConfig | None = None,
    label_smoothing: float = 0.0,
    class_weights: bool = False,
    pos_weight: bool = False,
    regression_loss: str = "mse",
) -> Head:
    """The head for a task kind and its labels."""
    if task == "regression":
        return RegressionHead(labels, regression_loss)
    if task == "multiclass":
        return MulticlassHead(labels, label_smoothing, class_weights)
    if task == "multilabel":
        return MultilabelHead(labels, pos_weight)
    if task == "hierarchical":
        cfg = hierarchy or HierarchyConfig()
        kind: type[HierarchicalHead] = {
            "flat": FlatNodesHead,
            "per_parent": PerParentHead,
            "graph": LabelGraphHead,
        }[cfg.head]
        return kind(labels, cfg)
    raise ValueError(f"task must be multiclass|multilabel|hierarchical|regression, got {task!r}")


def node_parents(labels: HierarchicalLabels) -> tuple[int, ...]:
    """Each node's parent index (-1: a root), for the label-graph output layer."""
    return tuple(int(g) - 1 for g in _groups(labels.taxonomy))


__all__: Sequence[str] = [
    "HIERARCHY_HEADS",
    "FlatNodesHead",
    "Head",
    "HierarchicalHead",
    "HierarchyConfig",
    "LabelGraphHead",
    "MulticlassHead",
    "MultilabelHead",
    "PerParentHead",
    "RegressionHead",
    "RegressionLabels",
    "make_head",
    "node_parents",
    "regression_metrics",
]
