"""``ulmfit data``: list, describe and fetch the registered benchmark datasets."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

DATA_HELP = """Datasets live in a data directory laid out like the project's mirror
(e.g. trec/train.csv.xz): --data-dir, else $ULMFIT_DATA, else $ULMFIT_CACHE/datasets
(default ~/.cache/ulmfit/datasets). Files are checked against their sha256 once."""


def add_data_parser(subparsers: argparse._SubParsersAction[Any]) -> argparse.ArgumentParser:
    """Add ``data list | info NAME | get NAME`` to a subcommand set."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "data",
        help="List, download and verify the benchmark datasets.",
        description="List, download and verify the benchmark datasets.",
        epilog=DATA_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    lp = sub.add_parser("list", help="every dataset: task, splits, rows, present locally")
    lp.add_argument("--data-dir", type=Path, help="data directory (default: $ULMFIT_DATA)")

    ip = sub.add_parser("info", help="one dataset: fields, files, checksums, sources")
    ip.add_argument("name", help="dataset name (see `ulmfit data list`)")
    ip.add_argument("--data-dir", type=Path, help="data directory (default: $ULMFIT_DATA)")

    gp = sub.add_parser(
        "get",
        help="make sure a dataset is present and verified, downloading it where possible",
        description="Verify the dataset's files (sha256, once) and download + convert the "
        "missing splits from their canonical source where a parser exists; then print "
        "where the files are and how many documents each split has.",
    )
    gp.add_argument("name", help="dataset name (see `ulmfit data list`)")
    gp.add_argument("--data-dir", type=Path, help="data directory (default: $ULMFIT_DATA)")
    gp.add_argument("--split", help="only this split (default: all)")
    gp.add_argument("--no-progress", action="store_true", help="no download progress bar")
    return p


def _count(n: int | None, lines: int | None) -> str:
    if n is not None:
        return str(n)
    return f"{lines} lines" if lines is not None else "?"


def run_data(args: argparse.Namespace) -> int:
    """Run ``ulmfit data ...``; errors are raised (ValueError / OSError) for the caller."""
    from ulmfit import datasets as ds

    root = ds.data_dir(args.data_dir)
    if args.data_command == "list":
        table = [("name", "task", "splits", "rows", "local")]
        for spec in ds.list_datasets():
            here = [sp.name for sp in spec.splits if ds.split_present(spec, sp.name, root)]
            local = (
                "y"
                if len(here) == len(spec.splits)
                else "n"
                if not here
                else "partial: " + "/".join(here)
            )
            table.append(
                (
                    spec.name,
                    spec.task,
                    "/".join(spec.split_names),
                    "/".join(_count(sp.rows, sp.lines) for sp in spec.splits),
                    local,
                )
            )
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        for row in table:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        print(f"\ndata directory: {root}")
        return 0
    if args.data_command == "info":
        print(ds.describe(args.name, root))
        return 0
    if args.data_command == "get":
        spec = ds.dataset_spec(args.name)
        paths = ds.get(args.name, args.split, root, progress=not args.no_progress)
        print(f"{spec.name}: {root}")
        for split, files in paths.items():
            sp = spec.split(split)
            data = ds.load_dataset(args.name, split, root)  # counts what the parser reads
            what = "articles" if spec.task == "lm" else "documents"
            extra = f", {ds.count_lines(files)} lines" if sp.lines is not None else ""
            if data.labels is None and spec.task != "lm":
                extra += " (unlabelled)"
            print(f"  {split}: {len(data)} {what}{extra}")
            for f in files:
                print(f"    {f}")
        return 0
    raise AssertionError(args.data_command)
