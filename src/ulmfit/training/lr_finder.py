"""The learning-rate range test (Smith 2017): raise the rate each step, watch the loss."""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ulmfit.checkpoint import save_figure
from ulmfit.training.config import TrainConfig
from ulmfit.training.loop import (
    Task,
    autocast_for,
    build_optimizer,
    model_device,
    resolve_precision,
)

log = logging.getLogger(__name__)


@dataclass
class LRFinderResult:
    lrs: list[float]
    losses: list[float]  # exponentially smoothed
    suggestion: float  # a tenth of the rate at the lowest smoothed loss
    steepest: float  # the rate where the smoothed loss falls fastest

    def plot(self, path: Path) -> Path | None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            log.warning("matplotlib is not installed (pip install 'ulmfit[plot]'): no plot written")
            return None
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(self.lrs, self.losses)
        ax.set_xscale("log")
        ax.axvline(
            self.suggestion, color="red", linestyle="--", label=f"suggested {self.suggestion:.2e}"
        )
        ax.axvline(
            self.steepest, color="gray", linestyle=":", label=f"steepest {self.steepest:.2e}"
        )
        ax.set_xlabel("learning rate (top group)")
        ax.set_ylabel("smoothed training loss")
        ax.legend()
        fig.tight_layout()
        try:
            save_figure(fig, path, dpi=100)
        finally:
            plt.close(fig)
        return path


def lr_find(
    task: Task,
    config: TrainConfig,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    smooth: float = 0.98,
    diverge: float = 4.0,
) -> LRFinderResult:
    """Run the range test on ``task`` and restore the model's weights afterwards."""
    model = task.model
    device = model_device(model)
    saved = copy.deepcopy(model.state_dict())
    rng = torch.get_rng_state()
    optimizer = build_optimizer(task.layer_groups(), config.replace(lr=start_lr), device)
    amp_dtype = resolve_precision(config.precision, device)
    lrs: list[float] = []
    losses: list[float] = []
    avg, best = 0.0, math.inf
    carry = task.init_carry()
    model.train()
    step, epoch = 0, 0
    try:
        while step < num_steps:
            for batch in task.train_batches(epoch, 0):
                mult = (end_lr / start_lr) ** (step / max(1, num_steps - 1))
                for g in optimizer.param_groups:
                    g["lr"] = g["base_lr"] * mult
                with autocast_for(device, amp_dtype):
                    out = task.train_step(model, batch, carry)
                out.loss.backward()
                carry = out.carry
                if config.clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                loss = float(out.loss.detach())  # the range test needs each value: a sync per step
                avg = smooth * avg + (1 - smooth) * loss
                smoothed = avg / (1 - smooth ** (step + 1))
                lrs.append(optimizer.param_groups[-1]["lr"])
                losses.append(smoothed)
                best = min(best, smoothed)
                step += 1
                if step >= num_steps or not math.isfinite(smoothed) or smoothed > diverge * best:
                    step = num_steps
                    break
            epoch += 1
    finally:
        model.load_state_dict(saved)
        torch.set_rng_state(rng)
    i_min = min(range(len(losses)), key=losses.__getitem__)
    grads = [losses[i + 1] - losses[i] for i in range(len(losses) - 1)] or [0.0]
    i_steep = min(range(len(grads)), key=grads.__getitem__)
    return LRFinderResult(lrs, losses, lrs[i_min] / 10, lrs[i_steep])
