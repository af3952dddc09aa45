"""Metrics appended as JSONL and CSV as training goes, and a loss/LR plot at the end."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ulmfit.checkpoint import save_figure

log = logging.getLogger(__name__)

METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
PLOT_FILE = "training.png"


class MetricsLog:
    """Appends one row per epoch to ``metrics.jsonl`` and ``metrics.csv`` in ``out_dir``."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)

    def clear(self) -> None:
        """Start a new run's log: remove the files of an earlier run in this folder."""
        for name in (METRICS_JSONL, METRICS_CSV):
            (self.out_dir / name).unlink(missing_ok=True)

    def append(self, row: Mapping[str, Any]) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / METRICS_JSONL, "a", encoding="utf-8") as f:
            f.write(json.dumps(dict(row)) + "\n")
        path = self.out_dir / METRICS_CSV
        new = not path.exists()
        with open(path, "a", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row), extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(dict(row))

    def plot(self, history: Sequence[Mapping[str, Any]]) -> Path | None:
        """Training loss and learning rate against step; returns the PNG path."""
        return plot_history(history, self.out_dir / PLOT_FILE)


def plot_history(history: Sequence[Mapping[str, Any]], path: Path) -> Path | None:
    steps = [r for r in history if "train_loss" in r and not r.get("epoch_end")]
    if not steps:
        steps = [r for r in history if "train_loss" in r]
    if not steps:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed (pip install 'ulmfit[plot]'): no plot written")
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot([r["step"] for r in steps], [r["train_loss"] for r in steps], label="train")
    ends = [r for r in history if r.get("epoch_end") and "valid_loss" in r]
    if ends:
        ax1.plot([r["step"] for r in ends], [r["valid_loss"] for r in ends], "o-", label="valid")
    ax1.set_xlabel("step")
    ax1.set_ylabel("loss")
    ax1.legend()
    ax2.plot([r["step"] for r in steps], [r["lr"] for r in steps])
    ax2.set_xlabel("step")
    ax2.set_ylabel("learning rate (top group)")
    fig.tight_layout()
    try:
        save_figure(fig, path, dpi=100)
    finally:
        plt.close(fig)
    return path
