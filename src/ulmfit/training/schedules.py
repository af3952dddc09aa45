"""Learning-rate schedules as pure functions of the step.

Each returns the multiplier of the peak learning rate at step ``t`` (0-based) of a run
of ``total`` steps. The loop multiplies every group's base rate by it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

Schedule = Callable[[int, int], float]


def slanted_triangular(t: int, total: int, cut_frac: float = 0.1, ratio: float = 32.0) -> float:
    """ULMFiT's STLR (Howard & Ruder 2018, eq. 3): a short linear rise, a long linear decay.

    cut = floor(T * cut_frac); p = t / cut before the cut, else
    1 - (t - cut) / (cut * (1 / cut_frac - 1)); lr = lr_max * (1 + p * (ratio - 1)) / ratio.
    """
    cut = max(1, math.floor(total * cut_frac))
    p = t / cut if t < cut else 1 - (t - cut) / (cut * (1 / cut_frac - 1))
    p = max(p, 0.0)  # past T (never in a normal run) stay at the floor lr_max / ratio
    return (1 + p * (ratio - 1)) / ratio


def one_cycle(
    t: int, total: int, pct_start: float = 0.25, div: float = 25.0, final_div: float = 1e4
) -> float:
    """One-cycle (Smith) with cosine halves: lr_max/div -> lr_max -> lr_max/(div*final_div)."""
    warm = max(1, round(total * pct_start))
    if t < warm:
        return _cos_interp(1 / div, 1.0, t / warm)
    return _cos_interp(1.0, 1 / (div * final_div), min(1.0, (t - warm) / max(1, total - warm)))


def cosine(t: int, total: int, min_frac: float = 0.0) -> float:
    """Cosine annealing from lr_max to lr_max * min_frac (FitLaM draft's 'cosine' option)."""
    return _cos_interp(1.0, min_frac, min(1.0, t / max(1, total)))


def warmup_cosine(t: int, total: int, warmup_frac: float = 0.1, min_frac: float = 0.0) -> float:
    """FitLaM's warm-up reverse annealing: linear warm-up from ~0, then cosine annealing."""
    warm = max(1, math.floor(total * warmup_frac))
    if t < warm:
        return (t + 1) / warm
    return _cos_interp(1.0, min_frac, min(1.0, (t - warm) / max(1, total - warm)))


def constant(t: int, total: int) -> float:
    return 1.0


def _cos_interp(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2 * (1 + math.cos(math.pi * pct))


SCHEDULES: dict[str, Callable[..., float]] = {
    "stlr": slanted_triangular,
    "one_cycle": one_cycle,
    "cosine": cosine,
    "warmup_cosine": warmup_cosine,
    "constant": constant,
}


def get_schedule(name: str, **kwargs: Any) -> Schedule:
    """The schedule ``name`` with its keyword options bound."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose from {sorted(SCHEDULES)}")
    fn = SCHEDULES[name]

    def schedule(t: int, total: int) -> float:
        return fn(t, total, **kwargs)

    return schedule
