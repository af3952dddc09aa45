"""Decoding labels in a taxonomy from per-node scores, consistent by construction.

Scores are ``(N, K)`` arrays over the taxonomy's nodes in its order (parents before
children). Two families, as issue 15's heads produce them:

- **Per-node probabilities** (one sigmoid per node, trained with BCE on each document's
  nodes and their ancestors): :func:`decode_thresholds` walks top-down and keeps a node
  only if its probability reaches its threshold *and* its parent is kept, so no node is
  ever output without its parent. Several branches may be kept (hierarchical
  multi-label). ``mandatory_leaf``: a kept inner node is extended by its most probable
  child until a leaf, and a document with nothing kept gets the most probable root.
  Per-node thresholds come from :func:`ulmfit.tasks.metrics.tune_thresholds` on the
  validation nodes (:func:`node_matrix`).
- **Per-parent softmax** (a local classifier per parent node as one head): logits become
  the probability of each node given its parent (:func:`conditional_probs`), and
  multiplied along the path, each node's probability (:func:`path_probs`). Decoded
  greedily top-down (:func:`decode_greedy`) or as the most probable full path
  (:func:`decode_best_path`); :func:`logit_adjust` subtracts ``tau * log prior`` for rare
  nodes (Menon et al. 2021).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ulmfit.data.taxonomy import Node, Taxonomy, ancestors


def node_matrix(docs: Sequence[Iterable[Node]], taxonomy: Taxonomy) -> np.ndarray:
    """``(N, K)`` booleans: each document's nodes and all their ancestors."""
    out = np.zeros((len(docs), len(taxonomy)), dtype=bool)
    for i, nodes in enumerate(docs):
        for node in nodes:
            for a in ancestors(node):
                out[i, taxonomy.index(a)] = True
    return out


def _parents(taxonomy: Taxonomy) -> np.ndarray:
    """Each node's parent index, -1 for the roots."""
    return np.array(
        [taxonomy.index(n[:-1]) if len(n) > 1 else -1 for n in taxonomy.nodes], dtype=np.int64
    )


def decode_thresholds(
    probs: np.ndarray,
    taxonomy: Taxonomy,
    thresholds: float | np.ndarray = 0.5,
    mandatory_leaf: bool = False,
) -> list[list[Node]]:
    """Per document, the kept nodes in taxonomy order (see the module's docstring)."""
    probs = np.asarray(probs)
    if probs.ndim != 2 or probs.shape[1] != len(taxonomy):
        raise ValueError(f"probs {probs.shape}: expected (N, {len(taxonomy)})")
    t = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (len(taxonomy),))
    parent = _parents(taxonomy)
    kept = np.zeros(probs.shape, dtype=bool)
    for k in range(len(taxonomy)):  # parents come first: their decision is known
        up = parent[k]
        kept[:, k] = (probs[:, k] >= t[k]) & (True if up < 0 else kept[:, up])
    if mandatory_leaf:
        children = [np.flatnonzero(parent == k) for k in range(len(taxonomy))]
        roots = np.flatnonzero(parent < 0)
        for i in range(len(probs)):
            if not kept[i].any():
                kept[i, roots[np.argmax(probs[i, roots])]] = True
            for k in range(len(taxonomy)):  # a kept node lacking a kept child gets its best
                if kept[i, k] and len(children[k]) and not kept[i, children[k]].any():
                    kept[i, children[k][np.argmax(probs[i, children[k]])]] = True
    nodes = taxonomy.nodes
    return [[nodes[k] for k in np.flatnonzero(row)] for row in kept]


def conditional_probs(logits: np.ndarray, taxonomy: Taxonomy) -> np.ndarray:
    """Softmax over each set of siblings (the roots are siblings too): the probability of
    each node given its parent."""
    logits = np.asarray(logits, dtype=np.float64)
    parent = _parents(taxonomy)
    out = np.empty_like(logits)
    for up in np.unique(parent):
        group = np.flatnonzero(parent == up)
        z = logits[:, group] - logits[:, group].max(1, keepdims=True)
        e = np.exp(z)
        out[:, group] = e / e.sum(1, keepdims=True)
    return out


def path_probs(cond: np.ndarray, taxonomy: Taxonomy) -> np.ndarray:
    """Each node's probability: the conditional probabilities multiplied down its path."""
    parent = _parents(taxonomy)
    out = np.array(cond, dtype=np.float64)
    for k in range(len(taxonomy)):
        if parent[k] >= 0:
            out[:, k] *= out[:, parent[k]]
    return out


def logit_adjust(logits: np.ndarray, priors: np.ndarray, tau: float = 1.0) -> np.ndarray:
    """``logits - tau * log(prior)``: a rare node no longer loses to a frequent sibling
    by its prior alone (priors: each node's share among its siblings in training)."""
    return np.asarray(logits) - tau * np.log(np.clip(np.asarray(priors), 1e-12, None))


def decode_greedy(
    cond: np.ndarray, taxonomy: Taxonomy, mandatory_leaf: bool = True, stop: float = 0.5
) -> list[list[Node]]:
    """From the roots down, the most probable child each time: one path per document.
    Not ``mandatory_leaf``: the walk stops at a node whose best child has a conditional
    probability under ``stop``."""
    parent = _parents(taxonomy)
    children = {up: np.flatnonzero(parent == up) for up in np.unique(parent)}
    out = []
    for row in np.asarray(cond):
        path: list[Node] = []
        k = -1
        while k in children:
            group = children[k]
            best = group[np.argmax(row[group])]
            if path and not mandatory_leaf and row[best] < stop:
                break
            path.append(taxonomy.nodes[best])
            k = int(best)
        out.append(path)
    return out


def decode_best_path(marginal: np.ndarray, taxonomy: Taxonomy) -> list[list[Node]]:
    """The most probable full path (``path_probs``): the best leaf, with its ancestors.
    (Stopping at an inner node is :func:`decode_greedy`'s ``stop``: by path probability an
    inner node always outscores its descendants, so a best-of-all-nodes would never go
    below the roots.)"""
    leaves = np.array([taxonomy.is_leaf(n) for n in taxonomy.nodes], dtype=bool)
    scores = np.where(leaves[None, :], np.asarray(marginal), -np.inf)
    return [list(reversed(list(ancestors(taxonomy.nodes[k])))) for k in scores.argmax(1)]
