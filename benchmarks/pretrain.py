"""Pretrain the general-domain LM (ULMFiT stage 1) and report what it cost and what it reached.

Runs ``configs/pretrain_wiki_gpu.toml`` (paper sizes, one GPU) or any LM-stage config,
in resumable pieces: each call trains for at most ``--max-minutes`` and checkpoints; call
it again to go on. When training has finished it reports perplexity on WikiText-103
valid and test, training tokens/s, wall time and peak GPU memory, appends them to
``benchmarks/RESULTS.md`` and exports the weights as bf16 safetensors shards of at most
16 MiB (``--export``). The config names its data under ``../shared/data``; ``--data-dir``
(default ``$ULMFIT_DATA``) reads the same files from another copy. On the device machine,
carry them in a git-ignored folder::

    DEVDATA=.devdata2 PHASES=pretrain bash benchmarks/gpu_prepare.sh   # here
    # then, on the GPU, as many times as needed (each piece < 10 minutes):
    PYTHONPATH=src python benchmarks/pretrain.py --data-dir .devdata2 --max-minutes 8 \
        --json $OUT/pretrain.json

CPU demo size: ``--config configs/pretrain_wiki_cpu.toml``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import time
from pathlib import Path

import torch

from bench_env import command_line, hardware, with_data_root
from ulmfit.config import from_dict, load_toml
from ulmfit.models.io import export_lm
from ulmfit.tasks.train_lm import LMStageConfig, evaluate_language_model, train_language_model

REPO = Path(__file__).resolve().parents[1]


def default_eval_files(cfg: LMStageConfig) -> list[str]:
    """WikiText-103 valid and test beside the config's validation file (none without one)."""
    if not cfg.corpus.valid:
        return []
    wt103 = Path(cfg.corpus.valid[0]).parents[1] / "wikitext-103"
    return [str(wt103 / "wiki.valid.tokens.xz"), str(wt103 / "wiki.test.tokens.xz")]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", type=Path, default=REPO / "configs/pretrain_wiki_gpu.toml")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=os.environ.get("ULMFIT_DATA") or None,
        help="read the config's ../shared/data files from this copy (default: $ULMFIT_DATA; "
        "unset: the paths as written)",
    )
    p.add_argument("--max-minutes", type=float, default=8.0, help="length of this piece")
    p.add_argument(
        "--eval", nargs="*", help="files to report perplexity on (default: WT103 valid+test)"
    )
    p.add_argument(
        "--epochs",
        type=int,
        help="override the config's epochs (the schedule spans them: give every piece the same)",
    )
    p.add_argument("--export", type=Path, help="also write a bf16, 16 MiB-sharded copy here")
    p.add_argument("--json", type=Path, help="write the figures here too (e.g. $OUT/pretrain.json)")
    p.add_argument(
        "--results", type=Path, default=REPO / "benchmarks/RESULTS.md", help="Markdown appended"
    )
    p.add_argument("--no-write", action="store_true", help="do not append to --results")
    args = p.parse_args(argv)

    cfg = from_dict(LMStageConfig, load_toml(args.config), where=str(args.config))
    if args.data_dir is not None:
        cfg = with_data_root(cfg, args.data_dir)
    train = cfg.train.replace(max_minutes=args.max_minutes)
    if args.epochs:
        train = train.replace(epochs=args.epochs)
    cfg = dataclasses.replace(cfg, resume=True, train=train)
    t0 = time.perf_counter()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    out = train_language_model(cfg)
    piece_s = time.perf_counter() - t0
    state = json.loads((out / "training_state.json").read_text())
    if not state.get("finished"):
        print(
            f"piece done in {piece_s:.0f}s at step {state['global_step']}/{state['total_steps']}: "
            "run again to continue"
        )
        return 0

    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train_s = sum(r.get("train_time_s", 0.0) for r in rows)
    corpus = json.loads((out / "config.json").read_text())["corpus_stats"]
    tokens = corpus["train_tokens"] * cfg.train.epochs
    evals = args.eval or default_eval_files(cfg)
    ppl = {}
    for f in evals:
        m = evaluate_language_model(out, [f], bs=16, bptt=cfg.data.bptt, device=cfg.device)
        ppl[Path(f).name] = (m["valid_perplexity"], m["oov_rate"])
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    figures = {
        "config": str(args.config),
        "epochs": cfg.train.epochs,
        "train_tokens_per_epoch": corpus["train_tokens"],
        "train_time_s": train_s,
        "tokens_per_s": tokens / train_s if train_s else None,
        "perplexity": {k: v[0] for k, v in ppl.items()},
        "oov_rate": {k: v[1] for k, v in ppl.items()},
        "peak_gpu_gib_last_piece": peak,
        "hardware": hardware(),
    }
    if args.export:
        export_lm(out, args.export, "bf16", 16)
        figures["export"] = str(args.export)
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    if not args.no_write:
        when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        cmd = command_line("benchmarks/pretrain.py", argv)
        ppl_txt = ", ".join(f"{k}: {v[0]:.1f} (OOV {100 * v[1]:.1f}%)" for k, v in ppl.items())
        tps = f"{figures['tokens_per_s']:,.0f}" if figures["tokens_per_s"] else "n/a"
        with open(args.results, "a", encoding="utf-8") as f:
            f.write(
                f"\n## pretrain.py: {args.config.name}, {when}\n\n"
                f"`{cmd}`  \nHardware: {hardware()}\n\n"
                f"| epochs | tokens/epoch | train time | tokens/s | perplexity | peak GPU mem |\n"
                f"|---|---|---|---|---|---|\n"
                f"| {cfg.train.epochs} | {corpus['train_tokens']:,} | {train_s / 60:.1f} min "
                f"| {tps} | "
                f"{ppl_txt} | {'n/a' if peak is None else f'{peak:.1f} GiB'} |\n"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
