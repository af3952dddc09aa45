"""The one training loop every stage uses.

A stage supplies a :class:`Task` (its batches, its step, its evaluation and the files
that describe its model); the loop owns the optimizer, the schedule, mixed precision,
clipping, gradient accumulation, logging and resumable checkpoints. The loop's own
state lives in :class:`LoopState`, passed in and returned.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ulmfit.checkpoint import (
    load_training_state,
    optimizer_from_flat,
    restore_rng,
    save_training_state,
    write_dir_atomically,
)
from ulmfit.training import distributed
from ulmfit.training.config import TrainConfig
from ulmfit.training.metrics_log import MetricsLog
from ulmfit.training.param_groups import discriminative_lrs, make_param_groups, set_trainable
from ulmfit.training.schedules import Schedule, get_schedule

log = logging.getLogger(__name__)


class StepOutput(NamedTuple):
    loss: Tensor  # scalar to minimise (regularisers included)
    carry: Any  # what the next batch of this epoch receives (e.g. LSTM state)
    stats: Mapping[str, Tensor]  # summed quantities to average for the log, on device
    n: Tensor | int  # items these stats are summed over


class Task(Protocol):
    """What a training stage provides to :func:`fit`."""

    @property
    def model(self) -> nn.Module: ...

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Parameters grouped for discriminative rates, lowest group first."""
        ...

    def n_batches(self, epoch: int) -> int: ...

    def train_batches(self, epoch: int, start: int) -> Iterator[Any]:
        """Batches of ``epoch`` from index ``start``; each may have an ``lr_scale``."""
        ...

    def init_carry(self) -> Any: ...

    def train_step(self, model: nn.Module, batch: Any, carry: Any) -> StepOutput:
        """Loss of one batch through ``model`` (the task's model, or its DDP wrapper)."""
        ...

    def evaluate(self) -> dict[str, float]:
        """Validation metrics; by convention the main one first."""
        ...

    def save_files(self, model_dir: Path) -> None:
        """Write the model's config, weights and vocabulary into ``model_dir``."""
        ...

    def carry_to_tensors(self, carry: Any) -> dict[str, Tensor]: ...

    def carry_from_tensors(self, tensors: Mapping[str, Tensor]) -> Any: ...


@dataclass
class LoopState:
    """Where a run stands; everything else is derived from the config and this."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False


def autocast_for(
    device: torch.device, amp_dtype: torch.dtype | None
) -> contextlib.AbstractContextManager[Any]:
    """The autocast context of a training step (a no-op for plain fp32)."""
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=amp_dtype)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None: plain fp32)."""
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    if precision == "fp32":
        return None
    if device.type != "cuda":
        if precision == "fp16":
            raise ValueError("precision fp16 needs a CUDA device; use bf16 or fp32 on CPU")
        return torch.bfloat16
    return torch.bfloat16 if precision == "bf16" else torch.float16


def build_optimizer(
    groups: list[list[nn.Parameter]], config: TrainConfig, device: torch.device
) -> torch.optim.Optimizer:
    """Adam(W) over discriminative-rate parameter groups (fused kernel on CUDA)."""
    lrs = discriminative_lrs(config.lr, len(groups), config.disc_factor)
    param_groups = make_param_groups(groups, lrs, config.weight_decay)
    kwargs: dict[str, Any] = {"betas": config.betas, "eps": config.eps}
    if device.type == "cuda":
        kwargs["fused"] = True
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(param_groups, **kwargs)


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


#: TrainConfig fields that fix the sequence of steps and rates: a resumed run must keep them,
#: or its schedule would jump (``max_minutes``, ``max_steps``, logging and the like may change).
SCHEDULE_FIELDS = (
    "epochs",
    "lr",
    "schedule",
    "cut_frac",
    "ratio",
    "pct_start",
    "warmup_frac",
    "disc_factor",
    "grad_accum",
    "seed",
)


def _check_resumable(out_dir: Path, saved: dict[str, Any], config: TrainConfig) -> None:
    now = config.to_dict()
    changed = [
        f"{k}: {saved[k]!r} -> {now[k]!r}"
        for k in SCHEDULE_FIELDS
        if k in saved and saved[k] != now[k]
    ]
    if changed:
        raise ValueError(
            f"{out_dir}: cannot resume with a different schedule ({'; '.join(changed)}); "
            "use the saved settings or a new out_dir"
        )


def fit(
    task: Task,
    config: TrainConfig,
    out_dir: Path | None,
    *,
    state: LoopState | None = None,
    resume: bool = False,
    trainable_groups: int | Callable[[int], int] | None = None,
    save_checkpoints: bool = True,
    on_epoch_end: Callable[[dict[str, Any]], bool] | None = None,
) -> LoopState:
    """Train ``task.model`` for ``config.epochs`` epochs and return the final loop state.

    ``out_dir`` receives checkpoints (model files + training state) at each epoch end,
    every ``save_every`` steps and when ``max_steps`` stops the run, plus the metrics
    log. With ``resume=True`` a training state found there is restored first.
    ``trainable_groups`` freezes all but the top groups (a number, or a function of the
    epoch for gradual unfreezing); None trains everything. ``save_checkpoints=False``
    keeps only the metrics log in ``out_dir``. ``on_epoch_end(row)`` sees each epoch's
    metrics and may return True to stop early.
    """
    model = task.model
    device = model_device(model)
    dist_info = distributed.current()
    is_main = dist_info.is_main
    groups = task.layer_groups()
    optimizer = build_optimizer(groups, config, device)
    schedule: Schedule = get_schedule(**_schedule_kwargs(config))
    amp_dtype = resolve_precision(config.precision, device)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    state = state or LoopState()
    carry: Any = None
    # The epoch's running loss sums: saved mid-epoch, so a resumed epoch's train_loss
    # covers the steps before the stop too.
    resumed_sums: dict[str, Tensor] = {}
    resumed_count: Tensor | int = 0

    if resume and out_dir is not None and (saved := load_training_state(Path(out_dir))):
        meta, tensors = saved
        _check_resumable(Path(out_dir), meta.get("train_config", {}), config)
        optimizer_from_flat(optimizer, tensors, meta["optimizer"])
        restore_rng(tensors)
        state = LoopState(
            epoch=meta["epoch"],
            step_in_epoch=meta["step_in_epoch"],
            global_step=meta["global_step"],
            history=meta.get("history", []),
            finished=meta.get("finished", False),
        )
        carry_t = {
            k[len("extra.carry.") :]: v for k, v in tensors.items() if k.startswith("extra.carry.")
        }
        if carry_t and state.step_in_epoch > 0:
            carry = task.carry_from_tensors({k: v.to(device) for k, v in carry_t.items()})
        if state.step_in_epoch > 0 and is_main:
            resumed_sums = {
                k[len("extra.sums.") :]: v.to(device)
                for k, v in tensors.items()
                if k.startswith("extra.sums.")
            }
            if "extra.count" in tensors:
                resumed_count = tensors["extra.count"].to(device)
        log.info("resumed from %s at epoch %d, step %d", out_dir, state.epoch, state.global_step)

    total_steps = sum(task.n_batches(e) for e in range(config.epochs))
    metrics_log = MetricsLog(Path(out_dir)) if (out_dir is not None and is_main) else None
    if metrics_log is not None and not resume:
        metrics_log.clear()  # a new run's log starts empty, also in a replaced directory

    def save(
        finished: bool = False,
        running: Mapping[str, Tensor] | None = None,
        running_n: Tensor | int = 0,
    ) -> None:
        if out_dir is None or not save_checkpoints:
            return
        if running is not None and dist_info.world_size > 1:
            # Every rank calls save: the sums saved are the whole group's (rank 0 alone
            # carries them on after a resume).
            running = {k: distributed.all_reduce_sum(v) for k, v in running.items()}
            running_n = distributed.all_reduce_sum(
                torch.as_tensor(running_n, dtype=torch.float64, device=device)
            )
        if not is_main:
            return
        meta = {
            "epoch": state.epoch,
            "step_in_epoch": state.step_in_epoch,
            "global_step": state.global_step,
            "total_steps": total_steps,
            "history": state.history,
            "finished": finished,
            "train_config": config.to_dict(),
        }
        extra = {}
        if carry is not None:
            extra = {f"carry.{k}": v for k, v in task.carry_to_tensors(carry).items()}
        if running is not None:
            extra.update({f"sums.{k}": v for k, v in running.items()})
            extra["count"] = torch.as_tensor(running_n, dtype=torch.float64)

        def fill(tmp: Path) -> None:
            task.save_files(tmp)
            save_training_state(tmp, meta, optimizer, extra)

        write_dir_atomically(Path(out_dir), fill)

    deadline = time.monotonic() + 60 * config.max_minutes if config.max_minutes else None
    autocast = autocast_for(device, amp_dtype)
    while state.epoch < config.epochs and not state.finished:
        epoch = state.epoch
        if trainable_groups is not None:
            n = trainable_groups(epoch) if callable(trainable_groups) else trainable_groups
            set_trainable(groups, n)
        model.train()
        # Under torchrun, DDP averages gradients in backward; wrapped after freezing so it
        # hooks exactly the parameters this epoch trains.
        ddp = _wrap_ddp(model, device) if dist_info.world_size > 1 else None
        sums: dict[str, Tensor] = {}
        count: Tensor | int = 0
        if state.step_in_epoch == 0:
            carry = task.init_carry()
        else:
            sums, count = dict(resumed_sums), resumed_count
        n_batches = task.n_batches(epoch)
        t0 = time.perf_counter()
        bar = _progress(n_batches, state.step_in_epoch, epoch, config.progress and is_main)
        stopped_early = False
        for batch in task.train_batches(epoch, state.step_in_epoch):
            mult = schedule(state.global_step, total_steps) * float(getattr(batch, "lr_scale", 1.0))
            for g in optimizer.param_groups:
                g["lr"] = g["base_lr"] * mult
            at_boundary = (state.step_in_epoch + 1) % config.grad_accum == 0
            steps_now = at_boundary or state.step_in_epoch + 1 == n_batches
            # Accumulation micro-steps keep their gradients local: DDP all-reduces the sum
            # once, in the backward that precedes the optimizer step.
            local = ddp.no_sync() if ddp is not None and not steps_now else contextlib.nullcontext()
            with local:
                with autocast:
                    out = task.train_step(model if ddp is None else ddp, batch, carry)
                loss = out.loss / config.grad_accum
                if scaler is not None:
                    scaler.scale(loss).backward()
                else:
                    loss.backward()
            carry = out.carry
            for k, v in out.stats.items():
                sums[k] = sums[k] + v.detach() if k in sums else v.detach().float()
            count = count + out.n
            state.step_in_epoch += 1
            state.global_step += 1
            if steps_now:
                optimizer_step(model, optimizer, scaler, config.clip)
            if bar is not None:
                bar.update(1)
            if state.global_step % config.log_every == 0:
                row = _summarise(sums, count)  # one host sync per log_every steps (this rank)
                row.update(epoch=epoch, step=state.global_step, lr=optimizer.param_groups[-1]["lr"])
                state.history.append(row)
                if bar is not None:
                    bar.set_postfix(
                        {k: f"{v:.4g}" for k, v in row.items() if k.startswith("train_")}
                    )
            if at_boundary and config.save_every and state.global_step % config.save_every == 0:
                save(running=sums, running_n=count)
            out_of_steps = bool(config.max_steps) and state.global_step >= config.max_steps
            out_of_time = deadline is not None and time.monotonic() > deadline
            if at_boundary and (out_of_steps or out_of_time):
                stopped_early = True
                break
        if bar is not None:
            bar.close()
        if ddp is not None:
            # DDP objects live in reference cycles: left to the cyclic GC, this one could be
            # freed after the caller's destroy_process_group(), and its reducer would then
            # abort the process. Free it now.
            ddp = None
            gc.collect()
        if stopped_early:
            save(running=sums, running_n=count)
            why = (
                f"max_steps={config.max_steps}"
                if out_of_steps
                else f"max_minutes={config.max_minutes}"
            )
            log.info("stopped at step %d (%s); resume to continue", state.global_step, why)
            return state
        sums = {k: distributed.all_reduce_sum(v) for k, v in sums.items()}
        count = distributed.all_reduce_sum(
            torch.as_tensor(count, dtype=torch.float64, device=device)
        )
        row = {"epoch": epoch, "step": state.global_step, **_summarise(sums, count)}
        row["train_time_s"] = time.perf_counter() - t0
        model.eval()
        distributed.broadcast_buffers(model)  # every rank scores rank 0's model
        with torch.inference_mode(), autocast:
            row.update(task.evaluate())
        row["lr"] = optimizer.param_groups[-1]["lr"]
        state.history.append({**row, "epoch_end": True})
        log.info("epoch %d: %s", epoch, _fmt(row))
        if metrics_log is not None:
            metrics_log.append(row)
        state.epoch += 1
        state.step_in_epoch = 0
        carry = None
        stop = on_epoch_end(row) if on_epoch_end is not None else False
        state.finished = state.epoch >= config.epochs or stop
        save(finished=state.finished)
    if metrics_log is not None:
        metrics_log.plot(state.history)
    return state


def _wrap_ddp(model: nn.Module, device: torch.device) -> DistributedDataParallel:
    """DDP over ``model`` for one epoch's trainable parameters."""
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def optimizer_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    clip: float,
) -> None:
    """Unscale (fp16), clip, step and zero the gradients: the end of every training step."""
    if scaler is not None:
        scaler.unscale_(optimizer)
    if clip:
        params = [p for p in model.parameters() if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, clip, foreach=True)  # no host sync
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _summarise(sums: Mapping[str, Tensor], count: Tensor | int) -> dict[str, float]:
    n = float(count)
    out = {f"train_{k}": float(v) / max(n, 1.0) for k, v in sums.items()}
    return out


def _schedule_kwargs(config: TrainConfig) -> dict[str, Any]:
    name = config.schedule
    if name == "stlr":
        return {"name": name, "cut_frac": config.cut_frac, "ratio": config.ratio}
    if name == "one_cycle":
        return {"name": name, "pct_start": config.pct_start}
    if name == "warmup_cosine":
        return {"name": name, "warmup_frac": config.warmup_frac}
    return {"name": name}


def _progress(total: int, initial: int, epoch: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    # disable=None: a bar on a terminal, none in a log file (where \r updates are noise).
    return tqdm(
        total=total, initial=initial, desc=f"epoch {epoch}", unit="batch", leave=False, disable=None
    )


def _fmt(row: Mapping[str, Any]) -> str:
    return json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
