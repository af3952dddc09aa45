"""Multi-task against single-task classifiers on real data (issue 16), CPU smoke budget.

``trec``
    TREC-6 coarse and TREC-50 fine labels of the same 5,452 questions: one model with two
    heads against two single-task classifiers. Same recipe and the same total number of
    optimiser steps: a multi-task epoch is both tasks' batches (proportional sampling),
    and each single-task model trains the same number of epochs on its own task. LM: the
    demo's stage-2 LM (``runs/demo_trec/lm_finetuned``, fine-tuned on TREC's questions).
``semeval``
    SemEval-2018 E-c emotions (multilabel, tweets) and AG News topics (4 classes, news:
    other documents, so every document lacks one head's labels): one two-head model
    against two single-task ones, same recipe and steps. LM: the demo's stage-1 LM
    (``runs/demo_trec/lm_pretrained``), not fine-tuned on either (the same for all).

Each multi-task model is trained twice: batches of one task at a time (``per_task``, the
default) and batches mixing the tasks (``mixed``). Reported per head: its test score; per
setting: total training time of the multi-task models against the single-task models
together, and inference docs/s on the same texts
(the pair's test documents) for the one multi-head model against the single-task models
run one after the other (alternating, best of three). Times are wall time on this machine,
side by side in one run.
The table is printed last and appended to ``benchmarks/RESULTS.md``::

    PYTHONPATH=src .venv/bin/python benchmarks/multitask.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_env import append_results, hardware
from ulmfit import datasets as D
from ulmfit.tasks.classify import ClassifierTrainConfig, TextClassifier, UnfreezeStage
from ulmfit.tasks.multitask import HeadSpec, MultiTaskClassifier, MultiTaskConfig

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "runs" / "demo_trec"
BATCHINGS = ("per_task", "mixed")


def recipe(epochs: int, task: str = "multiclass") -> ClassifierTrainConfig:
    """configs/demo_trec.toml's classifier: head, one more group, then all for the rest."""
    return ClassifierTrainConfig(
        task=task,  # type: ignore[arg-type]
        bs=64,
        drop_mult=0.3,
        max_len=200,
        stages=(
            UnfreezeStage(1, 1, 8e-2),
            UnfreezeStage(2, 1, 4e-2),
            UnfreezeStage(0, max(1, epochs - 2), 4e-2),
        ),
        device="cpu",
    )


def head_score(kind: str, m: dict[str, Any]) -> str:
    return (
        f"accuracy {m['accuracy']:.4f}" if kind == "multiclass" else f"micro-F1 {m['micro_f1']:.4f}"
    )


def compare(
    name: str,
    lm: Path,
    heads: list[tuple[str, str]],
    train: dict[str, tuple[list[str], list[Any]]],
    test: dict[str, tuple[list[str], list[Any]]],
    epochs: int,
) -> list[str]:
    """Rows of the table for one setting: each head single and multi, times, docs/s."""
    rows = []
    # Multi-task: the union of the tasks' documents, each labelled for its own heads.
    texts: list[str] = []
    at: dict[str, int] = {}
    labels: dict[str, list[Any]] = {h: [] for h, _ in heads}
    for h, _ in heads:
        for text, y in zip(*train[h], strict=True):
            if text not in at:
                at[text] = len(texts)
                texts.append(text)
                for k in labels:
                    labels[k].append(None)
            labels[h][at[text]] = y
    specs = tuple(HeadSpec(h, kind) for h, kind in heads)  # type: ignore[arg-type]
    mts: dict[str, MultiTaskClassifier] = {}
    mt_train: dict[str, float] = {}
    for batching in BATCHINGS:
        cfg = MultiTaskConfig(heads=specs, classifier=recipe(epochs), batching=batching)  # type: ignore[arg-type]
        t0 = time.perf_counter()
        mts[batching] = MultiTaskClassifier(lm, cfg).fit(texts, labels)
        mt_train[batching] = time.perf_counter() - t0
    mt = mts["per_task"]
    singles: dict[str, TextClassifier] = {}
    single_train = 0.0
    for h, kind in heads:
        t0 = time.perf_counter()
        singles[h] = TextClassifier(lm, recipe(epochs, kind)).fit(*train[h])
        single_train += time.perf_counter() - t0
    for h, kind in heads:
        mt_m = {b: m.evaluate(test[h][0], {h: test[h][1]})[h] for b, m in mts.items()}
        clf = singles[h]
        assert clf.labels is not None
        y = clf.labels.encode(test[h][1])
        probs = clf.predict_proba(test[h][0])
        st_m = clf.head.metrics(y, probs, clf.thresholds if clf.head.tuned else None)
        rows.append(
            f"| {name} | {h} ({kind}) | {head_score(kind, st_m)} | "
            + " | ".join(head_score(kind, mt_m[b]) for b in BATCHINGS)
            + " |"
        )
    # Inference on the same texts: one multi-head pass against the single models in turn.
    # Alternating, best of three each: other work on a shared machine hits both alike.
    all_test = [t for h, _ in heads for t in test[h][0]]
    mt_s = st_s = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        mt.predict_proba(all_test)
        mt_s = min(mt_s, time.perf_counter() - t0)
        t0 = time.perf_counter()
        for clf in singles.values():
            clf.predict_proba(all_test)
        st_s = min(st_s, time.perf_counter() - t0)
    n = len(all_test)
    rows.append(
        f"| {name} | training time (s) | {single_train:.0f} (both single models) | "
        + " | ".join(f"{mt_train[b]:.0f}" for b in BATCHINGS)
        + " |"
    )
    rows.append(
        f"| {name} | inference docs/s ({n} docs) | {n / st_s:.0f} (one model after the other) "
        f"| {n / mt_s:.0f} ({st_s / mt_s:.2f}x) | (the same model shape) |"
    )
    for r in rows:
        print(r, flush=True)
    return rows


def trec(args: argparse.Namespace) -> list[str]:
    import lzma

    def read(split: str) -> tuple[list[str], list[str], list[str]]:
        import csv

        with lzma.open(args.data / f"trec/{split}.csv.xz", "rt", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        return (
            [r["text"] for r in rows],
            [r["label"] for r in rows],
            [r["fine_label"] for r in rows],
        )

    tr, tr_c, tr_f = read("train")
    te, te_c, te_f = read("test")
    return compare(
        "TREC coarse + fine",
        DEMO / "lm_finetuned",
        [("coarse", "multiclass"), ("fine", "multiclass")],
        {"coarse": (tr, tr_c), "fine": (tr, tr_f)},
        {"coarse": (te, te_c), "fine": (te, te_f)},
        args.epochs,
    )


def semeval(args: argparse.Namespace) -> list[str]:
    emo_tr = D.load_dataset("semeval2018_ec", "train", args.data)
    emo_te = D.load_dataset("semeval2018_ec", "dev", args.data)
    news = D.load_dataset("ag_news", "test", args.data)
    order = np.random.default_rng(0).permutation(len(news))
    tr_i, te_i = order[: args.news_train], order[args.news_train : args.news_train + 1000]
    news_tr = ([news.texts[i] for i in tr_i], [news.labels[i] for i in tr_i])  # type: ignore[index]
    news_te = ([news.texts[i] for i in te_i], [news.labels[i] for i in te_i])  # type: ignore[index]
    return compare(
        "SemEval E-c + AG News",
        DEMO / "lm_pretrained",
        [("emotion", "multilabel"), ("topic", "multiclass")],
        {"emotion": (emo_tr.texts, emo_tr.labels), "topic": news_tr},  # type: ignore[dict-item]
        {"emotion": (emo_te.texts, emo_te.labels), "topic": news_te},  # type: ignore[dict-item]
        args.epochs,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument(
        "--settings", nargs="+", choices=["trec", "semeval"], default=["trec", "semeval"]
    )
    p.add_argument("--epochs", type=int, default=10, help="classifier epochs: 1 + 1 + the rest")
    p.add_argument("--news-train", type=int, default=2000, help="AG News training documents")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    if not (DEMO / "lm_finetuned" / "config.json").exists():
        raise SystemExit(f"{DEMO}: run scripts/demo.sh first (its LMs are this benchmark's)")
    lines = [
        "| setting | head / measure | single-task models | multi-task, per-task batches | "
        "multi-task, mixed batches |",
        "|---|---|---|---|---|",
    ]
    for s in args.settings:
        lines += {"trec": trec, "semeval": semeval}[s](args)
    table = "\n".join(lines) + "\n"
    body = (
        f"Hardware: {hardware()}. configs/demo_trec.toml's classifier recipe, {args.epochs} "
        f"epochs (1 + 1 + {args.epochs - 2}), for every model; AG News: {args.news_train} "
        "training and 1,000 test documents of its test split (seeded).\n\n" + table
    )
    if not args.no_write:
        append_results(
            REPO / "benchmarks" / "RESULTS.md",
            "Multi-task heads against single-task classifiers",
            "benchmarks/multitask.py",
            argv,
            body,
        )
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
