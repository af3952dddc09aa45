"""The training recipe shared by every stage."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

Precision = Literal["auto", "fp32", "bf16", "fp16"]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. Defaults follow ULMFiT: Adam(W) betas (0.8, 0.99), STLR."""

    epochs: int = 1  # passes over the training data
    lr: float = 1e-3  # peak rate of the top layer group
    schedule: str = "stlr"  # stlr | one_cycle | cosine | warmup_cosine | constant
    cut_frac: float = 0.1  # STLR: fraction of steps spent rising
    ratio: float = 32.0  # STLR: peak / lowest rate
    pct_start: float = 0.25  # one-cycle: fraction of steps spent rising
    warmup_frac: float = 0.1  # warmup_cosine: fraction of steps spent warming up
    disc_factor: float = 2.6  # discriminative LR: each lower group gets lr / disc_factor
    optimizer: str = "adamw"  # adamw | adam (L2 in the gradient)
    betas: tuple[float, float] = (0.8, 0.99)  # Adam momenta (ULMFiT's)
    eps: float = 1e-6  # Adam epsilon
    weight_decay: float = 0.01  # decoupled (AdamW) or L2 (Adam)
    clip: float = 0.4  # max gradient norm; 0 disables clipping
    alpha: float = 2.0  # AR on the last layer's dropped output
    beta: float = 1.0  # TAR on the last layer's raw output
    precision: Precision = "auto"  # auto: bf16 on a GPU that has it, else fp32
    grad_accum: int = 1  # micro-batches per optimizer step
    seed: int = 42  # seeds data order, dropout masks and initialisation
    log_every: int = 50  # steps between logged (synchronised) loss values
    save_every: int = 0  # steps between resumable checkpoints; 0: at epoch ends only
    max_steps: int = 0  # stop (and save) after this many steps; 0: no limit
    max_minutes: float = 0.0  # stop (and save) after this much wall time; resume to go on
    progress: bool = True  # progress bar with ETA

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1,
            "lr": self.lr > 0,
            "cut_frac": 0 < self.cut_frac < 1,
            "ratio": self.ratio >= 1,
            "disc_factor": self.disc_factor >= 1,
            "optimizer": self.optimizer in ("adamw", "adam"),
            "precision": self.precision in ("auto", "fp32", "bf16", "fp16"),
            "grad_accum": self.grad_accum >= 1,
            "clip": self.clip >= 0,
            "weight_decay": self.weight_decay >= 0,
            "log_every": self.log_every >= 1,
            "save_every": self.save_every >= 0,
            "max_steps": self.max_steps >= 0,
            "max_minutes": self.max_minutes >= 0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(
                "TrainConfig: invalid " + ", ".join(f"{k}={getattr(self, k)!r}" for k in bad)
            )
        object.__setattr__(self, "betas", tuple(self.betas))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)
