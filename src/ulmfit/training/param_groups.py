"""Discriminative learning rates and gradual unfreezing, as pure functions.

Layer groups are ordered lowest (closest to the input) first; the top group gets the
peak rate and each group below it the rate above divided by ``factor`` (2.6 in ULMFiT).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn


def discriminative_lrs(lr: float, n_groups: int, factor: float = 2.6) -> list[float]:
    """``[lr / factor**(n-1), ..., lr / factor, lr]``: lr_{l-1} = lr_l / factor."""
    if n_groups < 1:
        raise ValueError("n_groups must be >= 1")
    return [lr / factor ** (n_groups - 1 - i) for i in range(n_groups)]


def make_param_groups(
    groups: Sequence[Sequence[nn.Parameter]],
    lrs: Sequence[float],
    weight_decay: float = 0.0,
) -> list[dict[str, Any]]:
    """Optimizer parameter groups, one per layer group, each with its own base rate.

    ``base_lr`` is kept beside ``lr`` so a schedule can set ``lr = base_lr * multiplier``.
    """
    if len(groups) != len(lrs):
        raise ValueError(f"{len(groups)} layer groups but {len(lrs)} learning rates")
    seen: set[int] = set()
    out = []
    for params, lr in zip(groups, lrs, strict=True):
        mine = [p for p in params if id(p) not in seen]
        seen.update(id(p) for p in mine)
        out.append({"params": mine, "lr": lr, "base_lr": lr, "weight_decay": weight_decay})
    return out


def unfreeze_plan(n_groups: int, n_epochs: int) -> list[int]:
    """Trainable top groups per epoch for gradual unfreezing: 1, 2, ..., n_groups, n_groups..."""
    return [min(n_groups, epoch + 1) for epoch in range(n_epochs)]


def set_trainable(groups: Sequence[Sequence[nn.Parameter]], n_trainable: int) -> None:
    """Freeze all but the top ``n_trainable`` groups (``n_trainable >= len`` unfreezes all)."""
    n = len(groups)
    for i, params in enumerate(groups):
        for p in params:
            p.requires_grad_(i >= n - n_trainable)
