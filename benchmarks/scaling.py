"""Several GPUs on paper: DDP scaling projected from a single-GPU step and the all-reduce
volume our training loop really sends.

Two parts:

Measured (any machine, CPU is fine)
    The paper-size LM and classifier are wrapped by the loop's own DDP wrapper in a
    one-process gloo group, with a comm hook that records every bucket DDP all-reduces
    in one synced backward (after DDP's first-iteration bucket rebuild): its bytes, its
    order, and which parameters it holds. That is exactly the traffic of one optimizer
    step under ``torchrun`` (gradient accumulation adds none: micro-steps run under
    ``no_sync``).

Projected
    Weak scaling (``bs`` is per rank, as in ``torchrun``): each rank's compute per step is
    the single-GPU step ``T1``; a ring all-reduce of ``B`` bytes over ``N`` GPUs takes
    ``latency + 2 (N-1)/N * B / busbw`` (``busbw`` is what ``nccl-tests`` reports as bus
    bandwidth). DDP overlaps bucket all-reduces with the rest of backward, but the bucket
    that backward fills last cannot overlap anything, so the communication left exposed
    per step lies between that bucket's time (best) and the sum over all buckets (worst);
    efficiency = ``T1 / (T1 + exposed)``. ``T1`` comes from ``lm_throughput.py --json``
    (the ``fit`` row, bf16, the largest bs on CUDA) or from ``--tokens-per-s``; the link
    bandwidths are assumptions (``--link``: put in your own ``nccl-tests`` figures).
    The model ignores the SMs and memory bandwidth NCCL's kernels take from backward.

The table is printed last and appended, with the command, date and hardware, to
``benchmarks/RESULTS.md`` (``--no-write`` to skip)::

    PYTHONPATH=src python benchmarks/scaling.py --lm-json $OUT/lm_throughput.json
    PYTHONPATH=src python benchmarks/scaling.py --tokens-per-s 514000 --bs 256 \\
        --source "ANCHORS.md, fastai model step, H200 bf16"
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

from bench_env import append_results, hardware
from ulmfit.models.awd_lstm import AWDLSTMConfig, AWDLSTMLanguageModel, lm_loss
from ulmfit.models.classifier import ClassifierConfig, TextClassifierModel
from ulmfit.training.loop import _wrap_ddp

DEFAULT_OUT = Path(__file__).resolve().parent / "RESULTS.md"
PAPER = AWDLSTMConfig(vocab_size=60_000, emb_size=400, hidden_size=1152, n_layers=3)
#: NCCL latency per bucket all-reduce (an assumption; small next to the bandwidth term).
LATENCY_S = 50e-6


@dataclass(frozen=True)
class Bucket:
    """One bucket DDP all-reduced: its position, its size, the parameters it holds."""

    index: int
    nbytes: int
    params: tuple[str, ...]


@dataclass(frozen=True)
class Link:
    """An interconnect: its name, how many GPUs it joins, its all-reduce bus bandwidth."""

    name: str
    n_gpus: int
    busbw_gbs: float


#: Assumed bus bandwidths (GB/s) for ~25-100 MB all-reduces, below the large-message
#: figures published for nccl-tests (8x H100 SXM NVSwitch ~450, PCIe Gen5 ~40, 2-node
#: RoCE/IB ~35 GB/s); replace them with your own cluster's with ``--link``.
LINKS = (
    Link("1 node, NVLink/NVSwitch", 2, 350.0),
    Link("1 node, NVLink/NVSwitch", 4, 350.0),
    Link("1 node, NVLink/NVSwitch", 8, 350.0),
    Link("1 node, PCIe Gen5, no NVLink", 4, 35.0),
    Link("1 node, PCIe Gen5, no NVLink", 8, 35.0),
    Link("2 nodes, 8 GPUs each, InfiniBand/RoCE", 16, 30.0),
    Link("2 nodes, 8 GPUs each, 100 GbE", 16, 10.0),
)


# --------------------------------------------------------------------------- measured


def record_buckets(
    model: nn.Module, step: Callable[[nn.Module], Tensor], iterations: int = 2
) -> list[Bucket]:
    """The buckets DDP all-reduces in one backward of ``step``, in the order it sends them.

    Runs in a one-process gloo group (made here unless one exists) through the training
    loop's own DDP wrapper; the last of ``iterations`` is recorded, after DDP has rebuilt
    its buckets in the order the gradients became ready.
    """
    own_group = not dist.is_initialized()
    if own_group:
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        names = {p.data_ptr(): n for n, p in model.named_parameters()}
        seen: list[Bucket] = []

        # Unannotated: DDP checks a hook's annotations as objects, and these are strings.
        def hook(_, bucket):  # type: ignore[no-untyped-def]
            held = tuple(names.get(p.data_ptr(), "?") for p in bucket.parameters())
            buf = bucket.buffer()
            seen.append(Bucket(bucket.index(), buf.numel() * buf.element_size(), held))
            return default_hooks.allreduce_hook(None, bucket)  # type: ignore[arg-type]

        ddp = _wrap_ddp(model, torch.device("cpu"))
        ddp.register_comm_hook(None, hook)
        for _ in range(iterations):
            seen.clear()
            model.zero_grad(set_to_none=True)
            step(ddp).backward()
        del ddp
        return list(seen)
    finally:
        gc.collect()  # the DDP wrapper (in reference cycles) goes before its process group
        if own_group:
            dist.destroy_process_group()


def lm_step(cfg: AWDLSTMConfig, bs: int = 2, bptt: int = 8) -> Callable[[nn.Module], Tensor]:
    """One LM loss on random tokens (the traffic does not depend on the batch)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, cfg.vocab_size, (bs, bptt + 1), generator=g)

    def step(model: nn.Module) -> Tensor:
        return lm_loss(model(x[:, :-1]).logits, x[:, 1:])

    return step


def classifier_step(bs: int = 2, length: int = 12) -> Callable[[nn.Module], Tensor]:
    """One classification loss on random documents."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(2, 1000, (bs, length), generator=g)
    y = torch.zeros(bs, dtype=torch.long)
    lengths = torch.full((bs,), length)

    def step(model: nn.Module) -> Tensor:
        return nn.functional.cross_entropy(model(x, lengths).logits, y)

    return step


def paper_models(cfg: AWDLSTMConfig) -> dict[str, tuple[nn.Module, Callable[[nn.Module], Tensor]]]:
    """The two models ``torchrun`` trains at the paper's sizes, fully unfrozen."""
    torch.manual_seed(0)
    clf = TextClassifierModel(ClassifierConfig(n_classes=6, encoder=cfg, bptt=8, max_len=64))
    return {
        "LM (tied decoder)": (AWDLSTMLanguageModel(cfg), lm_step(cfg)),
        "classifier (all groups unfrozen)": (clf, classifier_step()),
    }


# --------------------------------------------------------------------------- projected


def allreduce_s(nbytes: int, n_gpus: int, busbw_gbs: float, latency_s: float = LATENCY_S) -> float:
    """Seconds for a ring all-reduce of ``nbytes`` over ``n_gpus`` (0 on one GPU)."""
    if n_gpus <= 1:
        return 0.0
    return latency_s + 2 * (n_gpus - 1) / n_gpus * nbytes / (busbw_gbs * 1e9)


def project(
    step_s: float,
    tokens_per_step: float,
    buckets: Sequence[Bucket],
    link: Link,
    latency_s: float = LATENCY_S,
) -> dict[str, Any]:
    """Exposed communication and efficiency bounds for one link (see the module doc)."""
    times = [allreduce_s(b.nbytes, link.n_gpus, link.busbw_gbs, latency_s) for b in buckets]
    worst = sum(times)
    best = times[-1] if times else 0.0
    eff_best, eff_worst = step_s / (step_s + best), step_s / (step_s + worst)
    return {
        **asdict(link),
        "comm_ms": 1e3 * worst,
        "exposed_best_ms": 1e3 * best,
        "exposed_worst_ms": 1e3 * worst,
        "efficiency_best": eff_best,
        "efficiency_worst": eff_worst,
        "tokens_per_s_best": link.n_gpus * tokens_per_step / (step_s + best),
        "tokens_per_s_worst": link.n_gpus * tokens_per_step / (step_s + worst),
    }


def step_from_json(path: Path) -> tuple[float, int, int, str]:
    """``(tokens/s, bs, bptt, source)`` of the bf16 ``fit`` row at the largest CUDA bs."""
    data = json.loads(path.read_text(encoding="utf-8"))
    rows = [
        r
        for r in data["summary"]
        if r["device"] == "cuda" and r["precision"] == "bf16" and r["system"] == "fit"
    ]
    if not rows:
        raise SystemExit(f"{path}: no cuda bf16 'fit' row in 'summary' (run it on a GPU)")
    row = max(rows, key=lambda r: r["bs"])
    gpu = data.get("hardware", {}).get("gpu", "GPU")
    source = f"our fit loop, {gpu}, bf16, bs {row['bs']} ({path.name})"
    return float(row["tokens_per_s"]), int(row["bs"]), int(data["bptt"]), source


# --------------------------------------------------------------------------- report


def mib(n: int) -> str:
    return f"{n / 2**20:.1f}"


def bucket_table(measured: dict[str, list[Bucket]]) -> str:
    lines = [
        "| model | buckets per step | all-reduced per step (MiB) | last bucket (MiB) | "
        "last bucket holds |",
        "|---|---|---|---|---|",
    ]
    for name, buckets in measured.items():
        last = buckets[-1]
        held = ", ".join(last.params[:3]) + (" ..." if len(last.params) > 3 else "")
        total = sum(b.nbytes for b in buckets)
        lines.append(f"| {name} | {len(buckets)} | {mib(total)} | {mib(last.nbytes)} | {held} |")
    return "\n".join(lines)


def projection_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| interconnect | GPUs | busbw GB/s (assumed) | all-reduce ms/step | exposed ms "
        "(best-worst) | efficiency (best-worst) | tokens/s (best-worst) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['n_gpus']} | {r['busbw_gbs']:.0f} | {r['comm_ms']:.2f} | "
            f"{r['exposed_best_ms']:.2f}-{r['exposed_worst_ms']:.2f} | "
            f"{100 * r['efficiency_best']:.1f}-{100 * r['efficiency_worst']:.1f}% | "
            f"{r['tokens_per_s_best'] / 1e6:.2f}M-{r['tokens_per_s_worst'] / 1e6:.2f}M |"
        )
    return "\n".join(lines)


def parse_link(text: str) -> Link:
    """``NAME:GPUS:GBPS`` -> :class:`Link`."""
    try:
        name, n, bw = text.rsplit(":", 2)
        return Link(name, int(n), float(bw))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--link {text!r}: expected NAME:GPUS:GBPS, e.g. 'my cluster:16:42'"
        ) from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--lm-json", type=Path, help="lm_throughput.py --json output from a GPU")
    src.add_argument("--tokens-per-s", type=float, help="a single-GPU LM step's tokens/s")
    p.add_argument("--bs", type=int, default=256, help="per-rank batch size (--tokens-per-s)")
    p.add_argument("--bptt", type=int, default=72, help="tokens per row and step")
    p.add_argument("--source", default="given on the command line", help="where T1 is from")
    p.add_argument("--link", type=parse_link, action="append", help="NAME:GPUS:GBPS (repeat)")
    p.add_argument("--results", type=Path, default=DEFAULT_OUT)
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--json", type=Path, help="also write the figures here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.lm_json is not None:
        tokens_per_s, bs, bptt, source = step_from_json(args.lm_json)
    else:
        tokens_per_s, bs, bptt, source = args.tokens_per_s, args.bs, args.bptt, args.source
    tokens_per_step = bs * bptt
    step_s = tokens_per_step / tokens_per_s
    torch.set_num_threads(min(4, torch.get_num_threads()))
    measured = {name: record_buckets(m, fn) for name, (m, fn) in paper_models(PAPER).items()}
    lm_buckets = next(iter(measured.values()))
    links = args.link or list(LINKS)
    rows = [project(step_s, tokens_per_step, lm_buckets, link) for link in links]
    head = (
        f"- single-GPU LM step T1 = {1e3 * step_s:.1f} ms ({tokens_per_s:,.0f} tokens/s at "
        f"bs {bs} x bptt {bptt} per rank): {source}\n"
        f"- sizes: vocab {PAPER.vocab_size}, emb {PAPER.emb_size}, hidden "
        f"{PAPER.hidden_size} x {PAPER.n_layers}; gradients fp32 (the weights stay fp32 "
        f"under autocast); per-bucket latency {1e6 * LATENCY_S:.0f} us (assumed)\n"
    )
    tables = (
        "Measured: what DDP all-reduces per optimizer step (one gloo process, the loop's "
        "DDP wrapper, a recording comm hook)\n\n"
        f"{bucket_table(measured)}\n\n"
        "Projected: LM training, weak scaling (bs per rank fixed)\n\n"
        f"{projection_table(rows)}\n"
    )
    if not args.no_write:
        body = f"- hardware (bucket measurement): {hardware()}\n{head}\n{tables}"
        append_results(
            args.results, "scaling.py: DDP projection", "benchmarks/scaling.py", argv, body
        )
    if args.json is not None:
        payload = {
            "step_s": step_s,
            "tokens_per_step": tokens_per_step,
            "source": source,
            "buckets": {k: [asdict(b) for b in v] for k, v in measured.items()},
            "projection": rows,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(head + "\n" + tables)
    return 0


if __name__ == "__main__":
    sys.exit(main())
