"""The whole ULMFiT pipeline on a named dataset: accuracy, wall time per stage, inference speed.

Runs stages 1-3 (stage 1 skipped with ``--pretrained DIR``) with the settings of a TOML
config (default: ``configs/demo_trec.toml``, the small CPU recipe) on the dataset's
official train/test split, and appends a row to ``benchmarks/RESULTS.md``: error rate
(multi-class) or micro/macro-F1 (multi-label), the majority baseline, seconds per
stage and documents/s at inference, with the command, date and hardware.

    PYTHONPATH=src python benchmarks/classify.py trec6
    PYTHONPATH=src python benchmarks/classify.py reuters21578 \\
        --pretrained runs/demo_trec/lm_pretrained
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import shlex
import sys
from pathlib import Path

from bench_env import hardware
from ulmfit.config import from_dict, load_toml
from ulmfit.datasets import data_dir, dataset_spec
from ulmfit.tasks.pipeline import LabelledDataConfig, PipelineConfig, run_pipeline

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "RESULTS.md"


def dataset_config(name: str, root: Path) -> tuple[LabelledDataConfig, str]:
    """Data section and task kind for a registered dataset read from ``root``."""
    spec = dataset_spec(name)
    splits = {s.name: s for s in spec.splits}
    if spec.task not in ("multiclass", "multilabel") or "train" not in splits:
        raise SystemExit(f"{name}: not a classification dataset with a train split")
    test = spec.test_split or "test"
    data = LabelledDataConfig(
        train=str(root / splits["train"].files[0].path),
        test=str(root / splits[test].files[0].path),
        text_column=spec.text_fields,
        label_column=spec.label_field or "label",
    )
    return data, spec.task


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dataset", help="a registered dataset (ulmfit data list), e.g. trec6")
    parser.add_argument("--config", type=Path, default=REPO / "configs/demo_trec.toml")
    parser.add_argument("--pretrained", help="existing LM directory: skip stage 1")
    parser.add_argument("--data-dir", type=Path, help="dataset mirror (default: $ULMFIT_DATA)")
    parser.add_argument("--out-dir", type=Path, help="default: runs/bench_<dataset>")
    parser.add_argument("--max-train", type=int, default=0, help="first N training rows only")
    parser.add_argument("--no-write", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args(argv)

    root = args.data_dir or Path(os.environ.get("ULMFIT_DATA") or REPO.parent / "shared/data")
    if not (root / "README.md").exists() and not args.data_dir:
        root = data_dir()
    raw = load_toml(args.config)
    cfg = from_dict(PipelineConfig, raw, where=str(args.config))
    data, task = dataset_config(args.dataset, root)
    cfg = dataclasses.replace(
        cfg,
        out_dir=str(args.out_dir or REPO / f"runs/bench_{args.dataset}"),
        pretrained=args.pretrained,
        data=dataclasses.replace(data, max_train=args.max_train),
        classifier=dataclasses.replace(cfg.classifier, task=task),  # type: ignore[arg-type]
        overwrite=True,  # the benchmark's own working directory: a rerun replaces it
    )
    report = run_pipeline(cfg)
    test, base, times = report["test"], report["baseline"], report["times"]
    if task == "multiclass":
        score = f"error {100 * test['error_rate']:.2f}% (majority {100 * base['error_rate']:.2f}%)"
    else:
        score = (
            f"micro-F1 {100 * test['micro_f1']:.2f} macro-F1 {100 * test['macro_f1']:.2f} "
            f"(most-frequent-label micro-F1 {100 * base.get('top_label_micro_f1', 0):.2f})"
        )
    stages = " / ".join(f"{k.removesuffix('_s')} {v:.0f}s" for k, v in times.items())
    row = (
        f"| {args.dataset} | {task} | {score} | {stages} | "
        f"{test['docs_per_s']:.0f} | {Path(args.config).name} |"
    )
    header = "| dataset | task | test score | wall time per stage | inference docs/s | config |"
    table = "\n".join([header, "|---|---|---|---|---|---|", row])
    print(table)
    if not args.no_write:
        when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        cmd = "PYTHONPATH=src python " + shlex.join(["benchmarks/classify.py", *sys.argv[1:]])
        section = (
            f"\n## classify.py: {args.dataset}, {when}\n\n`{cmd}`  \n"
            f"Hardware: {hardware()}\n\n{table}\n"
        )
        with open(RESULTS, "a", encoding="utf-8") as f:
            f.write(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
