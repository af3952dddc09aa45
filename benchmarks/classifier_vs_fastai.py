"""Classifier training speed, ours against fastai 2.8.12, side by side in one process.

The setting of issue 19: 2,000 IMDb reviews, an AWD-LSTM of 200/600 x 3 from random
weights, bs 32, bptt 72, max_len 1440 (BPT3C: the last 1440 tokens of each document are
pooled and back-propagated, earlier tokens only carry the state), one epoch, fp32, on
``--threads`` CPU threads. Both systems get the same token ids (our tokenizer and
vocabulary), so the table compares the training step and its data pipeline only.

``ours``
    :func:`ulmfit.training.loop.fit` over a :class:`~ulmfit.tasks.classify.ClassifierTask`
    (what ``TextClassifier.fit`` runs for one unfreezing stage): length-sorted batches,
    the backbone's BPT3C reading, dropouts, AR/TAR, clipping, STLR, AdamW.
``fastai``
    fastai's own pipeline as its users train a classifier: ``get_text_classifier(AWD_LSTM)``
    at the same sizes, ``SortedDL`` with ``pad_input_chunk``, ``TextLearner`` (its AR/TAR
    and state-resetting callbacks), ``fit_one_cycle(1)``; the clock covers its training
    phase only (validation is skipped). ``num_workers=0`` for both: a worker process
    would compete for the same two cores.

The systems alternate (the order reversed every other round) after one warm-up epoch on
128 documents each. The table is printed last and appended to ``benchmarks/RESULTS.md``
with the command, date and hardware (``--no-write`` to skip). Run from the repository root
with the throwaway fastai venv of ``shared/docs/ANCHORS.md``::

    PYTHONPATH=src /tmp/fastaienv/bin/python benchmarks/classifier_vs_fastai.py
    PYTHONPATH=src /tmp/fastaienv/bin/python benchmarks/classifier_vs_fastai.py --docs 200 \
        --rounds 1 --no-write   # a quick check of the script
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_env import append_results, hardware
from speed import imdb_texts, spread, timed_rounds
from ulmfit.data.classification import ClassificationBatches
from ulmfit.models.awd_lstm import AWDLSTMConfig
from ulmfit.models.classifier import ClassifierConfig, TextClassifierModel
from ulmfit.tasks.classify import ClassifierTask, ClassifierTrainConfig
from ulmfit.text.tokenize import PAD_ID, WordTokenizer
from ulmfit.text.vocab import Vocab
from ulmfit.training.loop import fit

REPO = Path(__file__).resolve().parents[1]


def token_ids(texts: list[str]) -> tuple[list[np.ndarray], Vocab]:
    tok = WordTokenizer()
    tokens = [tok(t) for t in texts]
    vocab = Vocab.from_counts(Counter(t for d in tokens for t in d), max_size=60000, min_freq=2)
    return [np.asarray(vocab.numericalize(d), dtype=np.int64) for d in tokens], vocab


def encoder_config(vocab: Vocab) -> AWDLSTMConfig:
    return AWDLSTMConfig(
        vocab_size=len(vocab), emb_size=200, hidden_size=600, n_layers=3, pad_id=PAD_ID
    )


def ours(
    docs: list[np.ndarray], y: np.ndarray, vocab: Vocab, args: argparse.Namespace
) -> Callable[[], None]:
    torch.manual_seed(0)
    config = ClassifierConfig(
        n_classes=2, bptt=args.bptt, max_len=args.max_len, encoder=encoder_config(vocab)
    )
    model = TextClassifierModel(config).train()
    batches = ClassificationBatches(
        docs, y, args.bs, train=True, seed=0, pad_id=PAD_ID, device=torch.device("cpu")
    )
    train_cfg = ClassifierTrainConfig().train.replace(epochs=1, progress=False, precision="fp32")
    task = ClassifierTask(model, batches, None, nn.CrossEntropyLoss(), dict, 2.0, 1.0)

    def run() -> None:
        fit(task, train_cfg, None, save_checkpoints=False)

    return run


def fastai_run(
    docs: list[np.ndarray], y: np.ndarray, vocab: Vocab, args: argparse.Namespace
) -> tuple[Callable[[], None], Callable[[], float]]:
    """fastai's classifier training over the same ids; returns (run, seconds of the last
    run's training phase)."""
    from functools import partial

    from fastai.text.all import (  # type: ignore[import-not-found,unused-ignore]
        AWD_LSTM,
        Callback,
        CancelValidException,
        CrossEntropyLossFlat,
        Datasets,
        SortedDL,
        TensorCategory,
        TensorText,
        TextLearner,
        awd_lstm_clas_config,
        get_text_classifier,
        pad_input_chunk,
    )

    torch.manual_seed(0)
    cfg = {**awd_lstm_clas_config, "emb_sz": 200, "n_hid": 600, "n_layers": 3}
    model = get_text_classifier(
        AWD_LSTM, len(vocab), 2, seq_len=args.bptt, config=cfg, max_len=args.max_len,
        pad_idx=PAD_ID,
    )  # fmt: skip
    idx = list(range(len(docs)))
    dsets = Datasets(
        idx,
        [[lambda i: TensorText(torch.from_numpy(docs[i]))], [lambda i: TensorCategory(int(y[i]))]],
        splits=[idx, idx[:1]],
    )
    dls = dsets.dataloaders(
        bs=args.bs, dl_type=SortedDL, num_workers=0, device=torch.device("cpu"),
        before_batch=partial(pad_input_chunk, pad_idx=PAD_ID, seq_len=args.bptt),
    )  # fmt: skip
    clock: dict[str, float] = {}

    class TrainClock(Callback):  # type: ignore[misc,unused-ignore]
        order = 100

        def before_train(self) -> None:
            clock["t0"] = time.perf_counter()

        def after_train(self) -> None:
            clock["seconds"] = time.perf_counter() - clock["t0"]

        def before_validate(self) -> None:
            raise CancelValidException()

    learn = TextLearner(dls, model, loss_func=CrossEntropyLossFlat(), alpha=2.0, beta=1.0)
    if hasattr(learn, "progress"):
        learn.remove_cb(learn.progress)
    learn.add_cb(TrainClock())

    def run() -> None:
        with learn.no_logging():
            learn.fit_one_cycle(1, 1e-3)

    return run, lambda: clock["seconds"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path(os.environ.get("ULMFIT_SHARED_DATA",
                   REPO.parent / "shared" / "data")))  # fmt: skip
    p.add_argument("--docs", type=int, default=2000)
    p.add_argument("--bs", type=int, default=32)
    p.add_argument("--bptt", type=int, default=72)
    p.add_argument("--max-len", type=int, default=1440)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2, help="timed epochs of each system")
    p.add_argument("--no-write", action="store_true", help="print only; no RESULTS.md")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    import fastai  # type: ignore[import-not-found,unused-ignore]

    texts = imdb_texts(args.data, args.docs)
    docs, vocab = token_ids(texts)
    y = np.arange(len(docs)) % 2  # imdb_texts interleaves negative and positive reviews
    n_tokens = sum(len(d) for d in docs)
    warm = slice(0, min(128, len(docs)))
    ours(docs[warm], y[warm], vocab, args)()
    fastai_run(docs[warm], y[warm], vocab, args)[0]()

    run_ours = ours(docs, y, vocab, args)
    run_fastai, fastai_seconds = fastai_run(docs, y, vocab, args)
    fastai_times: list[float] = []

    def timed_fastai() -> None:
        run_fastai()
        fastai_times.append(fastai_seconds())

    systems: list[tuple[str, Callable[[], Any]]] = [("ours", run_ours), ("fastai", timed_fastai)]
    times = timed_rounds(systems, args.rounds)
    times["fastai"] = fastai_times  # its training phase, not its fit's setup
    rate = {k: len(docs) * len(v) / sum(v) for k, v in times.items()}
    what = (
        f"classifier training docs/s, one epoch of {len(docs)} IMDb reviews "
        f"({n_tokens / len(docs):.0f} tokens/doc), AWD-LSTM 200/600x3, bs {args.bs}, "
        f"bptt {args.bptt}, max_len {args.max_len}, fp32, {args.threads} threads"
    )
    lines = [
        "| measurement | system | docs/s | ratio | notes |",
        "|---|---|---|---|---|",
        f"| {what} | ours: fit over ClassifierTask | {rate['ours']:,.2f} | "
        f"ours {rate['ours'] / rate['fastai']:.2f}x fastai | {spread(times['ours'], len(docs))} |",
        f"| {what} | fastai {fastai.__version__}: TextLearner.fit_one_cycle, training phase | "
        f"{rate['fastai']:,.2f} | 1.00x | {spread(times['fastai'], len(docs))} |",
    ]
    table = "\n".join(lines) + "\n"
    body = f"Hardware: {hardware()}.\n\n{table}"
    if not args.no_write:
        append_results(
            REPO / "benchmarks" / "RESULTS.md",
            "Classifier training: ours against fastai, side by side",
            "benchmarks/classifier_vs_fastai.py",
            argv,
            body,
        )
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
