"""What the benchmarks share: the machine they ran on, their RESULTS sections, their data."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import torch

REPO = Path(__file__).resolve().parents[1]
# Where a config's dataset paths start: the shared folder, or a copy staged for a GPU call.
_DATA_MARKER = re.compile(r"(?:^|/)(?:shared/data|\.devdata\w*)/")
Stage = TypeVar("Stage")  # an LMStageConfig; any frozen dataclass with a ``corpus`` field


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "cpu"


def command_line(script: str, argv: Sequence[str] | None = None) -> str:
    """How to run ``script`` again as it ran now, ``ULMFIT_DATA`` included when set."""
    env = f"ULMFIT_DATA={os.environ['ULMFIT_DATA']} " if os.environ.get("ULMFIT_DATA") else ""
    args = sys.argv[1:] if argv is None else list(argv)
    return env + "PYTHONPATH=src python " + shlex.join([script, *args])


def hardware() -> str:
    """CPU model x cores, the GPU where there is one, and torch's version."""
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu_model()} x{os.cpu_count()}{gpu}, torch {torch.__version__}"


def precision_name(amp: torch.dtype | None) -> str:
    """How the tables name an autocast dtype (None: no autocast)."""
    return (
        {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(amp, "fp32")
        if amp is not None
        else "fp32"
    )


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so the wall clock measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def append_results(
    path: Path, title: str, script: str, argv: Sequence[str] | None, body: str
) -> None:
    """Append a RESULTS.md section: ``## title, date``, the command that ran, then ``body``."""
    import datetime as dt

    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = f"\n## {title}, {now}\n\n```\n{command_line(script, argv)}\n```\n\n{body}"
    with path.open("a", encoding="utf-8") as f:
        f.write(section)


def rebase_data_path(path: str, root: Path) -> str:
    """A config's ``../shared/data/X`` (or staged ``.devdata*/X``) path, inside ``root``.

    Other relative paths are taken from the repository root, as the configs write them.
    """
    m = _DATA_MARKER.search(path)
    if m:
        return str(root / path[m.end() :])
    p = Path(path)
    return str(p if p.is_absolute() else REPO / p)


def with_data_root(stage: Stage, root: Path) -> Stage:
    """``stage`` with its corpus files (train and valid) read from ``root``."""
    corpus = stage.corpus  # type: ignore[attr-defined]
    corpus = dataclasses.replace(
        corpus,
        train=tuple(rebase_data_path(p, root) for p in corpus.train),
        valid=tuple(rebase_data_path(p, root) for p in corpus.valid),
    )
    return dataclasses.replace(stage, corpus=corpus)  # type: ignore[type-var]
