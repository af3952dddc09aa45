"""``ulmfit lm``: list and fetch pretrained language models by name."""

from __future__ import annotations

import argparse
from typing import Any

LM_HELP = """A name works wherever a language-model directory is asked for
(--pretrained wt103-fwd). Converted models are kept in $ULMFIT_HOME/models (default
$ULMFIT_CACHE, ~/.cache/ulmfit); with $ULMFIT_MODELS set to a folder holding the
archives, they are read from there instead of the network. Every archive is checked
(size and checksum) before it is read."""


def add_lm_parser(subparsers: argparse._SubParsersAction[Any]) -> argparse.ArgumentParser:
    """Add ``lm list | get NAME`` to a subcommand set."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "lm",
        help="List and fetch pretrained language models by name.",
        description="List and fetch pretrained language models by name.",
        epilog=LM_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="lm_command", required=True, metavar="ACTION")
    sub.add_parser("list", help="every named model: size, direction, source, present locally")
    gp = sub.add_parser(
        "get",
        help="download (or read from $ULMFIT_MODELS), verify and convert a model; print its "
        "directory",
    )
    gp.add_argument("name", help="model name (see `ulmfit lm list`)")
    gp.add_argument("--force", action="store_true", help="convert again even if present")
    gp.add_argument("--no-progress", action="store_true", help="no download progress bar")
    return p


def run_lm(args: argparse.Namespace) -> int:
    """Run ``ulmfit lm ...``; errors are raised (ValueError / OSError) for the caller."""
    from ulmfit.models import pretrained as pt

    if args.lm_command == "list":
        table = [("name", "direction", "MB", "local", "source")]
        for e in pt.list_pretrained():
            local = "y" if (pt.home() / "models" / e.name / "config.json").is_file() else "n"
            more = f" (+{len(e.files) - 1} files)" if len(e.files) > 1 else ""
            table.append((e.name, e.direction, f"{e.size / 1e6:.0f}", local, e.files[0].url + more))
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        for row in table:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        for e in pt.list_pretrained():
            print(f"\n{e.name}: {e.description}")
            for f in e.files:
                print(f"  {f.path}: {f.size:,} bytes, {f.checksum}")
            print(f"  checksums: {e.checksum_source}")
            print(f"  license: {e.license}")
        mirror = pt.mirror()
        print(f"\nmodels directory: {pt.home() / 'models'}")
        print(f"mirror ($ULMFIT_MODELS): {mirror if mirror is not None else 'not set'}")
        return 0
    if args.lm_command == "get":
        try:
            pt.entry(args.name)
        except KeyError as e:
            raise ValueError(e.args[0]) from None
        out = pt.model_dir(args.name, progress=not args.no_progress, force=args.force)
        print(f"{args.name}: {out}")
        return 0
    raise AssertionError(args.lm_command)
