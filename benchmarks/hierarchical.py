"""Hierarchical classification on 20 Newsgroups (7 top-level groups -> 20 leaves): the
ULMFiT heads of issue 15 and its baselines, scored with ``ulmfit.tasks.hierarchical_metrics``.

``ulmfit-leaves``
    the ULMFiT classifier, multiclass over the 20 leaves (the flat baseline on our encoder).
``ulmfit-flat`` / ``ulmfit-per-parent`` / ``ulmfit-graph``
    ``task = "hierarchical"`` with each head: a sigmoid per node with tuned thresholds; a
    softmax per parent node decoded greedily; label embeddings propagated over the tree
    (``LabelGraphLinear``). All four fine-tune one classifier each from the same LM
    (the smoke budget of ``reproduce.py``: its stage-1 LM, fine-tuned once on the training
    texts here), with the same recipe and 10% of the training documents for validation.

``tfidf-flat``
    TF-IDF (word 1-2 grams, sublinear) + logistic regression over the 20 leaves; the
    predicted leaf's path (its top-level group, then itself) is the prediction.
``hiclass-lcppn``
    scikit-learn-contrib ``hiclass``'s ``LocalClassifierPerParentNode`` with the same
    features and a logistic regression per parent node (the root: 7 groups; each group:
    its leaves), predicting top-down.

All see the same split (the official bydate train/test; ``--max-train`` takes the first
N training documents of a seeded shuffle, ``--max-chars`` the first characters of every
document, for a CPU smoke budget). Reported: hierarchical F1 (micro), leaf accuracy,
micro-F1 per level, inconsistent predictions, wall time (ULMFiT: the classifier's training
and prediction; LM fine-tuning, shared, is reported once). The table is printed last and
appended to ``benchmarks/RESULTS.md``::

    PYTHONPATH=src .venv/bin/python benchmarks/hierarchical.py --max-train 2000 --max-chars 1500
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
from ulmfit.tasks.classify import ClassifierTrainConfig, TextClassifier, UnfreezeStage
from ulmfit.tasks.heads import HierarchyConfig

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


class Ulmfit:
    """The ULMFiT systems: one fine-tuned LM, a classifier per head."""

    lm: Path | None = None
    epochs = 6  # classifier epochs in all (1 + 1 + the rest with everything unfrozen)

    @classmethod
    def config(cls, task: str, head: str = "flat") -> ClassifierTrainConfig:
        rest = max(1, cls.epochs - 2)
        # configs/demo_trec.toml's recipe for this small LM (its rates, its dropout).
        return ClassifierTrainConfig(
            task=task,  # type: ignore[arg-type]
            bs=32,
            drop_mult=0.3,
            max_len=200,
            stages=(
                UnfreezeStage(1, 1, 8e-2),
                UnfreezeStage(2, 1, 4e-2),
                UnfreezeStage(0, rest, 4e-2),
            ),
            device="cpu",
            hierarchy=HierarchyConfig(head=head),  # type: ignore[arg-type]
        )

    @classmethod
    def leaves(cls, train: tuple[list[str], list[Node]], test: list[str]) -> list[Node]:
        texts, paths = train
        clf = TextClassifier(cls.lm, cls.config("multiclass"))
        clf.fit(texts, ["/".join(p) for p in paths])
        return [tuple(str(x).split("/")) for x in clf.predict(test)]

    @classmethod
    def head(cls, name: str) -> Callable[..., list[Node]]:
        def run(train: tuple[list[str], list[Node]], test: list[str]) -> list[Node]:
            texts, paths = train
            clf = TextClassifier(cls.lm, cls.config("hierarchical", name))
            clf.fit(texts, [list(p) for p in paths])
            out = []
            for chosen in clf.predict(test):  # one path each (mandatory leaf): its end
                ends = [tuple(x.split("/")) for x in chosen]
                out.append(max(ends, key=len) if ends else ())
            return out

        return run


SYSTEMS: dict[str, tuple[str, Callable[..., list[Node]]]] = {
    "ulmfit-leaves": ("ULMFiT, multiclass over the 20 leaves (flat)", Ulmfit.leaves),
    "ulmfit-flat": ("ULMFiT, sigmoid per node + consistent thresholds", Ulmfit.head("flat")),
    "ulmfit-per-parent": (
        "ULMFiT, softmax per parent node (greedy top-down)",
        Ulmfit.head("per_parent"),
    ),
    "ulmfit-graph": ("ULMFiT, label-graph (GCN) scores, consistent", Ulmfit.head("graph")),
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
    p.add_argument("--max-test", type=int, default=0, help="first N of a seeded shuffle")
    p.add_argument("--max-chars", type=int, default=0, help="first N characters of each text")
    p.add_argument("--lm", type=Path, help="stage-1 LM (default: reproduce.py's smoke one)")
    p.add_argument("--clf-epochs", type=int, default=6, help="ULMFiT classifier epochs")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "hierarchical")
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
    cut = args.max_chars or None
    tr_texts = [train.texts[i][:cut] for i in order]
    te_order = np.random.default_rng(1).permutation(len(test))
    if args.max_test:
        te_order = te_order[: args.max_test]
    te_texts = [test.texts[i][:cut] for i in te_order]
    tr_paths = [tax.resolve(train.labels[i], None, f"train row {i + 1}") for i in order]
    te_paths = [tax.resolve(test.labels[i], None, f"test row {i + 1}") for i in te_order]
    lm_note = ""
    if any(name.startswith("ulmfit") for name in args.systems):
        import reproduce as R

        budget = R.smoke_budget(args.data)
        pretrained, _ = R.pretrained_lm(budget, args.out, str(args.lm) if args.lm else None)
        t0 = time.perf_counter()
        Ulmfit.lm = R.finetune_lm(budget.finetune_lm, pretrained, tr_texts, args.out / "lm_ft")
        Ulmfit.epochs = args.clf_epochs
        lm_note = (
            f" ULMFiT: stage-1 LM {pretrained} ({budget.description}), fine-tuned on the "
            f"training texts in {time.perf_counter() - t0:.0f} s; classifier "
            f"{args.clf_epochs} epochs (1 + 1 + {max(1, args.clf_epochs - 2)}), bs 32, "
            "max_len 200, drop_mult 0.3, peak rates 8e-2, 4e-2, 4e-2 (configs/demo_trec.toml's)."
        )
    lines = [
        "| system | hierarchical F1 (micro) | leaf accuracy | micro-F1 level 1 | "
        "micro-F1 level 2 | inconsistent | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in args.systems:
        what, fn = SYSTEMS[name]
        t0 = time.perf_counter()
        pred = fn((tr_texts, tr_paths), te_texts)
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
        f"{' (a seeded subset)' if args.max_train else ''}, "
        f"{len(te_texts)} test documents{' (a seeded subset)' if args.max_test else ''}; "
        f"taxonomy 7 -> 20; texts cut to {args.max_chars or 'all'} characters.{lm_note}"
        "\n\n" + table
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
