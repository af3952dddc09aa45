"""The paper's Figure 3: test error against the number of labelled training examples.

Four arms, all on the same labelled subsets, validation split and full test set:

* ``scratch``: the AWD-LSTM classifier from a random LM (vocabulary from the subset).
* ``supervised``: ULMFiT with the LM fine-tuned on the labelled subset's text only.
* ``semi-supervised``: ULMFiT with the LM fine-tuned on all training text (labels unused),
  fine-tuned once and shared by every size.
* ``tfidf``: TF-IDF + logistic regression, for reference.

Every classifier run takes at least ``--min-steps`` optimiser steps (default 400; the
last unfreezing stage is lengthened, ``ClassifierTrainConfig.min_steps``): in epochs
alone, 100 documents would get 2 steps an epoch. One pretrained LM serves every arm
(``--pretrained``, else the budget's: the smoke budget reuses
``runs/demo_trec/lm_pretrained``). Subsets are stratified samples of the training
split; sizes below 1,000 are drawn ``--repeats`` times and averaged, since small samples
vary most. Writes ``benchmarks/lowshot_<dataset>.png`` and a table into RESULTS.md::

    ULMFIT_DATA=/work/shared/data PYTHONPATH=src python benchmarks/lowshot.py trec6 \\
        --sizes 100 300 1000 3000 all

Long documents on a small machine: ``--max-pool``, ``--max-valid``, ``--max-test`` and
``--max-lm-docs`` cap the labelled pool, the validation and test sets and the
semi-supervised LM's text to fixed random samples (the same for every arm and size), and
the RESULTS section says what each cap left, e.g. for IMDb on 2 CPU cores::

    ULMFIT_DATA=/work/shared/data PYTHONPATH=src python benchmarks/lowshot.py imdb \\
        --sizes 100 300 1000 --repeats 1 --max-valid 500 --max-test 5000 --max-lm-docs 5000 --unsup
"""

from __future__ import annotations

import os

# Before torch loads OpenMP: idle OpenMP threads sleep instead of spinning. On 2 cores
# shared with another busy process, spinning made a TREC classifier epoch 25x slower
# (108 s against 4.3 s passive, 4.6 s with one thread).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import dataclasses
import datetime as dt
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

# benchmarks/ is not a package: make the sibling reproduce.py importable as a module.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import reproduce as R
from bench_env import command_line
from ulmfit.baselines import align_columns, scratch_baseline, tfidf_baseline
from ulmfit.datasets import data_dir

log = logging.getLogger("lowshot")

ARMS = ("scratch", "supervised", "semi-supervised", "tfidf")
SMALL = 1000  # sizes below this are repeated
#: Every classifier run (scratch and ULMFiT alike) takes at least this many optimiser steps.
#: Picked on validation accuracy at 100 labels (RESULTS.md, lowshot notes).
MIN_STEPS = 400


def sample(labels: list[Any], n: int, seed: int, task: str) -> np.ndarray:
    """Sorted indices of ``n`` documents, stratified by class where possible."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    if n >= len(labels):
        return idx
    if task == "multiclass":
        try:
            return np.sort(
                train_test_split(idx, test_size=n, random_state=seed, stratify=labels)[1]
            )
        except ValueError:  # a class too rare to stratify at this size
            pass
    return np.sort(np.random.default_rng(seed).choice(len(labels), n, replace=False))


def run_arm(
    arm: str,
    data: R.Splits,
    budget: R.Budget,
    texts: list[str],
    labels: list[Any],
    pretrained: Path,
    semi_lm: Path,
    work: Path,
) -> tuple[float, dict[str, float]]:
    """Test score (error % or micro-F1 %) and seconds per stage of one arm on one subset."""
    assert data.valid.labels is not None
    valid = (data.valid.texts, list(data.valid.labels))
    times: dict[str, float] = {}
    if arm in ("scratch", "tfidf"):
        if arm == "scratch":
            r = scratch_baseline(
                texts,
                labels,
                data.test.texts,
                data.task,
                valid=valid,
                like=pretrained,
                classifier_config=budget.classifier,
                max_vocab=budget.finetune_lm.vocab.max_size,
                min_freq=budget.finetune_lm.vocab.min_freq,
            )
        else:
            # No refit on train + valid: at 100 labels that would train TF-IDF on 3-6x
            # the labels the other arms see. Validation picks C, as it picks the epoch.
            r = tfidf_baseline(texts, labels, data.test.texts, data.task, valid=valid, refit=False)
        scores, t = align_columns(r.scores, r.classes, data.classes, r.thresholds)
        times = {"fit": r.fit_s, "predict": r.predict_s}
    else:
        lm = semi_lm
        if arm == "supervised":
            t0 = time.perf_counter()
            lm = R.finetune_lm(budget.finetune_lm, pretrained, texts, work / "lm_finetuned")
            times["finetune_lm"] = time.perf_counter() - t0
        scores, t, clf_times, _ = R.fit_classifier(lm, budget, data, (texts, labels), None)
        times.update(clf_times)
    m = R.score(data, R.SystemRun(arm, scores, t, {}))
    value = 100 * (m["error_rate"] if data.task == "multiclass" else m["micro_f1"])
    return value, times


def plot(path: Path, dataset: str, table: dict[str, dict[int, list[float]]], ylabel: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    styles = {"scratch": "o-", "supervised": "s-", "semi-supervised": "^-", "tfidf": "x--"}
    for arm, by_size in table.items():
        sizes = sorted(by_size)
        means = [float(np.mean(by_size[n])) for n in sizes]
        sds = [float(np.std(by_size[n])) for n in sizes]
        label = {"tfidf": "TF-IDF + LR (reference)"}.get(arm, arm)
        ax.errorbar(sizes, means, yerr=sds, fmt=styles.get(arm, "o-"), capsize=3, label=label)
    ax.set_xscale("log")
    sizes_all = sorted({n for by_size in table.values() for n in by_size})
    ax.set_xticks(sizes_all, labels=[str(n) for n in sizes_all])
    ax.minorticks_off()
    ax.set_xlabel("labelled training examples")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{dataset}: ULMFiT with few labels (cf. paper Fig. 3)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dataset", help="a registered dataset, e.g. trec6")
    parser.add_argument("--sizes", nargs="+", default=["100", "300", "1000", "3000", "all"])
    parser.add_argument("--arms", default=",".join(ARMS), help=f"from {','.join(ARMS)}")
    parser.add_argument("--budget", choices=sorted(R.BUDGETS), default="smoke")
    parser.add_argument("--pretrained", help="an existing LM directory: skips stage 1")
    parser.add_argument(
        "--semi-lm",
        help="an existing semi-supervised LM directory (e.g. an earlier run's "
        "OUT/lm_ft_all, fine-tuned from the same --pretrained): skips its fine-tuning",
    )
    parser.add_argument("--repeats", type=int, default=3, help=f"draws of sizes < {SMALL}")
    parser.add_argument("--data-dir", type=Path, help="dataset mirror (default: $ULMFIT_DATA)")
    parser.add_argument("--out-dir", type=Path, help="default: runs/lowshot/DATASET")
    parser.add_argument("--plot", type=Path, help="default: benchmarks/lowshot_DATASET.png")
    parser.add_argument("--results", type=Path, default=R.RESULTS, help="Markdown file appended")
    parser.add_argument("--no-write", action="store_true", help="do not append to --results")
    parser.add_argument("--seed", type=int, default=0)
    # Caps for a long-document dataset on a small machine (IMDb on 2 cores: every
    # classifier run otherwise validates 2,500 reviews an epoch and scores 25,000).
    caps = {
        "--max-pool": "draw the subsets from a fixed random sample of this many training "
        "documents; 'all' is then this many",
        "--max-valid": "validate on a fixed random sample of this many documents",
        "--max-test": "score on a fixed random sample of this many test documents, the same "
        "for every arm and size",
        "--max-lm-docs": "semi-supervised arm: fine-tune the LM on a fixed random sample of "
        "this many of all the training documents",
    }
    for flag, text in caps.items():
        parser.add_argument(flag, type=int, default=0, help=f"{text} (0: no cap)")
    parser.add_argument(
        "--unsup",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add the dataset's unlabelled split to the semi-supervised LM's text "
        "(default: the budget's)",
    )
    parser.add_argument(
        "--min-steps",
        type=int,
        default=MIN_STEPS,
        help="optimiser steps each classifier run takes at least (the last unfreezing "
        "stage is lengthened; 0: the budget's epochs at every size)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if any(a not in ARMS for a in arms):
        parser.error(f"--arms: choose from {', '.join(ARMS)}")
    for flag in ("max_pool", "max_valid", "max_test", "max_lm_docs"):
        if getattr(args, flag) < 0:
            parser.error(f"--{flag.replace('_', '-')}: must be 0 (no cap) or more")

    root = args.data_dir or data_dir()
    # The whole training split is the pool the labelled subsets are drawn from.
    budget = R.BUDGETS[args.budget](root)
    use_unsup = budget.use_unsup if args.unsup is None else args.unsup
    budget = dataclasses.replace(budget, max_train=0, max_test=0, use_unsup=use_unsup)
    # Few labels, same recipe: with epochs alone 100 documents get 2 steps an epoch.
    budget = dataclasses.replace(
        budget, classifier=budget.classifier.replace(min_steps=args.min_steps)
    )
    out = args.out_dir or R.REPO / "runs" / "lowshot" / args.dataset
    out.mkdir(parents=True, exist_ok=True)
    data = R.load_task(args.dataset, budget, args.seed, root)
    # All training text, labelled or not: the official train split's documents (and the
    # unlabelled split with --unsup), before any cap on the labelled pool.
    all_text = data.train.texts + data.valid.texts + data.unlabelled
    n_all_text = len(all_text)
    if args.max_lm_docs and len(all_text) > args.max_lm_docs:
        keep = np.random.default_rng(args.seed + 3).choice(
            len(all_text), args.max_lm_docs, replace=False
        )
        all_text = [all_text[i] for i in np.sort(keep)]
    n_pool, n_valid, n_test = len(data.train), len(data.valid), len(data.test)
    data = dataclasses.replace(
        data,
        # The seeds load_task uses for the same caps, so a capped run matches reproduce.py's.
        train=R._subsample(data.train, args.max_pool, args.seed),
        valid=R._subsample(data.valid, args.max_valid, args.seed + 1),
        test=R._subsample(data.test, args.max_test, args.seed + 2),
    )
    pool_x, pool_y = data.train.texts, list(data.train.labels or [])
    sizes = sorted({len(pool_x) if s == "all" else min(int(s), len(pool_x)) for s in args.sizes})

    t_start = time.perf_counter()
    # TF-IDF alone needs no language model: skip stage 1 then.
    needs_lm = any(a != "tfidf" for a in arms)
    pretrained: Path = Path(args.pretrained or "")
    pretrain_time: float | str = "not needed"
    if needs_lm:
        pretrained, pretrain_time = R.pretrained_lm(budget, out, args.pretrained)
    semi_lm = pretrained
    semi_time = 0.0
    if args.semi_lm:
        semi_lm = Path(args.semi_lm)
        if not (semi_lm / "model.safetensors").is_file():
            parser.error(f"--semi-lm {semi_lm}: no model.safetensors there")
    elif "semi-supervised" in arms:
        t0 = time.perf_counter()
        semi_lm = R.finetune_lm(budget.finetune_lm, pretrained, all_text, out / "lm_ft_all")
        semi_time = time.perf_counter() - t0

    results: dict[str, dict[int, list[float]]] = {a: {} for a in arms}
    seconds: dict[str, dict[int, float]] = {a: {} for a in arms}
    for n in sizes:
        draws = args.repeats if n < SMALL else 1
        for r in range(draws):
            idx = sample(pool_y, n, args.seed + r, data.task)
            texts = [pool_x[i] for i in idx]
            labels = [pool_y[i] for i in idx]
            for arm in arms:
                value, times = run_arm(
                    arm, data, budget, texts, labels, pretrained, semi_lm, out / f"n{n}_r{r}"
                )
                results[arm].setdefault(n, []).append(value)
                seconds[arm][n] = seconds[arm].get(n, 0.0) + sum(times.values())
                log.info("n=%d draw %d %s: %.2f (%.0fs)", n, r, arm, value, sum(times.values()))
    total = time.perf_counter() - t_start

    multiclass = data.task == "multiclass"
    ylabel = "test error %" if multiclass else "test micro-F1 %"
    png = args.plot or R.REPO / "benchmarks" / f"lowshot_{args.dataset}.png"
    plot(png, args.dataset, results, ylabel)
    table = _table(sizes, arms, results, seconds, args.repeats)
    docs = {"pool": len(pool_x), "valid": len(data.valid), "test": len(data.test)}
    docs["lm_text"] = len(all_text)
    report = {"sizes": sizes, "docs": docs, "results": results, "seconds": seconds}
    (out / "lowshot.json").write_text(json.dumps(report, indent=2) + "\n")
    if not args.no_write:
        when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        cmd = command_line("benchmarks/lowshot.py", argv)
        omp = os.environ.get("OMP_WAIT_POLICY", "unset")
        pre = pretrain_time if isinstance(pretrain_time, str) else f"{pretrain_time:.0f}s"
        semi_how = f"reused: `{args.semi_lm}`" if args.semi_lm else f"{semi_time:.0f}s"
        lms = (
            f"Pretrained LM `{pretrained}` ({pre}); semi-supervised LM fine-tuned once on "
            f"{_of(len(all_text), n_all_text)} training documents"
            f"{' (unlabelled split included)' if data.unlabelled else ''} ({semi_how}). "
            if needs_lm
            else "No language model (TF-IDF only). "
        )
        try:
            shown = png.relative_to(R.REPO)
        except ValueError:
            shown = png
        section = (
            f"\n## lowshot.py: {args.dataset}, {budget.name} budget, {when}\n\n"
            f"`{cmd}`  \nRecipe: {budget.description}; every classifier run (scratch too) "
            f"takes at least {args.min_steps} optimiser steps (the last stage lengthened). "
            f"{lms}Subsets: stratified samples of "
            f"{_of(len(pool_x), n_pool)} documents of the training split; model selection "
            f"on {_of(len(data.valid), n_valid)} documents of the fixed validation split; "
            f"test set: {_of(len(data.test), n_test)} documents. "
            f"Total {total / 60:.1f} min on {R.hardware()}; load average at the end "
            f"{os.getloadavg()[0]:.1f} (OMP_WAIT_POLICY={omp}).  \n"
            f"Plot: `{shown}`. {ylabel}, mean (± sd over draws).\n\n"
            f"{table}\n"
        )
        with open(args.results, "a", encoding="utf-8") as f:
            f.write(section)
    print(table)
    return 0


def _of(n: int, total: int) -> str:
    """'all 500' or 'a fixed random 2000 of 25000': what a cap left, said in the table."""
    return f"all {total}" if n == total else f"a fixed random {n} of {total}"


def _table(
    sizes: list[int],
    arms: list[str],
    results: dict[str, dict[int, list[float]]],
    seconds: dict[str, dict[int, float]],
    repeats: int,
) -> str:
    head = "| labelled examples | draws | " + " | ".join(arms) + " | seconds (all arms) |"
    lines = [head, "|" + "---|" * (len(arms) + 3)]
    for n in sizes:
        cells = []
        for a in arms:
            v = results[a][n]
            cells.append(f"{np.mean(v):.2f} ± {np.std(v):.2f}" if len(v) > 1 else f"{v[0]:.2f}")
        secs = sum(seconds[a][n] for a in arms)
        draws = repeats if n < SMALL else 1
        lines.append(f"| {n} | {draws} | " + " | ".join(cells) + f" | {secs:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
