"""Learning parity: the fast training loop learns what a plain textbook loop learns.

The speed work keeps batches on the device as views of one tensor, reads nothing on the
host between log points, clips with foreach kernels, fuses AdamW on CUDA and runs
DropConnect through ``functional_call``. None of that may change what the model learns.
This trains the same AWD-LSTM with the same recipe twice and scores both on the same
held-out text:

``fit``
    ulmfit's own path: :class:`~ulmfit.data.lm.LMStream`, :class:`~ulmfit.tasks.lm.LMTask`
    and :func:`ulmfit.training.loop.fit` (``--precision`` sets its autocast).
``plain``
    The loop a tutorial would write, sharing only the model class: per-step host tensors
    built from numpy, ``loss.item()`` every step, for-loop AdamW (``foreach=False``),
    per-parameter clipping, the STLR equation of the paper written out, and its own
    document shuffle and variable-BPTT draws, from a generator seeded as ``fit``'s data
    stream is (so the same batches). Always fp32.
``plain, other order``
    The same loop with its generator seeded otherwise: another document order and other
    batch lengths. The gap to ``plain`` is what data order alone moves the figure.
``fit, <change>`` (``--variants``)
    ``fit`` with one recipe setting changed on purpose (peak lr x1.5, no clipping, a
    constant schedule, Adam betas 0.9/0.999): how far a real change moves the figure,
    which is what the check can detect.

Every run draws its initial weights and dropout masks from torch's generator seeded the
same, so ``fit`` and ``plain`` differ only by the loop itself and must agree far closer
than data order (``plain, other order``), seeds (a few per cent: initialisation and
masks) or any real recipe change move the figure. tests/test_learning_parity.py runs
seed 0 of ``fit`` and ``plain`` as a default test.

Data: WikiText-2 (CC BY-SA), training on its validation file (60 articles, ~244k tokens
with our tokenizer) and scoring on its test file (~271k tokens); vocab the ``--vocab``
most frequent training tokens. The table prints last and is appended,
with command, date and hardware, to ``benchmarks/RESULTS.md`` (``--no-write`` to skip)::

    PYTHONPATH=src python benchmarks/parity.py --seeds 0 1 2 --variants  # ~4 min, 2 cores
    PYTHONPATH=src python benchmarks/parity.py --device cuda --precision bf16
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench_env import append_results, hardware, sync
from ulmfit import datasets
from ulmfit.data.lm import LMDataConfig, LMStream
from ulmfit.data.prepare import CorpusConfig, tokenize_files
from ulmfit.models.awd_lstm import AWDLSTMConfig, AWDLSTMLanguageModel, ar_tar_penalty, lm_loss
from ulmfit.tasks.lm import LMTask, evaluate_lm
from ulmfit.text.tokenize import TokenizerConfig, get_tokenizer
from ulmfit.training.config import TrainConfig
from ulmfit.training.loop import fit

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("ULMFIT_DATA") or REPO.parent / "shared" / "data")

#: A model and recipe small enough for a CPU test (~20 s a run on one core), trained
#: long enough to learn: held-out perplexity ~114 against ~169 for the unigram model.
MODEL = AWDLSTMConfig(emb_size=48, hidden_size=96, n_layers=2, drop_mult=0.2)
DATA = LMDataConfig(bs=32, bptt=35)
RECIPE = TrainConfig(epochs=1, lr=2e-2, progress=False, log_every=10**6)

#: One deliberate recipe change each: what the parity check must be able to see.
VARIANTS: dict[str, dict[str, object]] = {
    "lr x1.5": {"lr": RECIPE.lr * 1.5},
    "no clipping": {"clip": 0.0},
    "constant lr": {"schedule": "constant"},
    "betas 0.9/0.999": {"betas": (0.9, 0.999)},
}


@dataclass(frozen=True)
class Corpus:
    """Token ids of the training and held-out articles, with document offsets."""

    train_ids: np.ndarray
    train_offsets: np.ndarray
    heldout_ids: np.ndarray
    heldout_offsets: np.ndarray
    vocab_size: int

    def unigram_perplexity(self) -> float:
        """Add-one unigram model of the training tokens, scored on the held-out tokens."""
        counts = np.bincount(self.train_ids, minlength=self.vocab_size) + 1.0
        logp = np.log(counts / counts.sum())
        return math.exp(-float(logp[self.heldout_ids].mean()))


def load_corpus(data_dir: Path, vocab: int = 4000, cache_dir: Path | None = None) -> Corpus:
    """WikiText-2 (found and checksummed by the dataset layer): train on valid, hold out test."""
    paths = [datasets.get("wikitext2", split, data_dir)[split][0] for split in ("valid", "test")]
    config = CorpusConfig(n_workers=1, cache_dir=str(cache_dir) if cache_dir else None)
    tok = get_tokenizer(TokenizerConfig())
    train, heldout = (tokenize_files([p], config, tok, show_progress=False) for p in paths)
    v = train.to_vocab(max_size=vocab, min_freq=2)
    return Corpus(*train.numericalize(v), *heldout.numericalize(v), vocab_size=len(v))


def new_model(corpus: Corpus, seed: int, device: torch.device) -> AWDLSTMLanguageModel:
    torch.manual_seed(seed)
    config = AWDLSTMConfig(**{**MODEL.to_dict(), "vocab_size": corpus.vocab_size})
    return AWDLSTMLanguageModel(config).to(device)


def train_fit(model: AWDLSTMLanguageModel, corpus: Corpus, recipe: TrainConfig, seed: int) -> None:
    """ulmfit's path: LMStream + LMTask + fit."""
    device = next(model.parameters()).device
    stream = LMStream(
        corpus.train_ids, corpus.train_offsets, DATA, train=True, seed=seed, device=device
    )
    fit(LMTask(model, stream, None, alpha=recipe.alpha, beta=recipe.beta), recipe, None)


def stlr(t: int, total: int, cut_frac: float, ratio: float) -> float:
    """Howard & Ruder (2018), eq. 3, as a multiplier of the peak rate."""
    cut = math.floor(total * cut_frac)
    p = t / cut if t < cut else 1 - (t - cut) / (cut * (1 / cut_frac - 1))
    return (1 + p * (ratio - 1)) / ratio


def train_plain(
    model: AWDLSTMLanguageModel,
    corpus: Corpus,
    recipe: TrainConfig,
    seed: int,
    other_order: bool = False,
) -> list[float]:
    """The textbook loop (one epoch, fp32); returns each step's loss as read every step.

    Documents are shuffled and batch lengths drawn from one generator seeded as
    LMStream seeds epoch 0's, so the batches are fit's; ``other_order`` seeds it
    otherwise: another document order and other lengths.
    """
    device = next(model.parameters()).device
    rng = np.random.default_rng(seed + 1000 if other_order else [seed, 0])
    ids, off = corpus.train_ids, corpus.train_offsets
    docs = [ids[off[i] : off[i + 1]] for i in range(len(off) - 1)]
    stream = np.concatenate([docs[i] for i in rng.permutation(len(docs))])
    n = len(stream) // DATA.bs
    rows = stream[: n * DATA.bs].reshape(DATA.bs, n)
    lens, pos = [], 0
    while pos < n - 1:  # AWD-LSTM's variable BPTT
        base = DATA.bptt if rng.random() < 0.95 else DATA.bptt / 2
        seq_len = min(n - 1 - pos, int(1.5 * DATA.bptt), max(5, int(rng.normal(base, 5))))
        lens.append(seq_len)
        pos += seq_len
    groups = model.layer_groups()
    top = len(groups) - 1
    optimizer = torch.optim.AdamW(
        [
            {"params": g, "lr": recipe.lr / recipe.disc_factor ** (top - i)}
            for i, g in enumerate(groups)
        ],
        betas=recipe.betas,
        eps=recipe.eps,
        weight_decay=recipe.weight_decay,
        foreach=False,
    )
    peaks = [g["lr"] for g in optimizer.param_groups]
    model.train()
    state = None
    losses = []
    pos = 0
    for t, seq_len in enumerate(lens):
        x = torch.tensor(rows[:, pos : pos + seq_len], dtype=torch.long, device=device)
        y = torch.tensor(rows[:, pos + 1 : pos + 1 + seq_len], dtype=torch.long, device=device)
        pos += seq_len
        mult = stlr(t, len(lens), recipe.cut_frac, recipe.ratio)
        for group, peak in zip(optimizer.param_groups, peaks, strict=True):
            group["lr"] = peak * mult * seq_len / DATA.bptt
        out = model(x, state)
        state = tuple((h.detach(), c.detach()) for h, c in out.state)
        loss = lm_loss(out.logits, y)
        total = loss + ar_tar_penalty(out.output, out.raw_output, recipe.alpha, recipe.beta)
        optimizer.zero_grad()
        total.backward()
        if recipe.clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.clip, foreach=False)
        optimizer.step()
        losses.append(loss.item())
    return losses


def heldout_perplexity(model: AWDLSTMLanguageModel, corpus: Corpus) -> float:
    device = next(model.parameters()).device
    stream = LMStream(
        corpus.heldout_ids,
        corpus.heldout_offsets,
        LMDataConfig(bs=16, bptt=DATA.bptt),
        train=False,
        device=device,
    )
    return evaluate_lm(model, stream)["valid_perplexity"]


def measure(
    corpus: Corpus,
    seed: int,
    device: torch.device,
    precision: str = "fp32",
    variants: dict[str, dict[str, object]] | None = None,
    other_order: bool = True,
) -> list[dict[str, object]]:
    """One row per system at ``seed``: held-out perplexity and training time."""
    runs: list[tuple[str, TrainConfig | None]] = [
        ("fit", RECIPE.replace(seed=seed, precision=precision)),
        ("plain", None),
    ]
    if other_order:
        runs.append(("plain, other order", None))
    for name, change in (variants or {}).items():
        runs.append((f"fit, {name}", RECIPE.replace(seed=seed, precision=precision, **change)))
    rows: list[dict[str, object]] = []
    for name, recipe in runs:
        model = new_model(corpus, seed, device)
        sync(device)
        t0 = time.perf_counter()
        if recipe is None:
            train_plain(model, corpus, RECIPE, seed, other_order=name != "plain")
        else:
            train_fit(model, corpus, recipe, seed)
        sync(device)
        seconds = time.perf_counter() - t0
        rows.append(
            {
                "seed": seed,
                "system": name,
                "precision": "fp32" if recipe is None else precision,
                "perplexity": heldout_perplexity(model, corpus),
                "train_s": seconds,
            }
        )
    plain = next(r for r in rows if r["system"] == "plain")
    for r in rows:
        r["vs_plain"] = float(r["perplexity"]) / float(plain["perplexity"]) - 1  # type: ignore[arg-type]
        r["time_vs_plain"] = float(r["train_s"]) / float(plain["train_s"])  # type: ignore[arg-type]
    return rows


def table(rows: list[dict[str, object]]) -> str:
    head = "| seed | system | precision | held-out ppl | vs plain | train time / plain |"
    lines = [head, "|---|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['seed']} | {r['system']} | {r['precision']} | {r['perplexity']:.2f} "
            f"| {100 * float(r['vs_plain']):+.2f}% | {float(r['time_vs_plain']):.2f}x |"  # type: ignore[arg-type]
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--variants", action="store_true", help="also the deliberate changes")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--vocab", type=int, default=4000)
    p.add_argument("--threads", type=int, default=1, help="torch threads on a CPU")
    p.add_argument("--results", type=Path, default=REPO / "benchmarks/RESULTS.md")
    p.add_argument("--no-write", action="store_true", help="do not append to RESULTS.md")
    p.add_argument("--json", type=Path, help="also write the rows here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    corpus = load_corpus(args.data, args.vocab)
    rows: list[dict[str, object]] = []
    for i, seed in enumerate(args.seeds):
        variants = VARIANTS if args.variants and i == 0 else None
        rows += measure(corpus, seed, device, args.precision, variants)
        print(table(rows), file=sys.stderr, flush=True)
    fits = [float(r["perplexity"]) for r in rows if r["system"] == "fit"]  # type: ignore[arg-type]
    gaps = [abs(float(r["vs_plain"])) for r in rows if r["system"] == "fit"]  # type: ignore[arg-type]
    order = [abs(float(r["vs_plain"])) for r in rows if r["system"] == "plain, other order"]  # type: ignore[arg-type]
    summary = (
        f"- data: WikiText-2, {len(corpus.train_ids):,} training tokens (valid), "
        f"{len(corpus.heldout_ids):,} held out (test); vocab "
        f"{corpus.vocab_size}; unigram held-out perplexity {corpus.unigram_perplexity():.1f}\n"
        f"- model: emb {MODEL.emb_size}, hidden {MODEL.hidden_size} x {MODEL.n_layers}, "
        f"drop_mult {MODEL.drop_mult}; bs {DATA.bs}, bptt {DATA.bptt}; 1 epoch, STLR, "
        f"peak lr {RECIPE.lr}\n"
        f"- fit vs plain at the same seed: largest gap {100 * max(gaps):.2f}%; another data "
        f"order: largest gap {100 * max(order, default=float('nan')):.2f}%; fit across "
        f"seeds: {min(fits):.2f}-{max(fits):.2f} "
        f"({100 * (max(fits) / min(fits) - 1):.1f}% spread)\n"
    )
    out = f"{summary}\n{table(rows)}\n"
    if not args.no_write:
        hw = f"- hardware: {hardware()}; torch threads {torch.get_num_threads()}\n"
        append_results(
            args.results, "parity.py: fit vs a plain loop", "benchmarks/parity.py", argv, hw + out
        )
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
