"""Schedules at fixed steps against the paper's formulas; discriminative rates; unfreezing."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from ulmfit.models.awd_lstm import AWDLSTMConfig, AWDLSTMLanguageModel
from ulmfit.training.config import TrainConfig
from ulmfit.training.loop import build_optimizer
from ulmfit.training.param_groups import (
    discriminative_lrs,
    make_param_groups,
    set_trainable,
    unfreeze_plan,
)
from ulmfit.training.schedules import (
    cosine,
    get_schedule,
    one_cycle,
    slanted_triangular,
    warmup_cosine,
)


def paper_stlr(t: int, T: int, cut_frac: float = 0.1, ratio: float = 32) -> float:
    """Howard & Ruder (2018), eq. 3, written out independently."""
    cut = math.floor(T * cut_frac)
    p = t / cut if t < cut else 1 - (t - cut) / (cut * (1 / cut_frac - 1))
    return (1 + p * (ratio - 1)) / ratio


@pytest.mark.parametrize("t", [0, 1, 50, 99, 100, 101, 550, 900, 999])
def test_stlr_matches_the_paper(t: int) -> None:
    assert slanted_triangular(t, 1000) == pytest.approx(paper_stlr(t, 1000), abs=1e-12)


def test_stlr_landmarks() -> None:
    assert slanted_triangular(0, 1000) == pytest.approx(1 / 32)
    assert slanted_triangular(100, 1000) == pytest.approx(1.0)  # the peak at the cut
    assert slanted_triangular(50, 1000) == pytest.approx((1 + 0.5 * 31) / 32)
    assert slanted_triangular(1000, 1000) == pytest.approx(1 / 32)  # back to the floor at T
    assert slanted_triangular(10, 200, cut_frac=0.2, ratio=10) == pytest.approx(
        paper_stlr(10, 200, 0.2, 10)
    )


def test_other_schedules() -> None:
    assert cosine(0, 100) == pytest.approx(1.0)
    assert cosine(50, 100) == pytest.approx(0.5)
    assert cosine(100, 100) == pytest.approx(0.0)
    assert one_cycle(0, 100) == pytest.approx(1 / 25)
    assert one_cycle(25, 100) == pytest.approx(1.0)
    assert one_cycle(100, 100) == pytest.approx(1 / 25e4)
    assert warmup_cosine(0, 100) == pytest.approx(0.1)
    assert warmup_cosine(9, 100) == pytest.approx(1.0)
    assert warmup_cosine(100, 100) == pytest.approx(0.0)
    assert get_schedule("stlr", ratio=10)(0, 100) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="unknown schedule"):
        get_schedule("nope")


def test_discriminative_lrs_divide_by_factor_per_group() -> None:
    lrs = discriminative_lrs(0.01, 4, 2.6)
    assert lrs[-1] == 0.01
    for lower, upper in itertools.pairwise(lrs):
        assert lower == pytest.approx(upper / 2.6)


def test_optimizer_groups_follow_layer_groups() -> None:
    model = AWDLSTMLanguageModel(
        AWDLSTMConfig(vocab_size=40, emb_size=6, hidden_size=10, n_layers=3)
    )
    groups = model.layer_groups()
    assert len(groups) == 4  # three LSTM layers, then embedding+decoder (tied)
    assert groups[-1][0] is model.encoder.embedding.weight
    opt = build_optimizer(groups, TrainConfig(lr=0.01), torch.device("cpu"))
    got = [g["lr"] for g in opt.param_groups]
    assert got == pytest.approx([0.01 / 2.6**3, 0.01 / 2.6**2, 0.01 / 2.6, 0.01])
    assert opt.defaults["betas"] == (0.8, 0.99)
    n_params = sum(len(g["params"]) for g in opt.param_groups)
    assert n_params == len(list(model.parameters()))  # every parameter exactly once


def test_gradual_unfreezing_freezes_exactly_the_lower_groups() -> None:
    model = AWDLSTMLanguageModel(
        AWDLSTMConfig(vocab_size=40, emb_size=6, hidden_size=10, n_layers=3)
    )
    groups = model.layer_groups()
    assert unfreeze_plan(4, 6) == [1, 2, 3, 4, 4, 4]
    for n in range(1, 5):
        set_trainable(groups, n)
        flags = [all(p.requires_grad for p in g) for g in groups]
        frozen = [not any(p.requires_grad for p in g) for g in groups]
        assert flags == [i >= 4 - n for i in range(4)]
        assert frozen == [i < 4 - n for i in range(4)]


def test_make_param_groups_rejects_mismatch() -> None:
    with pytest.raises(ValueError):
        make_param_groups([[torch.nn.Parameter(torch.zeros(1))]], [0.1, 0.2])
