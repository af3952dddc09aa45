"""Backbones side by side: the QRNN recurrence, training tokens/s, perplexity at equal
tokens, classifier inference docs/s.

    PYTHONPATH=src python benchmarks/backbones.py            # CPU, a few minutes
    PYTHONPATH=src python benchmarks/backbones.py --quick    # seconds (smoke)

1. fo-pooling (``c_t = f_t c_{t-1} + (1 - f_t) z_t``), forward + backward, B 64 x T 70:
   the loop the QRNN uses (backward written by hand), the same loop left to autograd, a
   chunked log-space scan, and (``--compile``) the autograd loop under ``torch.compile``;
   the largest difference from the loop says which are exact.
2. LM training tokens/s (forward, loss, backward, AdamW step on one token stream) of the
   AWD-LSTM and the QRNN at matched non-embedding parameter counts, and at the paper's
   AWD-LSTM (400/1152x3) and MultiFiT's QRNN (400/1550x4) sizes (vocab and batch cut so
   that a CPU finishes; said in the table).
3. Held-out perplexity at equal tokens: each kind trained two epochs on WikiText-2 valid
   (217k tokens), scored on WikiText-2 test (the learning test's recipe).
4. Held-out perplexity at equal wall clock (``--minutes`` per kind, default 4): each kind,
   at matched non-embedding parameters (about 1M), pretrained on the Wikipedia subset at
   a constant rate until the budget ends, scored on WikiText-103 valid.
5. Classifier inference docs/s on TREC-6's test questions, float32 and int8.

``--sections`` picks tables (scan train ppl wallclock infer).

Each row is measured in this run, the kinds alternating; on a shared machine compare the
ratios, not the absolute figures.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_env import REPO, append_results, hardware
from ulmfit.models.backbone import KINDS, EncoderConfig
from ulmfit.models.language_model import LanguageModel, lm_loss
from ulmfit.models.qrnn import forget_mult, forget_mult_autograd

SECTIONS = ("scan", "train", "ppl", "wallclock", "infer")


def forget_mult_scan(
    f: torch.Tensor, z: torch.Tensor, c0: torch.Tensor, chunk: int = 16
) -> torch.Tensor:
    """fo-pooling as a chunked scan in log space: within a chunk of L steps,
    ``c_t = P_t c_prev + sum_{s<=t} (P_t / P_s) (1 - f_s) z_s`` with ``P`` the running
    product of ``f``, computed as ``exp`` of differences of log-cumsums (no division)."""
    outs = []
    c = c0
    for start in range(0, f.size(1), chunk):
        fc, zc = f[:, start : start + chunk], z[:, start : start + chunk]
        lc = torch.log(fc).cumsum(1)  # (B, L, H)
        diff = lc[:, :, None] - lc[:, None, :]  # (B, L, L, H): log P_t / P_s
        L = fc.size(1)
        causal = torch.ones(L, L, dtype=torch.bool, device=f.device).tril()
        w = torch.exp(diff.masked_fill(~causal[None, :, :, None], -math.inf))
        inner = torch.einsum("btsh,bsh->bth", w, (1 - fc) * zc)
        out = torch.exp(lc) * c[:, None] + inner
        outs.append(out)
        c = out[:, -1]
    return torch.cat(outs, 1)


def time_it(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def scan_rows(hidden: list[int], repeats: int, compile_: bool) -> list[str]:
    rows = []
    for H in hidden:
        torch.manual_seed(0)
        f0 = torch.rand(64, 70, H) * 0.98 + 0.01
        z0 = torch.randn(64, 70, H)
        c0 = torch.randn(64, H)
        ref = forget_mult(f0, z0, c0)
        variants: dict[str, Callable[..., torch.Tensor]] = {
            "loop, backward by hand (used)": forget_mult,
            "loop, autograd": forget_mult_autograd,
            "chunked log-space scan": forget_mult_scan,
        }
        if compile_:
            variants["loop, autograd, torch.compile"] = torch.compile(forget_mult_autograd)
        for name, fn in variants.items():
            f = f0.clone().requires_grad_()
            z = z0.clone().requires_grad_()

            def step(
                fn: Callable[..., torch.Tensor] = fn,
                f: torch.Tensor = f,
                z: torch.Tensor = z,
                c0: torch.Tensor = c0,
            ) -> None:
                fn(f, z, c0).sum().backward()

            secs = time_it(step, repeats)
            diff = float((fn(f0, z0, c0) - ref).abs().max())
            rows.append(f"| fo-pooling | {name} | H {H} | {1e3 * secs:.1f} ms | {diff:.1e} |")
    return rows


def non_embedding_params(cfg: EncoderConfig) -> int:
    model = LanguageModel(cfg.replace(vocab_size=10))
    skip = {id(model.encoder.embedding.weight), id(model.decoder.bias)}
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def matched_qrnn(lstm: EncoderConfig) -> EncoderConfig:
    """A QRNN of the LSTM's embedding size and depth whose hidden size matches its
    non-embedding parameter count."""
    want = non_embedding_params(lstm)
    best = min(
        range(16, 4 * lstm.hidden_size, 8),
        key=lambda h: abs(non_embedding_params(lstm.replace(kind="qrnn", hidden_size=h)) - want),
    )
    return lstm.replace(kind="qrnn", hidden_size=best)


def train_tokens_per_s(cfg: EncoderConfig, bs: int, bptt: int, steps: int) -> float:
    torch.manual_seed(0)
    model = LanguageModel(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.8, 0.99))
    ids = torch.randint(2, cfg.vocab_size, (bs, bptt + 1))
    state = None

    def step() -> None:
        nonlocal state
        out = model(ids[:, :-1], state)
        lm_loss(out.logits, ids[:, 1:]).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.4)
        opt.step()
        opt.zero_grad(set_to_none=True)
        state = tuple(tuple(t.detach() for t in layer) for layer in out.state)

    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * bs * bptt / (time.perf_counter() - t0)


def throughput_rows(quick: bool) -> list[str]:
    small = EncoderConfig(vocab_size=10000, emb_size=64, hidden_size=256, n_layers=3)
    mid = EncoderConfig(vocab_size=10000, emb_size=200, hidden_size=600, n_layers=3)
    paper = EncoderConfig(vocab_size=10000, emb_size=400, hidden_size=1152, n_layers=3)
    multifit = EncoderConfig(
        kind="qrnn", vocab_size=10000, emb_size=400, hidden_size=1550, n_layers=4
    )
    pairs = [("64/256x3", small, 32, 70), ("200/600x3", mid, 32, 70)]
    if not quick:
        pairs.append(("paper 400/1152x3", paper, 8, 70))
    steps = 3 if quick else 8
    rows = []
    for label, lstm, bs, bptt in pairs:
        qrnn = matched_qrnn(lstm)
        n_l, n_q = non_embedding_params(lstm), non_embedding_params(qrnn)
        # Alternate the kinds, best of two, so both see the same machine.
        a = max(train_tokens_per_s(lstm, bs, bptt, steps) for _ in range(2))
        q = max(train_tokens_per_s(qrnn, bs, bptt, steps) for _ in range(2))
        rows.append(
            f"| train tokens/s | {label}, vocab 10k, bs {bs} | AWD-LSTM {n_l / 1e6:.2f}M: "
            f"{a:,.0f} | QRNN {qrnn.emb_size}/{qrnn.hidden_size}x{qrnn.n_layers} "
            f"{n_q / 1e6:.2f}M: {q:,.0f} | **{q / a:.2f}x** |"
        )
    # The transformer has no parameter-matched twin of an LSTM of the same width and
    # depth; one GPT-shaped row (MLP 4x the width) at the middle size, for scale.
    gpt = EncoderConfig(kind="transformer", vocab_size=10000, emb_size=200, hidden_size=800,
                        n_layers=3)  # fmt: skip
    t = max(train_tokens_per_s(gpt, 32, 70, steps) for _ in range(2))
    rows.append(
        f"| train tokens/s | transformer 200/800x3 (4 heads), vocab 10k, bs 32 | "
        f"{non_embedding_params(gpt) / 1e6:.2f}M params | {t:,.0f} | |"
    )
    if not quick:
        m = max(train_tokens_per_s(multifit, 8, 70, steps) for _ in range(2))
        rows.append(
            f"| train tokens/s | MultiFiT QRNN 400/1550x4, vocab 10k, bs 8 | "
            f"{non_embedding_params(multifit) / 1e6:.1f}M params | {m:,.0f} | |"
        )
    return rows


def perplexity_rows(data: Path, quick: bool) -> list[str]:
    from ulmfit.data.lm import LMDataConfig
    from ulmfit.data.prepare import CorpusConfig
    from ulmfit.tasks.train_lm import (
        LMStageConfig,
        VocabConfig,
        evaluate_language_model,
        train_language_model,
    )
    from ulmfit.training.config import TrainConfig

    wt2 = data / "wikitext/wikitext-2"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in KINDS:
            cfg = LMStageConfig(
                out_dir=f"{tmp}/{kind}",
                corpus=CorpusConfig(
                    train=(str(wt2 / "wiki.valid.tokens.xz"),), n_workers=1, cache_dir=f"{tmp}/c"
                ),
                vocab=VocabConfig(max_size=6000, min_freq=2),
                model=EncoderConfig(
                    kind=kind,
                    emb_size=64,
                    hidden_size=128,
                    n_layers=2,
                    drop_mult=0.1,
                ),
                data=LMDataConfig(bs=16, bptt=35),
                train=TrainConfig(
                    epochs=1 if quick else 2,
                    lr=3e-2,
                    progress=False,
                    seed=0,
                    max_steps=20 if quick else 0,
                ),
                device="cpu",
            )
            t0 = time.perf_counter()
            out = train_language_model(cfg)
            secs = time.perf_counter() - t0
            test = [str(wt2 / "wiki.test.tokens.xz")]
            ppl = evaluate_language_model(out, test, bs=16, bptt=35, device="cpu")[
                "valid_perplexity"
            ]
            rows.append(
                f"| WikiText-2 test perplexity | {kind} 64/128x2, {cfg.train.epochs} epoch(s) on "
                f"WT-2 valid | {ppl:.1f} | {secs:.0f} s | |"
            )
    return rows


def wallclock_rows(data: Path, quick: bool, minutes: float) -> list[str]:
    """Each kind pretrained on the Wikipedia subset for the same wall-clock budget, then
    scored on WikiText-103 valid: which backbone learns most per CPU-minute."""
    from ulmfit.checkpoint import load_training_state
    from ulmfit.data.lm import LMDataConfig
    from ulmfit.data.prepare import CorpusConfig
    from ulmfit.tasks.train_lm import (
        LMStageConfig,
        VocabConfig,
        evaluate_language_model,
        train_language_model,
    )
    from ulmfit.training.config import TrainConfig

    lstm = EncoderConfig(emb_size=64, hidden_size=256, n_layers=3, drop_mult=0.1)
    sizes = {
        "awd_lstm": lstm,
        "qrnn": matched_qrnn(lstm),
        "transformer": EncoderConfig(
            kind="transformer", emb_size=160, hidden_size=640, n_layers=3, n_heads=4,
            context=256, drop_mult=0.1,
        ),
    }  # fmt: skip
    budget = 0.2 if quick else minutes
    wiki = data / "wikipedia_en_2015_subset" / "AA.txt.xz"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind, model in sizes.items():
            cfg = LMStageConfig(
                out_dir=f"{tmp}/{kind}",
                # The first 1,500 articles (about 4M words): more than any kind reads in the
                # budget on a CPU, so the budget, not the data, ends training.
                corpus=CorpusConfig(
                    train=(str(wiki),), fmt="wikiextractor", max_docs=300 if quick else 1500,
                    n_workers=1, cache_dir=f"{tmp}/c", valid_frac=0.0,
                ),
                vocab=VocabConfig(max_size=30000, min_freq=3),
                model=model,
                data=LMDataConfig(bs=32, bptt=70),
                # A constant rate: a schedule planned for an epoch would be cut short at
                # a different point for each kind.
                train=TrainConfig(
                    epochs=1, lr=3e-3, schedule="constant", progress=False, seed=0,
                    max_minutes=budget, log_every=1000,
                ),
                device="cpu",
            )  # fmt: skip
            out = train_language_model(cfg)
            meta, _ = load_training_state(out) or ({}, {})
            step = int(meta.get("global_step", 0))
            valid = [str(data / "wikitext/wikitext-103/wiki.valid.tokens.xz")]
            ppl = evaluate_language_model(out, valid, bs=16, bptt=70, device="cpu")[
                "valid_perplexity"
            ]
            label = f"{kind} {model.emb_size}/{model.hidden_size}x{model.n_layers}"
            rows.append(
                f"| WikiText-103 valid perplexity | {label} "
                f"({non_embedding_params(model) / 1e6:.2f}M), {budget:g} min on the Wikipedia "
                f"subset | {ppl:.1f} | {step} steps ({step * 32 * 70 / 1e6:.2f}M tokens) | |"
            )
    return rows


def inference_rows(data: Path, quick: bool) -> list[str]:
    import lzma

    from ulmfit.data.classification import LabelEncoder
    from ulmfit.models.classifier import ClassifierConfig, TextClassifierModel
    from ulmfit.tasks.classify import ClassifierTrainConfig, TextClassifier
    from ulmfit.text.tokenize import SPECIAL_TOKENS, TokenizerConfig
    from ulmfit.text.vocab import Vocab

    with lzma.open(data / "trec/test.csv.xz", "rt", encoding="latin-1") as f:
        import csv

        texts = [r["text"] for r in csv.DictReader(f)]
    texts = texts[:100] if quick else texts
    words = sorted({w for t in texts for w in t.lower().split()})
    vocab = Vocab([*SPECIAL_TOKENS, *words])
    rows = []
    for kind in KINDS:
        torch.manual_seed(0)
        enc = EncoderConfig(
            kind=kind,
            vocab_size=len(vocab),
            emb_size=200,
            hidden_size=600,
            n_layers=3,
        )
        clf = TextClassifier(None, ClassifierTrainConfig(device="cpu"))
        clf.model = TextClassifierModel(ClassifierConfig(n_classes=6, encoder=enc)).eval()
        clf.vocab, clf.tokenizer_config = vocab, TokenizerConfig()
        clf.labels = LabelEncoder([str(i) for i in range(6)], "multiclass")
        for mode in ("fp32", "int8"):
            if mode == "int8":
                clf.quantize()

            def run(c: TextClassifier = clf) -> None:
                c.predict_proba(texts, bs=64)

            secs = time_it(run, 1 if quick else 2)
            rows.append(
                f"| classifier inference | {kind} 200/600x3, {mode}, TREC-6 test, bs 64 | "
                f"{len(texts) / secs:,.0f} docs/s | | |"
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run in seconds")
    p.add_argument("--compile", action="store_true", help="also time torch.compile(loop)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument(
        "--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
        help="which tables to measure (default: all)",
    )  # fmt: skip
    p.add_argument("--minutes", type=float, default=4.0, help="wallclock: budget per kind")
    p.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--results", type=Path, default=REPO / "benchmarks" / "RESULTS.md")
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = [
        "| what | setting | AWD-LSTM / value | QRNN / time | QRNN / AWD-LSTM |",
        "|---|---|---|---|---|",
    ]
    todo = set(args.sections)
    if "scan" in todo:
        hidden = [256] if args.quick else [256, 1152]
        rows += scan_rows(hidden, 2 if args.quick else 5, args.compile)
    if "train" in todo:
        rows += throughput_rows(args.quick)
    if "ppl" in todo:
        rows += perplexity_rows(args.data_dir, args.quick)
    if "wallclock" in todo:
        rows += wallclock_rows(args.data_dir, args.quick, args.minutes)
    if "infer" in todo:
        rows += inference_rows(args.data_dir, args.quick)
    table = "\n".join(rows)
    print(table)
    if not args.no_write:
        body = f"{hardware()}, {args.threads} torch threads.\n\n{table}\n"
        append_results(args.results, "Backbones (CPU)", "benchmarks/backbones.py", argv, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
