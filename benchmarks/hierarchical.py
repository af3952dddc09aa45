"""Hierarchical classification on 20 Newsgroups (7 top-level groups -> 20 leaves): the
baselines of issue 15, scored with ``ulmfit.tasks.hierarchical_metrics``.

``tfidf-flat``
    TF-IDF (word 1-2 grams, sublinear) + logistic regression over the 20 leaves; the
    predicted leaf's path (its top-level group, then itself) is the prediction.
``hiclass-lcppn``
    scikit-learn-contrib ``hiclass``'s ``LocalClassifierPerParentNode`` with the same
    features and a logistic regression per parent node (the root: 7 groups; each group:
    its leaves), predicting top-down.

Both see the same split (the official bydate train/test; ``--max-train`` takes the first
N training documents of a seeded shuffle, for a CPU smoke budget). Reported: hierarchical
F1 (micro), leaf accuracy, micro-F1 per level, inconsistent predictions, wall time. The
table is printed last and appended to ``benchmarks/RESULTS.md``::

    PYTHONPATH=src .venv/bin/python benchmarks/hierarchical.py --max-train 4000
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_env import append_results, hardware
from ulmfit import datasets as D
from ulmfit.data.taxonomy import Node, Taxonomy
from ulmfit.tasks import hierarchical_metrics as H

REPO = Path(__file__).resolve().parents[1]


def features() -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2, max_features=200_000)


def lr() -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=10.0, max_iter=2000)


def tfidf_flat(train: tuple[list[str], list[Node]], test: list[str]) -> list[Node]:
    from sklearn.pipeline import make_pipeline

    texts, paths = train
    leaves = ["/".join(p) for p in paths]
    model = make_pipeline(features(), lr()).fit(texts, leaves)
    return [tuple(str(x).split("/")) for x in model.predict(test)]


def hiclass_lcppn(train: tuple[list[str], list[Node]], test: list[str]) -> list[Node]:
    from hiclass import LocalClassifierPerParentNode
    from sklearn.pipeline import make_pipeline

    texts, paths = train
    y = np.array([list(p) for p in paths])
    model = make_pipeline(features(), LocalClassifierPerParentNode(local_classifier=lr()))
    model.fit(texts, y)
    return [tuple(x for x in row if x) for row in model.predict(test)]


SYSTEMS: dict[str, tuple[str, Callable[..., list[Node]]]] = {
    "tfidf-flat": ("TF-IDF + logistic regression over the 20 leaves (flat)", tfidf_flat),
    "hiclass-lcppn": (
        "hiclass LocalClassifierPerParentNode, TF-IDF + logistic regression per parent",
        hiclass_lcppn,
    ),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--max-train", type=int, default=0, help="first N of a seeded shuffle")
    p.add_argument("--systems", nargs="+", choices=list(SYSTEMS), default=list(SYSTEMS))
    p.add_argument("--no-write", action="store_true", help="print only; no RESULTS.md")
    args = p.parse_args(argv)
    tax = Taxonomy.read(args.data / "20newsgroups/taxonomy.txt")
    train = D.load_dataset("newsgroups20", "train", args.data)
    test = D.load_dataset("newsgroups20", "test", args.data)
    assert train.labels is not None and test.labels is not None
    order = np.random.default_rng(0).permutation(len(train))
    if args.max_train:
        order = order[: args.max_train]
    tr_texts = [train.texts[i] for i in order]
    tr_paths = [tax.resolve(train.labels[i], None, f"train row {i + 1}") for i in order]
    te_paths = [tax.resolve(y, None, f"test row {i + 1}") for i, y in enumerate(test.labels)]
    lines = [
        "| system | hierarchical F1 (micro) | leaf accuracy | micro-F1 level 1 | "
        "micro-F1 level 2 | inconsistent | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in args.systems:
        what, fn = SYSTEMS[name]
        t0 = time.perf_counter()
        pred = fn((tr_texts, tr_paths), test.texts)
        wall = time.perf_counter() - t0
        chosen = [sorted(H.with_ancestors([x])) for x in pred]  # a path: every node on it
        rep = H.report([[t] for t in te_paths], chosen, tax)
        leaf = float(np.mean([x == t for x, t in zip(pred, te_paths, strict=True)]))
        lv = {r["level"]: r["micro_f1"] for r in rep["levels"]}
        lines.append(
            f"| {what} | {rep['hierarchical']['micro']['f1']:.4f} | {leaf:.4f} | {lv[1]:.4f} | "
            f"{lv[2]:.4f} | {rep['inconsistent_predictions']} | {wall:.0f} |"
        )
        print(lines[-1], flush=True)
    table = "\n".join(lines) + "\n"
    n = len(tr_texts)
    body = (
        f"Hardware: {hardware()}. 20 Newsgroups bydate: {n} training documents"
        f"{' (a seeded subset)' if args.max_train else ''}, all {len(test)} test documents; "
        "taxonomy 7 -> 20.\n\n" + table
    )
    if not args.no_write:
        append_results(
            REPO / "benchmarks" / "RESULTS.md",
            "Hierarchical classification: 20 Newsgroups baselines",
            "benchmarks/hierarchical.py",
            argv,
            body,
        )
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
