"""Training throughput of the ULMFiT language model against a raw ``nn.LSTM`` ceiling.

Three systems are timed side by side, in the same process, for each batch size:

``fit``
    Our full training step: the real :func:`ulmfit.training.loop.fit` loop with an
    :class:`~ulmfit.tasks.lm.LMTask` over an :class:`~ulmfit.data.lm.LMStream` (data
    slicing, variable BPTT, all AWD-LSTM dropouts, AR/TAR, gradient clipping, the STLR
    schedule with discriminative rates, AdamW, mixed precision as the loop sets it up).
``model step``
    Our :class:`~ulmfit.models.awd_lstm.AWDLSTMLanguageModel` (dropouts + AR/TAR) with
    clipping and AdamW in a bare loop over pre-sliced device tensors: no data pipeline,
    no schedule. ``ceiling -> model step`` is the model's cost, ``model step -> fit``
    the pipeline's.
``ceiling``
    Three single-layer ``nn.LSTM`` (emb -> hidden -> hidden -> emb, batch-first) and a
    tied softmax decoder, no dropout, the same optimizer (AdamW, fused on CUDA) and
    clipping, in the same bare loop with a fixed BPTT.
``fastai learner`` (only where ``fastai`` imports; never a project dependency)
    fastai 2's own pipeline end to end, as its users train the same model:
    ``LMDataLoader`` over the same synthetic documents, ``get_language_model(AWD_LSTM)``
    at the same sizes, ``LMLearner`` (its AR/TAR and state-resetting callbacks) with
    ``GradientClip`` and ``to_bf16()``/``to_fp16()``, ``learn.fit``. A callback starts
    the clock at batch ``warmup`` and stops the fit after ``--steps`` more.

Tokens/s counts the target tokens actually trained on (variable BPTT makes batch
lengths vary), over ``--steps`` steps after ``--warmup`` steps, by wall clock
(``torch.cuda.synchronize()`` before each clock read on a GPU). The data is synthetic:
Zipf-distributed token ids with a document boundary every ~500 tokens. Sizes are the
paper's (vocab 60k, emb 400, hidden 1152, 3 layers) or ``--sizes small`` for a quick
check. On a GPU the bar is ``fit >= 0.9 x ceiling`` under bf16; peak GPU memory
(``torch.cuda.max_memory_allocated``) is reported per row.

The table is printed last and appended, with the command line, date and hardware, to
``benchmarks/RESULTS.md`` (``--no-write`` to skip; ``--json PATH`` also dumps the raw
numbers; ``--profile PATH`` writes where ``fit``'s time goes: ``torch.profiler`` over the
timed steps at the largest bs, with host reads and syncs per step and the GPU's busy
share). Run from the repository root::

    PYTHONPATH=src python benchmarks/lm_throughput.py --device cpu  # 2-6 min on 2 busy cores
    PYTHONPATH=src python benchmarks/lm_throughput.py --device cpu --sizes small --steps 20
    PYTHONPATH=src python benchmarks/lm_throughput.py --device cuda --precision bf16 \\
        --bs 64 256 --json $OUT/lm_throughput.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import importlib.util
import itertools
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench_env import cpu_model, precision_name, sync
from ulmfit.data.lm import LMBatch, LMDataConfig, LMStream
from ulmfit.models.awd_lstm import (
    AWDLSTMConfig,
    AWDLSTMLanguageModel,
    State,
    ar_tar_penalty,
    detach_state,
    lm_loss,
)
from ulmfit.tasks.lm import LMTask
from ulmfit.training.config import TrainConfig
from ulmfit.training.loop import autocast_for, fit, optimizer_step, resolve_precision

SIZES: dict[str, dict[str, int]] = {
    "paper": {"vocab_size": 60_000, "emb_size": 400, "hidden_size": 1152, "n_layers": 3},
    "small": {"vocab_size": 2_000, "emb_size": 64, "hidden_size": 128, "n_layers": 2},
}
SYSTEMS = ("fit", "ceiling", "model step")
FASTAI = "fastai learner"  # an extra system where fastai is importable
BAR = 0.9  # fit must reach this fraction of the ceiling on GPU under bf16
DOC_LEN = 500  # synthetic document length (tokens)
#: Defaults that depend on the device: a 2-core CPU needs ~15 s per paper-size step.
DEFAULTS = {
    "cpu": {"bs": [64], "steps": 2, "warmup": 1, "repeats": 1},
    "cuda": {"bs": [64, 256], "steps": 50, "warmup": 10, "repeats": 3},
}
TRAIN = TrainConfig()  # the recipe's optimizer settings, shared by all three systems
DEFAULT_OUT = Path(__file__).resolve().parent / "RESULTS.md"


@dataclass
class Result:
    """One timed run of one system."""

    device: str
    precision: str
    bs: int
    system: str
    repeat: int
    steps: int
    tokens: int
    seconds: float
    peak_mem_bytes: int | None

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


# --------------------------------------------------------------------------- helpers


def free_memory(device: torch.device) -> None:
    """Release the previous system's tensors and reset the peak-memory counter."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def zipf_tokens(n: int, vocab_size: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` int32 token ids with Zipf(1) frequencies over ids ``2..vocab_size-1``."""
    ranks = np.arange(1, vocab_size - 1, dtype=np.float64)
    cdf = np.cumsum(1.0 / ranks)
    cdf /= cdf[-1]
    idx = np.searchsorted(cdf, rng.random(n), side="right")
    return (np.minimum(idx, len(ranks) - 1) + 2).astype(np.int32)  # skip unk=0, pad=1


def synthetic_corpus(n_tokens: int, vocab_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and document offsets (a boundary every ~``DOC_LEN`` tokens)."""
    ids = zipf_tokens(n_tokens, vocab_size, np.random.default_rng(seed))
    offsets = np.append(np.arange(0, n_tokens, DOC_LEN, dtype=np.int64), n_tokens)
    return ids, offsets


def model_config(sizes: str) -> AWDLSTMConfig:
    """ULMFiT's LM (all dropouts at their defaults) at the chosen sizes."""
    s = SIZES[sizes]
    return AWDLSTMConfig(
        vocab_size=s["vocab_size"],
        emb_size=s["emb_size"],
        hidden_size=s["hidden_size"],
        n_layers=s["n_layers"],
    )


def adamw(params: Iterator[nn.Parameter], device: torch.device) -> torch.optim.Optimizer:
    """AdamW with the recipe's settings, one group, fused on CUDA (as ``build_optimizer``)."""
    return torch.optim.AdamW(
        list(params),
        lr=TRAIN.lr,
        betas=TRAIN.betas,
        eps=TRAIN.eps,
        weight_decay=TRAIN.weight_decay,
        fused=device.type == "cuda",
    )


def presliced_batches(
    n: int, bs: int, bptt: int, vocab_size: int, device: torch.device, seed: int
) -> list[tuple[Tensor, Tensor]]:
    """``n`` contiguous ``(x, y)`` pairs of shape ``(bs, bptt)`` already on the device."""
    ids, _ = synthetic_corpus(bs * (n * bptt + 1), vocab_size, seed)
    rows = torch.from_numpy(ids.astype(np.int64)).view(bs, -1).to(device)
    return [
        (
            rows[:, i * bptt : (i + 1) * bptt].contiguous(),
            rows[:, i * bptt + 1 : (i + 1) * bptt + 1].contiguous(),
        )
        for i in range(n)
    ]


# --------------------------------------------------------------------------- systems


class CeilingLM(nn.Module):
    """Raw ``nn.LSTM`` stack + tied decoder, no dropout: the speed ceiling."""

    def __init__(self, config: AWDLSTMConfig) -> None:
        super().__init__()
        self.embedding = nn.Embedding(config.vocab_size, config.emb_size)
        self.rnns = nn.ModuleList(
            nn.LSTM(n_in, n_out, batch_first=True) for n_in, n_out in config.layer_sizes()
        )
        self.decoder = nn.Linear(config.emb_size, config.vocab_size)
        self.decoder.weight = self.embedding.weight

    def forward(self, x: Tensor, state: State | None) -> tuple[Tensor, State]:
        h = self.embedding(x)
        new_state = []
        for i, rnn in enumerate(self.rnns):
            h, s = rnn(h, None if state is None else state[i])
            new_state.append(s)
        return self.decoder(h), tuple(new_state)


StepFn = Callable[[Tensor, Tensor, State | None], tuple[Tensor, State]]


def bare_loop(
    model: nn.Module,
    step_fn: StepFn,
    batches: list[tuple[Tensor, Tensor]],
    device: torch.device,
    amp: torch.dtype | None,
    warmup: int,
) -> tuple[int, float]:
    """Train over ``batches`` (clip + AdamW each step); time all but the first ``warmup``."""
    optimizer = adamw(model.parameters(), device)
    # fp16 needs loss scaling (as fit does it); bf16 and fp32 do not.
    scaler = torch.amp.GradScaler(device.type) if amp == torch.float16 else None
    model.train()
    state: State | None = None
    tokens, t0 = 0, 0.0
    for i, (x, y) in enumerate(batches):
        if i == warmup:
            sync(device)
            t0 = time.perf_counter()
        with autocast_for(device, amp):
            loss, new_state = step_fn(x, y, state)
        state = detach_state(new_state)
        (loss if scaler is None else scaler.scale(loss)).backward()
        optimizer_step(model, optimizer, scaler, TRAIN.clip)  # the loop's own step
        if i >= warmup:
            tokens += y.numel()
    sync(device)
    return tokens, time.perf_counter() - t0


def run_ceiling(
    cfg: AWDLSTMConfig,
    bs: int,
    bptt: int,
    device: torch.device,
    amp: torch.dtype | None,
    warmup: int,
    steps: int,
    seed: int,
) -> tuple[int, float]:
    """The raw ``nn.LSTM`` ceiling over pre-sliced device tensors."""
    torch.manual_seed(seed)
    model = CeilingLM(cfg).to(device)
    batches = presliced_batches(warmup + steps, bs, bptt, cfg.vocab_size, device, seed)

    def step(x: Tensor, y: Tensor, state: State | None) -> tuple[Tensor, State]:
        logits, new_state = model(x, state)
        return F.cross_entropy(logits.flatten(0, 1), y.flatten()), new_state

    return bare_loop(model, step, batches, device, amp, warmup)


def run_model_step(
    cfg: AWDLSTMConfig,
    bs: int,
    bptt: int,
    device: torch.device,
    amp: torch.dtype | None,
    warmup: int,
    steps: int,
    seed: int,
) -> tuple[int, float]:
    """Our model (dropouts + AR/TAR) in the same bare loop as the ceiling."""
    torch.manual_seed(seed)
    model = AWDLSTMLanguageModel(cfg).to(device)
    batches = presliced_batches(warmup + steps, bs, bptt, cfg.vocab_size, device, seed)

    def step(x: Tensor, y: Tensor, state: State | None) -> tuple[Tensor, State]:
        out = model(x, state)
        penalty = ar_tar_penalty(out.output, out.raw_output, TRAIN.alpha, TRAIN.beta)
        return lm_loss(out.logits, y) + penalty, out.state

    return bare_loop(model, step, batches, device, amp, warmup)


class TimedLMTask(LMTask):
    """:class:`LMTask` that starts the clock when batch ``warmup`` is requested.

    ``fit`` asks for the next batch only after the previous step (optimizer included)
    is queued, so the timed span is exactly steps ``warmup..max_steps-1``.
    """

    def __init__(
        self,
        *args: Any,
        warmup: int,
        on_batch: Callable[[], object] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.warmup = warmup
        self.on_batch = on_batch  # e.g. a profiler's step(), called before each batch
        self.t0 = 0.0
        self.tokens = 0

    def train_batches(self, epoch: int, start: int) -> Iterator[LMBatch]:
        device = self.train.device
        for i, batch in enumerate(super().train_batches(epoch, start), start):
            if self.on_batch is not None:
                self.on_batch()
            if i == self.warmup:
                sync(device)
                self.t0 = time.perf_counter()
            if i >= self.warmup:
                self.tokens += batch.y.numel()
            yield batch


def run_fit(
    cfg: AWDLSTMConfig,
    bs: int,
    bptt: int,
    device: torch.device,
    precision: str,
    warmup: int,
    steps: int,
    seed: int,
    on_batch: Callable[[], object] | None = None,
) -> tuple[int, float]:
    """Our full pipeline: ``fit`` + ``LMTask`` over an ``LMStream`` of just enough tokens."""
    torch.manual_seed(seed)
    data_cfg = LMDataConfig(bs=bs, bptt=bptt)  # variable BPTT, shuffled documents
    n_steps = warmup + steps
    n_cols = int((n_steps + 3) * bptt * 1.1)
    while True:  # variable BPTT: grow until the epoch outlasts max_steps
        ids, offsets = synthetic_corpus(bs * n_cols, cfg.vocab_size, seed)
        stream = LMStream(ids, offsets, data_cfg, train=True, seed=seed, device=device)
        if len(stream.seq_lens(0)) > n_steps:
            break
        n_cols = int(n_cols * 1.2)
    model = AWDLSTMLanguageModel(cfg).to(device)
    task = TimedLMTask(
        model, stream, None, alpha=TRAIN.alpha, beta=TRAIN.beta, warmup=warmup, on_batch=on_batch
    )
    train_cfg = TRAIN.replace(
        epochs=1,
        max_steps=n_steps,
        precision=precision,
        progress=False,
        log_every=10**9,
        save_every=0,
        seed=seed,
    )
    state = fit(task, train_cfg, None)
    sync(device)
    elapsed = time.perf_counter() - task.t0
    if state.global_step != n_steps:
        raise RuntimeError(f"fit ran {state.global_step} steps, expected {n_steps}")
    return task.tokens, elapsed


#: Ops whose count says how often the host waited for the device (``.item()`` & co).
HOST_READ_OPS = ("aten::_local_scalar_dense",)
SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")


def profile_fit(
    cfg: AWDLSTMConfig,
    bs: int,
    bptt: int,
    device: torch.device,
    precision: str,
    warmup: int,
    steps: int,
    seed: int,
) -> str:
    """Where ``fit``'s time goes: ``torch.profiler`` over ``steps`` steps after ``warmup``.

    A report of the per-step host reads and synchronisations, the device's busy share of
    the wall clock (on CUDA: well under 1 means the host or launches hold the GPU back),
    and the operators by self time.
    """
    from torch.profiler import ProfilerActivity, profile, schedule

    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    # Step 0 is fit's set-up; batch i runs in profiler step i + 1 (step() comes before it).
    plan = schedule(wait=1, warmup=max(warmup, 1), active=steps, repeat=1)
    with profile(activities=activities, schedule=plan) as prof:
        tokens, seconds = run_fit(
            cfg, bs, bptt, device, precision, max(warmup, 1), steps, seed, on_batch=prof.step
        )
    events = prof.key_averages()
    counts = {e.key: e.count for e in events}
    reads = sum(counts.get(k, 0) for k in HOST_READ_OPS)
    syncs = sum(counts.get(k, 0) for k in SYNC_CALLS)
    lines = [
        f"fit, {device.type}, {precision}, bs {bs}, bptt {bptt}: {steps} profiled steps after "
        f"{max(warmup, 1)} ({tokens / seconds:,.0f} tokens/s with the profiler on)",
        f"host reads (.item() etc.) per step: {reads / steps:.2f}"
        + ("" if device.type == "cuda" else " (free on a CPU: AdamW's step counters)"),
        f"device synchronisations per step: {syncs / steps:.2f} (the timer's own 2 included)",
    ]
    if device.type == "cuda":
        busy_us = sum(e.self_device_time_total for e in events)
        lines.append(
            f"device busy: {busy_us / 1e3:.1f} ms of {seconds * 1e3:.1f} ms wall "
            f"({busy_us / 1e6 / seconds:.0%})"
        )
        sort = "self_device_time_total"
    else:
        sort = "self_cpu_time_total"
    lines += ["", events.table(sort_by=sort, row_limit=30)]
    return "\n".join(lines) + "\n"


def fastai_available() -> bool:
    """True where ``fastai`` is importable (a throwaway venv, or wheels carried to a GPU)."""
    return importlib.util.find_spec("fastai") is not None


def run_fastai(
    cfg: AWDLSTMConfig,
    bs: int,
    bptt: int,
    device: torch.device,
    amp: torch.dtype | None,
    warmup: int,
    steps: int,
    seed: int,
) -> tuple[int, float]:
    """fastai's Learner end to end on the same synthetic documents and sizes."""
    from fastai.text.all import (  # type: ignore[import-not-found,unused-ignore]
        AWD_LSTM,
        Callback,
        CancelFitException,
        CrossEntropyLossFlat,
        DataLoaders,
        GradientClip,
        LMDataLoader,
        LMLearner,
        awd_lstm_lm_config,
        awd_lstm_lm_split,
        get_language_model,
    )

    n_steps = warmup + steps

    class Timer(Callback):  # type: ignore[misc,unused-ignore]
        """Clock from batch ``warmup`` to the end of batch ``n_steps - 1``, then stop."""

        order = 99

        def before_fit(self) -> None:
            self.i, self.tokens, self.t0, self.seconds = 0, 0, 0.0, 0.0

        def before_batch(self) -> None:
            if self.i == warmup:
                sync(device)
                self.t0 = time.perf_counter()

        def after_batch(self) -> None:
            if self.i >= warmup:
                self.tokens += self.learn.yb[0].numel()
            self.i += 1
            if self.i == n_steps:
                sync(device)
                self.seconds = time.perf_counter() - self.t0
                raise CancelFitException()

    torch.manual_seed(seed)
    # fastai's LMDataLoader cuts bs * seq_len tokens per batch: enough for n_steps + 2.
    ids, offsets = synthetic_corpus(bs * bptt * (n_steps + 2) + bs, cfg.vocab_size, seed)
    docs = [torch.from_numpy(ids[s:e].astype(np.int64)) for s, e in itertools.pairwise(offsets)]
    train = LMDataLoader(docs, bs=bs, seq_len=bptt, shuffle=True, device=device)
    valid = LMDataLoader(docs[: 4 * bs], bs=bs, seq_len=bptt, device=device)  # never reached
    config = {
        **awd_lstm_lm_config,
        "emb_sz": cfg.emb_size,
        "n_hid": cfg.hidden_size,
        "n_layers": cfg.n_layers,
    }
    model = get_language_model(AWD_LSTM, cfg.vocab_size, config=config)
    timer = Timer()
    learn = LMLearner(
        DataLoaders(train, valid, device=device),
        model,
        loss_func=CrossEntropyLossFlat(),
        splitter=awd_lstm_lm_split,
        cbs=[GradientClip(TRAIN.clip), timer],
    )
    if amp == torch.bfloat16:
        learn = learn.to_bf16()
    elif amp == torch.float16:
        learn = learn.to_fp16()
    with learn.no_bar(), learn.no_logging():
        learn.fit(1, lr=TRAIN.lr, wd=TRAIN.weight_decay)
    if timer.i != n_steps:
        raise RuntimeError(f"fastai ran {timer.i} batches, expected {n_steps}")
    return timer.tokens, timer.seconds


# --------------------------------------------------------------------------- driver


def measure(args: argparse.Namespace, device: torch.device) -> list[Result]:
    """Every (precision, bs, repeat, system), systems alternating within each repeat."""
    cfg = model_config(args.sizes)
    systems = list(SYSTEMS)
    if args.fastai == "yes" or (args.fastai == "auto" and fastai_available()):
        systems.append(FASTAI)
    results: list[Result] = []
    for precision in args.precision:
        amp = resolve_precision(precision, device)
        label = precision_name(amp)
        for bs in args.bs:
            for repeat in range(args.repeats):
                for system in systems:
                    free_memory(device)
                    common = (cfg, bs, args.bptt, device)
                    timing = (args.warmup, args.steps, args.seed + repeat)
                    if system == "fit":
                        tokens, seconds = run_fit(*common, label, *timing)
                    elif system == "ceiling":
                        tokens, seconds = run_ceiling(*common, amp, *timing)
                    elif system == FASTAI:
                        tokens, seconds = run_fastai(*common, amp, *timing)
                    else:
                        tokens, seconds = run_model_step(*common, amp, *timing)
                    r = Result(
                        device.type,
                        label,
                        bs,
                        system,
                        repeat,
                        args.steps,
                        tokens,
                        seconds,
                        peak_memory(device),
                    )
                    results.append(r)
                    print(
                        f"[{device.type} {label} bs={bs} #{repeat}] {system:<10} "
                        f"{r.tokens_per_s:>12,.0f} tok/s ({tokens} tokens in {seconds:.2f} s)",
                        file=sys.stderr,
                        flush=True,
                    )
    free_memory(device)
    return results


def summarise(results: list[Result]) -> list[dict[str, Any]]:
    """One row per (device, precision, bs, system): median tokens/s over repeats."""
    rows: list[dict[str, Any]] = []
    keys = list(dict.fromkeys((r.device, r.precision, r.bs) for r in results))
    for dev, prec, bs in keys:
        group = [r for r in results if (r.device, r.precision, r.bs) == (dev, prec, bs)]
        systems = list(dict.fromkeys(r.system for r in group))
        medians = {
            s: statistics.median(r.tokens_per_s for r in group if r.system == s) for s in systems
        }
        for system in systems:
            runs = [r for r in group if r.system == system]
            mems = [r.peak_mem_bytes for r in runs if r.peak_mem_bytes is not None]
            ratio = medians[system] / medians["ceiling"]
            bar = ""
            if dev == "cuda" and prec == "bf16" and system in ("fit", "model step"):
                bar = "pass" if ratio >= BAR else "fail"
            rows.append(
                {
                    "device": dev,
                    "precision": prec,
                    "bs": bs,
                    "system": system,
                    "tokens_per_s": medians[system],
                    "ratio": ratio,
                    "peak_mem_gib": max(mems) / 2**30 if mems else None,
                    "bar": bar,
                    "repeats": len(runs),
                }
            )
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The summary as a Markdown table."""
    head = [
        "device",
        "precision",
        "bs",
        "system",
        "tokens/s",
        "x ceiling",
        "peak mem (GiB)",
        f"bar (>= {BAR}x, GPU bf16)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        mem = "-" if r["peak_mem_gib"] is None else f"{r['peak_mem_gib']:.2f}"
        cells = [
            r["device"],
            r["precision"],
            str(r["bs"]),
            r["system"],
            f"{r['tokens_per_s']:,.0f}",
            f"{r['ratio']:.2f}",
            mem,
            r["bar"] or "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def hardware(device: torch.device) -> dict[str, Any]:
    """CPU model, cores, threads, torch/CUDA versions and GPU name."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def write_section(path: Path, args: argparse.Namespace, hw: dict[str, Any], table: str) -> None:
    """Append this run's section to ``path`` (created with a header if missing)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            "# Benchmark results\n\n"
            "Sections are appended by the scripts in `benchmarks/`, newest last; "
            "earlier sections are never rewritten.\n",
            encoding="utf-8",
        )
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sizes = ", ".join(f"{k} {v}" for k, v in SIZES[args.sizes].items())
    hw_line = ", ".join(f"{k} {v}" for k, v in hw.items())
    section = (
        f"\n## lm_throughput: {now}\n\n"
        f"```\n{command_line()}\n```\n\n"
        f"- hardware: {hw_line}\n"
        f"- sizes: {args.sizes} ({sizes}), bptt {args.bptt}\n"
        f"- timing: {args.steps} steps after {args.warmup} warmup, "
        f"median of {args.repeats} repeat(s); tokens/s = target tokens / wall second\n\n"
        f"{table}\n"
    )
    with path.open("a", encoding="utf-8") as f:
        f.write(section)


def write_json(
    path: Path,
    args: argparse.Namespace,
    hw: dict[str, Any],
    results: list[Result],
    summary: list[dict[str, Any]],
    total_s: float,
) -> None:
    """The raw timings and their summary, for ``--json``."""
    payload = {
        "command": command_line(),
        "hardware": hw,
        "sizes": SIZES[args.sizes],
        "bptt": args.bptt,
        "steps": args.steps,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "total_s": total_s,
        "results": [{**asdict(r), "tokens_per_s": r.tokens_per_s} for r in results],
        "summary": summary,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def write_profile(args: argparse.Namespace, device: torch.device) -> None:
    """``--profile``: :func:`profile_fit` at the largest bs and the first precision."""
    label = precision_name(resolve_precision(args.precision[0], device))
    free_memory(device)
    try:
        report = profile_fit(
            model_config(args.sizes),
            max(args.bs),
            args.bptt,
            device,
            label,
            args.warmup,
            args.steps,
            args.seed,
        )
    except Exception as e:  # a profiler failure must not cost the timings already taken
        report = f"profiling failed: {type(e).__name__}: {e}\n"
    args.profile.parent.mkdir(parents=True, exist_ok=True)
    args.profile.write_text(f"{command_line()}\n\n{report}", encoding="utf-8")
    print(report.split("\n\n")[0], file=sys.stderr, flush=True)


def command_line() -> str:
    return "PYTHONPATH=src python " + shlex.join(sys.argv)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the CLI; device-dependent defaults are filled in by :func:`main`."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--sizes", default="paper", choices=sorted(SIZES))
    p.add_argument("--bs", type=int, nargs="+", help="batch sizes (cpu: 64; cuda: 64 256)")
    p.add_argument("--bptt", type=int, default=70)
    p.add_argument("--steps", type=int, help="timed steps (cpu: 2; cuda: 50)")
    p.add_argument("--warmup", type=int, help="untimed steps first (cpu: 1; cuda: 10)")
    p.add_argument("--repeats", type=int, help="rounds of all systems; median (cpu 1, cuda 3)")
    p.add_argument(
        "--precision",
        nargs="+",
        default=["auto"],
        choices=["auto", "bf16", "fp16", "fp32"],
        help="auto: bf16 on a GPU that has it, else fp32",
    )
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument(
        "--fastai",
        choices=["auto", "yes", "no"],
        default="auto",
        help="time fastai's Learner too (auto: where fastai imports)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Markdown file to append to")
    p.add_argument("--no-write", action="store_true", help="do not append to --out")
    p.add_argument("--json", type=Path, help="also dump raw results and the summary here")
    p.add_argument(
        "--profile",
        type=Path,
        help="also profile fit (the largest bs, the first precision) and write the report here",
    )
    return p.parse_args(argv)


def resolve(args: argparse.Namespace) -> torch.device:
    """The device, with the device-dependent defaults filled into ``args``."""
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but CUDA is not available")
    if device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    for key, value in DEFAULTS[device.type].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.steps < 1 or args.warmup < 0 or args.repeats < 1 or min(args.bs) < 1:
        raise SystemExit("--steps, --repeats and --bs must be >= 1, --warmup >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.precision = list(dict.fromkeys(args.precision))
    return device


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve(args)
    hw = hardware(device)
    if hw["load_avg_1min"] > 0.5 * (hw["cores"] or 1):
        print(
            f"warning: load average {hw['load_avg_1min']} on {hw['cores']} cores: other "
            "processes compete for the CPU and the numbers will be noisy"
            + (" (try --threads 1)" if hw["torch_threads"] > 1 else ""),
            file=sys.stderr,
        )
    print(f"{command_line()}\n{hw}", file=sys.stderr, flush=True)
    t_start = time.perf_counter()
    results = measure(args, device)
    rows = summarise(results)
    table = markdown_table(rows)
    total = time.perf_counter() - t_start
    if args.json:
        write_json(args.json, args, hw, results, rows, total)
    if args.profile:
        write_profile(args, device)
    if not args.no_write:
        write_section(args.out, args, hw, table)
    print(f"\ntotal {total:.0f} s", file=sys.stderr, flush=True)
    print(table, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
