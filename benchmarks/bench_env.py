"""What the benchmarks record about the machine they ran on."""

from __future__ import annotations

import contextlib
import os
import platform
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path


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
