"""How long the README's main job takes on this machine, on each of its two paths.

``wt103``
    ``configs/demo_trec_wt103.toml``: stages 2 and 3 on TREC-6 from fastai's WikiText-103
    AWD-LSTM (``wt103-fwd``). Where that archive cannot be had (no network, no
    ``$ULMFIT_MODELS``), a language model of exactly its shape (400/1152x3, 60,000
    words, fastai tokenizer) with random weights stands in: the time is the same, the
    accuracy is not (the table says which ran).
``toy``
    ``configs/demo_trec.toml``: stage 1 on a Wikipedia slice, then stages 2 and 3.

Each path runs once, in this process, into a temporary directory; the table (stage
times, test error) is printed last and appended to ``benchmarks/RESULTS.md``::

    PYTHONPATH=src .venv/bin/python benchmarks/demo_time.py --paths wt103
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_env import append_results, hardware, rebase_data_path
from ulmfit.config import from_dict, load_toml
from ulmfit.tasks.pipeline import PipelineConfig, run_pipeline

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"wt103": "configs/demo_trec_wt103.toml", "toy": "configs/demo_trec.toml"}


def stand_in_wt103(out: Path, trec_train: str) -> Path:
    """An LM directory of wt103-fwd's shape with random weights and fastai's tokenizer;
    its vocabulary holds TREC's words (so vocabulary transfer maps them as it would)."""
    from ulmfit.data.classification import read_labelled
    from ulmfit.models.awd_lstm import AWDLSTMConfig, AWDLSTMLanguageModel
    from ulmfit.models.io import write_lm_files
    from ulmfit.text.fastai_compat import FastaiTokenizer
    from ulmfit.text.tokenize import SPECIAL_TOKENS, TokenizerConfig
    from ulmfit.text.vocab import Vocab

    tok_cfg = TokenizerConfig(kind="fastai")
    tok = FastaiTokenizer(tok_cfg)
    texts = read_labelled(trec_train, text_column=["text"], label_column="label").texts
    counts = Counter(t for text in texts for t in tok(text))
    words = [w for w, _ in counts.most_common() if w not in SPECIAL_TOKENS]
    itos = list(SPECIAL_TOKENS) + words
    itos += [f"xxfiller{i}" for i in range(60000 - len(itos))]
    torch.manual_seed(0)
    model = AWDLSTMLanguageModel(
        AWDLSTMConfig(vocab_size=len(itos), emb_size=400, hidden_size=1152, n_layers=3)
    )
    out.mkdir(parents=True)
    write_lm_files(out, model, Vocab(itos), tok_cfg, extra={"direction": "forward"})
    return out


def config(name: str, data: Path, **override: Any) -> PipelineConfig:
    raw = {**load_toml(REPO / CONFIGS[name]), "overwrite": True, **override}
    return rebase(from_dict(PipelineConfig, raw, where=CONFIGS[name]), data)


def run_path(name: str, data: Path, work: Path) -> dict[str, Any]:
    cfg = config(name, data, out_dir=str(work / name))
    lm = "wt103-fwd (fastai's weights)" if name == "wt103" else "pretrained here (stage 1)"
    if name == "wt103":
        from ulmfit.models.pretrained import model_dir

        try:
            model_dir("wt103-fwd", progress=False)
        except OSError as e:
            print(f"wt103-fwd not available ({str(e).splitlines()[0]}): a stand-in of its shape")
            stand_in = stand_in_wt103(work / "wt103_stand_in", cfg.data.train or "")
            cfg = config(name, data, out_dir=str(work / name), pretrained=str(stand_in))
            lm = "random weights of wt103-fwd's shape (archive not reachable here)"
    t0 = time.perf_counter()
    report = run_pipeline(cfg)
    wall = time.perf_counter() - t0
    return {"lm": lm, "wall": wall, "times": report["times"], "test": report.get("test", {})}


def rebase(cfg: PipelineConfig, data: Path) -> PipelineConfig:
    """The config's ``../shared/data`` paths read from ``data`` instead."""
    import dataclasses

    d = cfg.data
    train = rebase_data_path(d.train, data) if d.train else d.train
    test = rebase_data_path(d.test, data) if d.test else d.test
    pre = cfg.pretrain.corpus
    corpus = dataclasses.replace(pre, train=tuple(rebase_data_path(p, data) for p in pre.train))
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(d, train=train, test=test),
        pretrain=dataclasses.replace(cfg.pretrain, corpus=corpus),
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--paths", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-write", action="store_true", help="print only; no RESULTS.md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    lines = [
        "| path | language model | stage 1 s | stage 2 s | stage 3 s | total min | test error |",
        "|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory(prefix="demo-time-") as tmp:
        for name in args.paths:
            r = run_path(name, args.data, Path(tmp))
            t = r["times"]
            err = r["test"].get("error_rate")
            lines.append(
                f"| {CONFIGS[name]} | {r['lm']} | {t.get('pretrain_s', 0):.0f} | "
                f"{t.get('finetune_lm_s', 0):.0f} | {t.get('classifier_s', 0):.0f} | "
                f"{r['wall'] / 60:.1f} | {'' if err is None else f'{100 * err:.1f}%'} |"
            )
    table = "\n".join(lines) + "\n"
    if not args.no_write:
        append_results(
            REPO / "benchmarks" / "RESULTS.md",
            "The README's main job: time on each path",
            "benchmarks/demo_time.py",
            argv,
            f"Hardware: {hardware()}; {args.threads} threads.\n\n{table}",
        )
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
