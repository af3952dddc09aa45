"""Tokenisation and inference speed: ours against the usual alternatives, side by side.

Every comparison runs its systems in the same process, alternating them over
``--rounds`` rounds (the order reversed every other round), so a shared or throttled
machine slows them alike; rates are total documents (or tokens) over total time.

Rows (one table, printed last):

* **tokenisation, one core**: our :class:`~ulmfit.text.tokenize.WordTokenizer` against
  the fastai-style spaCy path (the same pre rules, ``spacy.blank("en").tokenizer``, the
  same caps/lowercase post rules, ``xxbos``). The spaCy row needs spaCy importable, e.g.
  run this script with a throwaway venv's Python (spaCy is not a project dependency)::

      python -m venv /tmp/spacyenv --system-site-packages
      /tmp/spacyenv/bin/pip install spacy
      PYTHONPATH=src /tmp/spacyenv/bin/python benchmarks/speed.py

* **CPU inference, IMDb reviews** with a classifier of the paper's sizes (emb 400,
  hidden 1152, 3 layers; random weights, which do not change speed): the naive loop
  ``[clf.predict_proba([t]) for t in texts]`` against ``clf.predict_proba(texts)`` in
  float32 and in int8, for each ``--threads`` setting.
* **trained classifier** (``--trec-model``, the demo's TREC-6 classifier): test accuracy
  in float32 and int8, their agreement, docs/s on TREC's short questions, and the time
  from ``TextClassifier.load`` to the first prediction.
* **classifier training**: one epoch of our training loop (``fit`` over a
  ``ClassifierTask``, as ``TextClassifier.fit`` runs it) against the same model's
  ``train_step`` in a bare loop, on the same length-sorted batches; on the CPU at
  ``--train-sizes`` (default the demo's 64/256x3), on a GPU at the paper's sizes.
* **GPU** (only with CUDA): classifier inference and training docs/s and peak memory.
  LM training throughput has its own benchmark, ``benchmarks/lm_throughput.py``.

IMDb's test file is sorted by label, so the benchmark takes half its documents from
each end. The table is appended to ``benchmarks/RESULTS.md`` with the command, date and
hardware (``--no-write`` to skip)::

    PYTHONPATH=src python benchmarks/speed.py                 # ~8 min on 2 busy cores
    PYTHONPATH=src python benchmarks/speed.py --docs 16 --rounds 1 --no-write  # quick check
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import lzma
import os
import shlex
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bench_env import cpu_model, precision_name, sync
from ulmfit.data.classification import ClassificationBatches, LabelEncoder, read_labelled
from ulmfit.inference import num_threads, quantize_int8
from ulmfit.models.awd_lstm import AWDLSTMConfig
from ulmfit.models.classifier import ClassifierConfig, TextClassifierModel
from ulmfit.tasks.classify import ClassifierTask, ClassifierTrainConfig, TextClassifier
from ulmfit.text.tokenize import BOS, PRE_RULES, TokenizerConfig, WordTokenizer, _case_rules
from ulmfit.text.vocab import Vocab
from ulmfit.training.loop import autocast_for, fit, resolve_precision

REPO = Path(__file__).resolve().parents[1]
FASTAI_TOKENS_PER_S = 113_000  # shared/docs/CPU_ANCHORS.md, section 1
SECTIONS = ("tok", "corpus", "cpu", "train", "trained", "lm", "gpu")


@dataclass
class Row:
    section: str
    measurement: str
    system: str
    value: str
    ratio: str = ""
    notes: str = ""


# -- data ------------------------------------------------------------------------------


def imdb_texts(data: Path, n: int) -> list[str]:
    """``n`` IMDb test reviews, half from each end of the label-sorted file."""
    with lzma.open(data / "imdb/test.csv.xz", "rt", encoding="utf-8", newline="") as f:
        texts = [r["text"] for r in csv.DictReader(f)]
    half = n // 2
    neg, pos = texts[:half], texts[len(texts) - (n - half) :]
    # Interleave them so that any prefix of the list is mixed too.
    return [t for pair in zip(neg, pos, strict=False) for t in pair] + pos[len(neg) :]


def timed_rounds(
    systems: Sequence[tuple[str, Callable[[], Any]]],
    rounds: int,
    setup: dict[str, Callable[[], Any]] | None = None,
) -> dict[str, list[float]]:
    """Seconds per run of each system, alternating (reversed order every other round).

    ``setup[name]`` runs before each run of ``name``, off the clock.
    """
    times: dict[str, list[float]] = {name: [] for name, _ in systems}
    for r in range(rounds):
        for name, fn in systems if r % 2 == 0 else list(reversed(systems)):
            if setup and name in setup:
                setup[name]()
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def spread(seconds: list[float], amount: float) -> str:
    rates = [amount / s for s in seconds]
    return f"runs {min(rates):,.3g}-{max(rates):,.3g}" if len(rates) > 1 else ""


# -- tokenisation -------------------------------------------------------------------------


class SpacyRulesTokenizer:
    """fastai's word pipeline rebuilt around spaCy, with our rules around its splitter.

    Pre rules on the string (all five, as fastai runs them), ``spacy.blank("en")``'s
    tokenizer, whitespace tokens dropped (ours drops them too), our caps/lowercase post
    rules, ``xxbos``: the same output as ours up to how the two splitters cut words, so
    the comparison is splitter against splitter with everything else equal.
    ``rules=False`` times spaCy's tokenizer alone.
    """

    def __init__(self, rules: bool = True) -> None:
        import spacy  # only in a throwaway venv: not a project dependency

        self.spacy = spacy
        self.rules = rules
        self.reset()

    def reset(self) -> None:
        """A fresh tokenizer: spaCy caches the chunks it has split, so each run starts cold,
        as a pass over a new corpus does."""
        self.tokenizer: Any = self.spacy.blank("en").tokenizer  # a spacy Tokenizer

    def tokenize(self, texts: Sequence[str]) -> list[list[str]]:
        if not self.rules:
            return [[t.text for t in doc] for doc in self.tokenizer.pipe(texts, batch_size=1000)]
        pre = []
        for text in texts:
            for rule in PRE_RULES:
                text = rule(text)
            pre.append(text)
        return [
            [BOS, *_case_rules([t.text for t in doc if not t.is_space])]
            for doc in self.tokenizer.pipe(pre, batch_size=1000)
        ]


class FastaiTokenizer:
    """fastai 2's own default word pipeline, as ``tokenize_df`` runs it on each worker:
    ``TokenizeWithRules(SpacyTokenizer(), rules=defaults.text_proc_rules)``."""

    def __init__(self) -> None:
        import fastai
        from fastai.text.core import (  # type: ignore[import-not-found,unused-ignore]
            SpacyTokenizer,
            TokenizeWithRules,
            defaults,
        )

        self.version = fastai.__version__
        self._make = lambda: TokenizeWithRules(SpacyTokenizer(), rules=defaults.text_proc_rules)
        self.reset()

    def reset(self) -> None:
        """A fresh spaCy pipeline each run (cold cache), as for a new corpus."""
        self.tok = self._make()

    def tokenize(self, texts: Sequence[str]) -> list[list[str]]:
        return [list(doc) for doc in self.tok(texts)]


def tokenisation_rows(texts: list[str], rounds: int) -> list[Row]:
    sec = "tokenisation, 1 core"
    what = f"tokens/s, {len(texts)} IMDb reviews"
    ours = WordTokenizer()
    systems: list[tuple[str, Callable[[], Any]]] = [("ours", lambda: [ours(t) for t in texts])]
    counts = {"ours": sum(len(ours(t)) for t in texts)}
    setup: dict[str, Callable[[], Any]] = {}
    version = None
    for name, rules in (("spacy_rules", True), ("spacy_alone", False)):
        try:
            tok = SpacyRulesTokenizer(rules)
        except ImportError:
            break
        version = tok.spacy.__version__
        counts[name] = sum(len(d) for d in tok.tokenize(texts))
        systems.append((name, lambda tok=tok: tok.tokenize(texts)))  # type: ignore[misc]
        setup[name] = tok.reset
    compat: list[Any] = []  # ulmfit's kind "fastai" (needs spaCy: the 'fastai' extra)
    try:
        from ulmfit.text.fastai_compat import FastaiTokenizer as CompatTokenizer

        compat.append(CompatTokenizer())
    except RuntimeError:
        pass
    else:
        counts["ours_fastai"] = sum(len(compat[0](t)) for t in texts)
        systems.append(("ours_fastai", lambda: [compat[0](t) for t in texts]))
        # A fresh spaCy each run (cold cache), as for the other spaCy systems.
        setup["ours_fastai"] = lambda: compat.__setitem__(0, CompatTokenizer())
    fastai_version = None
    try:
        fa = FastaiTokenizer()
    except ImportError:
        pass
    else:
        fastai_version = fa.version
        counts["fastai"] = sum(len(d) for d in fa.tokenize(texts))
        systems.append(("fastai", lambda: fa.tokenize(texts)))
        setup["fastai"] = fa.reset
    times = timed_rounds(systems, rounds, setup)
    rate = {k: counts[k] * len(v) / sum(v) for k, v in times.items()}
    per_doc = {k: f"{counts[k] / len(texts):.0f} tokens/doc" for k in counts}
    rows = [
        Row(
            sec,
            what,
            "ours: rules + one regex (WordTokenizer)",
            f"{rate['ours']:,.0f}",
            "",
            f"{per_doc['ours']}; {spread(times['ours'], counts['ours'])}",
        )
    ]
    if version is None:
        rows.append(
            Row(sec, what, "spaCy blank en + same rules", "not measured", "", "spaCy not installed")
        )
    else:
        docs_ratio = sum(times["spacy_rules"]) / sum(times["ours"])
        rows[0].ratio = (
            f"{rate['ours'] / rate['spacy_rules']:.1f}x spaCy + rules (docs/s {docs_ratio:.1f}x); "
            f"{rate['ours'] / rate['spacy_alone']:.1f}x spaCy alone"
        )
        rows += [
            Row(
                sec,
                what,
                f"spaCy {version} blank en tokenizer + the same rules (fastai's pipeline)",
                f"{rate['spacy_rules']:,.0f}",
                "1.0x",
                f"{per_doc['spacy_rules']}; cold cache each run; "
                f"{spread(times['spacy_rules'], counts['spacy_rules'])}",
            ),
            Row(
                sec,
                what,
                f"spaCy {version} blank en tokenizer alone (no rules)",
                f"{rate['spacy_alone']:,.0f}",
                "",
                f"{per_doc['spacy_alone']} (keeps whitespace tokens); cold cache each run",
            ),
        ]
    if fastai_version is not None:
        docs_ratio = sum(times["fastai"]) / sum(times["ours"])
        ratio = f"ours {rate['ours'] / rate['fastai']:.1f}x (docs/s {docs_ratio:.1f}x)"
        rows[0].ratio = f"{ratio} fastai; " + rows[0].ratio if rows[0].ratio else ratio
        rows.insert(
            1,
            Row(
                sec,
                what,
                f"fastai {fastai_version} default: TokenizeWithRules(SpacyTokenizer(), "
                "defaults.text_proc_rules)",
                f"{rate['fastai']:,.0f}",
                "1.0x",
                f"{per_doc['fastai']} (keeps newline tokens); cold cache each run; "
                f"{spread(times['fastai'], counts['fastai'])}",
            ),
        )
    if compat:
        ratio = ""
        if fastai_version is not None:
            docs_ratio = sum(times["fastai"]) / sum(times["ours_fastai"])
            ratio = f"{rate['ours_fastai'] / rate['fastai']:.1f}x (docs/s {docs_ratio:.1f}x) fastai"
        rows.insert(
            1,
            Row(
                sec,
                what,
                "ours, tokenizer kind 'fastai' (fastai's rules + spaCy, its tokens exactly)",
                f"{rate['ours_fastai']:,.0f}",
                ratio,
                f"{per_doc['ours_fastai']}; cold cache each run; "
                f"{spread(times['ours_fastai'], counts['ours_fastai'])}",
            ),
        )
    if fastai_version is None:
        rows.append(
            Row(
                sec,
                "tokens/s, 5000 IMDb train reviews",
                "fastai 2.8.12 default (spaCy + rules), shared/docs/CPU_ANCHORS.md",
                f"{FASTAI_TOKENS_PER_S:,}",
                f"ours {rate['ours'] / FASTAI_TOKENS_PER_S:.1f}x",
                "fastai not importable here: another run on this kind of machine, "
                "not side by side, a reference only",
            )
        )
    return rows


# -- a corpus at scale --------------------------------------------------------------------

WIKI_FILES = ("AA.txt.xz", "AB.txt.xz")


def corpus_child(paths: list[str], max_docs: int, workers: int) -> dict[str, Any]:
    """Tokenise and numericalise ``paths`` as ``ulmfit pretrain`` does (in this process)."""
    import itertools
    import resource

    from ulmfit.text.corpus import tokenize_corpus
    from ulmfit.text.readers import read_texts

    def texts() -> Any:
        docs = itertools.chain.from_iterable(read_texts(p) for p in paths)
        return itertools.islice(docs, max_docs) if max_docs else docs

    import tempfile

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ulmfit-speed-") as cache:
        # The cache path, as `ulmfit pretrain` runs it: tokenised ids go to a memory-mapped
        # file as they stream in; the numericalised ids (4 bytes a token) are in memory.
        corpus = tokenize_corpus(
            texts(), WordTokenizer(), n_workers=workers, cache_dir=cache, cache_key="bench"
        )
        vocab = corpus.to_vocab(60000, 2)
        ids, _ = corpus.numericalize(vocab)
        n_docs = corpus.n_docs
        del corpus  # its memory map, before the folder goes
    seconds = time.perf_counter() - t0
    kib = 1024  # ru_maxrss is in KiB on Linux
    return {
        "docs": n_docs,
        "tokens": len(ids),
        "seconds": seconds,
        "rss_main_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * kib / 2**20,
        "rss_worker_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * kib / 2**20,
    }


def corpus_rows(data: Path, workers: int) -> list[Row]:
    """The Wikipedia subset (~40M tokens) tokenised with all cores, and a quarter of it.

    Each run is a fresh subprocess, so its peak resident memory is its own: if memory
    is bounded independent of corpus size, the quarter and the whole peak alike.
    """
    import json
    import subprocess

    sec = f"corpus tokenisation, {workers} processes"
    paths = [str(data / "wikipedia_en_2015_subset" / f) for f in WIKI_FILES]
    if not all(Path(p).exists() for p in paths):
        return [Row(sec, "tokens/s", "-", "not measured", "", "Wikipedia subset missing")]
    runs: dict[str, dict[str, Any]] = {}
    for name, max_docs in (("quarter", 3245), ("all", 0)):
        code = (
            "import json, sys; sys.path[:0] = ['src', 'benchmarks']; import speed; "
            f"print(json.dumps(speed.corpus_child({paths!r}, {max_docs}, {workers})))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True, text=True
        )
        runs[name] = json.loads(out.stdout.strip().splitlines()[-1])
    rows = []
    for name, r in runs.items():
        rate = r["tokens"] / r["seconds"]
        rows.append(
            Row(
                sec,
                f"tokens/s, Wikipedia subset ({r['docs']:,} articles, {r['tokens'] / 1e6:.1f}M "
                "tokens), read + tokenise + numericalise into a fresh cache folder",
                f"ours, {name}",
                f"{rate:,.0f}",
                f"{rate / workers:,.0f} per process",
                f"{r['seconds']:.0f} s; 100M tokens at this rate: {1e8 / rate / 60:.1f} min; "
                f"peak RSS main {r['rss_main_mib']:,.0f} MiB (incl. the numericalised ids, "
                f"{4 * r['tokens'] / 2**20:,.0f} MiB), largest worker "
                f"{r['rss_worker_mib']:,.0f} MiB",
            )
        )
    return rows


# -- CPU inference -----------------------------------------------------------------------


def paper_classifier(texts: Sequence[str], sizes: str) -> TextClassifier:
    """A random-weights ULMFiT classifier of the paper's sizes, vocabulary from ``texts``."""
    tok = WordTokenizer()
    counts = Counter(t for text in texts for t in tok(text))
    vocab = Vocab.from_counts(counts, max_size=60000, min_freq=1)
    if sizes == "paper":
        enc = AWDLSTMConfig(vocab_size=len(vocab), emb_size=400, hidden_size=1152, n_layers=3)
    else:  # a quick check of the script itself
        enc = AWDLSTMConfig(vocab_size=len(vocab), emb_size=64, hidden_size=256, n_layers=3)
    torch.manual_seed(0)
    model = TextClassifierModel(ClassifierConfig(n_classes=2, encoder=enc))
    clf = TextClassifier(None, ClassifierTrainConfig(device="cpu"))
    clf.model, clf.vocab, clf.tokenizer_config = model.eval(), vocab, TokenizerConfig()
    clf.labels = LabelEncoder.fit(["neg", "pos"], "multiclass")
    return clf


def quantized_copy(clf: TextClassifier) -> TextClassifier:
    assert clf.model is not None
    q = TextClassifier(None, clf.config)
    q.vocab, q.tokenizer_config, q.labels = clf.vocab, clf.tokenizer_config, clf.labels
    q.model = quantize_int8(clf.model)
    return q


def naive(clf: TextClassifier, texts: Sequence[str]) -> np.ndarray:
    """What a user writes first: one document per call."""
    return np.concatenate([clf.predict_proba([t]) for t in texts])


def inference_rows(
    section: str, clf: TextClassifier, texts: list[str], rounds: int, threads: int
) -> tuple[list[Row], dict[str, np.ndarray]]:
    q = quantized_copy(clf)
    n = len(texts)
    probs: dict[str, np.ndarray] = {}

    def run(name: str, fn: Callable[[], np.ndarray]) -> Callable[[], None]:
        def go() -> None:
            probs[name] = fn()

        return go

    with num_threads(threads):
        clf.predict_proba(texts[:2])  # first-call set-up (oneDNN primitives) out of the clock
        q.predict_proba(texts[:2])
        times = timed_rounds(
            [
                ("naive", run("naive", lambda: naive(clf, texts))),
                ("fp32", run("fp32", lambda: clf.predict_proba(texts))),
                ("int8", run("int8", lambda: q.predict_proba(texts))),
            ],
            rounds,
        )
    rate = {k: n * len(v) / sum(v) for k, v in times.items()}
    what = f"docs/s, {threads} thread{'s' if threads > 1 else ''}"
    diff = float(np.abs(probs["fp32"] - probs["naive"]).max())
    agree = float(np.mean(probs["int8"].argmax(1) == probs["fp32"].argmax(1)))
    rows = [
        Row(
            section,
            what,
            "naive: predict_proba([text]) per document, fp32",
            f"{rate['naive']:.2f}",
            "1.0x",
            spread(times["naive"], n),
        ),
        Row(
            section,
            what,
            "ours: predict_proba(texts), fp32 (sorted batches of 128, finished rows leave)",
            f"{rate['fp32']:.2f}",
            f"{rate['fp32'] / rate['naive']:.2f}x naive",
            f"max |p - p_naive| {diff:.1e}; {spread(times['fp32'], n)}",
        ),
        Row(
            section,
            what,
            "ours: predict_proba(texts), int8 (batches of 32)",
            f"{rate['int8']:.2f}",
            f"{rate['int8'] / rate['naive']:.2f}x naive, {rate['int8'] / rate['fp32']:.2f}x fp32",
            f"same label as fp32 on {agree:.1%}; {spread(times['int8'], n)}",
        ),
    ]
    return rows, probs


def trained_rows(model_dir: Path, data: Path, rounds: int, threads: int) -> list[Row]:
    shown = model_dir.relative_to(REPO) if model_dir.is_relative_to(REPO) else model_dir
    sec = f"trained TREC-6 classifier ({shown})"
    if not (model_dir / "config.json").exists():
        return [
            Row(
                sec,
                "int8 accuracy change",
                "-",
                "not measured",
                "",
                f"{model_dir} missing: run `PYTHONPATH=src python -m ulmfit.cli.main run "
                "configs/demo_trec.toml` first",
            )
        ]
    rows_ = read_labelled(data / "trec/test.csv.xz", text_column="text")
    texts, y = rows_.texts, np.array(rows_.labels)
    rows: list[Row] = []
    with num_threads(threads):
        # Load to first prediction: what a command-line call pays before any output.
        latency: dict[str, list[tuple[float, float, float]]] = {"fp32": [], "int8": []}
        for _ in range(max(rounds, 2)):
            for name, qz in (("fp32", None), ("int8", "int8")):
                t0 = time.perf_counter()
                c = TextClassifier.load(model_dir, device="cpu", quantize=qz)
                t1 = time.perf_counter()
                c.predict([texts[0]])
                t2 = time.perf_counter()
                c.predict([texts[1]])
                t3 = time.perf_counter()
                latency[name].append((t1 - t0, t2 - t1, t3 - t2))
        clf = TextClassifier.load(model_dir, device="cpu")
        q = TextClassifier.load(model_dir, device="cpu", quantize="int8")
        probs: dict[str, np.ndarray] = {}
        times = timed_rounds(
            [
                ("naive", lambda: probs.__setitem__("naive", naive(clf, texts))),
                ("fp32", lambda: probs.__setitem__("fp32", clf.predict_proba(texts))),
                ("int8", lambda: probs.__setitem__("int8", q.predict_proba(texts))),
            ],
            rounds,
        )
    n = len(texts)
    rate = {k: n * len(v) / sum(v) for k, v in times.items()}
    assert clf.labels is not None
    classes = np.array(clf.labels.classes)
    acc = {k: float(np.mean(classes[p.argmax(1)] == y)) for k, p in probs.items()}
    agree = float(np.mean(probs["int8"].argmax(1) == probs["fp32"].argmax(1)))
    pdiff = np.abs(probs["int8"] - probs["fp32"])
    what = f"TREC-6 test ({n} questions), {threads} thread{'s' if threads > 1 else ''}"
    rows.append(
        Row(
            sec,
            f"accuracy, {what}",
            "fp32 -> int8",
            f"{100 * acc['fp32']:.1f}% -> {100 * acc['int8']:.1f}%",
            f"{100 * (acc['int8'] - acc['fp32']):+.1f} points",
            f"same label on {agree:.1%}; |p_int8 - p_fp32| mean {pdiff.mean():.4f}, "
            f"max {pdiff.max():.3f}",
        )
    )
    for name, label in (
        ("naive", "naive: one document per call, fp32"),
        ("fp32", "ours: batched, fp32"),
        ("int8", "ours: batched, int8"),
    ):
        rows.append(
            Row(
                sec,
                f"docs/s, {what}",
                label,
                f"{rate[name]:,.0f}",
                f"{rate[name] / rate['naive']:.1f}x naive",
                spread(times[name], n),
            )
        )
    for name in ("fp32", "int8"):
        med = [statistics.median(x[i] for x in latency[name]) for i in range(3)]
        rows.append(
            Row(
                sec,
                "seconds: load, 1st predict, 2nd predict (1 question)",
                name,
                f"{med[0]:.3f} / {med[1]:.4f} / {med[2]:.4f}",
                "",
                f"median of {len(latency[name])} runs; first call {med[1] / med[2]:.1f}x the "
                "second (nothing is compiled per call)",
            )
        )
    return rows


# -- GPU -------------------------------------------------------------------------------


def gpu_rows(texts: list[str], sizes: str, rounds: int) -> list[Row]:
    """Classifier inference and training on CUDA, with peak memory (paper sizes)."""
    sec = "GPU"
    if not torch.cuda.is_available():
        return [Row(sec, "all", "-", "not measured", "", "no CUDA device here")]
    dev = torch.device("cuda")
    clf = paper_classifier(texts, sizes)
    assert clf.model is not None
    clf.model.to(dev)
    rows: list[Row] = []
    n = len(texts)

    def sync_run(fn: Callable[[], Any]) -> Callable[[], None]:
        def go() -> None:
            fn()
            torch.cuda.synchronize()

        return go

    for precision in ("fp32", "bf16"):
        ctx = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if precision == "bf16"
            else contextlib.nullcontext()
        )
        with ctx:
            clf.predict_proba(texts[:64])
            torch.cuda.reset_peak_memory_stats()
            times = timed_rounds([("infer", sync_run(lambda: clf.predict_proba(texts)))], rounds)
        peak = torch.cuda.max_memory_allocated() / 2**20
        rows.append(
            Row(
                sec,
                f"inference docs/s ({n} IMDb reviews, batches of 128)",
                f"ours, {precision}",
                f"{n * len(times['infer']) / sum(times['infer']):,.0f}",
                "",
                f"peak {peak:,.0f} MiB",
            )
        )
    rows += training_rows(sec, clf, texts, dev, rounds)
    return rows


def training_rows(
    sec: str, clf: TextClassifier, texts: list[str], device: torch.device, rounds: int
) -> list[Row]:
    """One classifier training epoch: our training loop against its bare model step.

    ``ours``: :func:`ulmfit.training.loop.fit` over a
    :class:`~ulmfit.tasks.classify.ClassifierTask` (what ``TextClassifier.fit`` runs for
    each unfreezing stage: BPT3C, length-sorted batches, dropouts, AR/TAR, clipping,
    STLR with discriminative rates, AdamW, precision as the loop sets it, logging).
    ``model step``: the same task's ``train_step`` (the same forward and loss) with
    backward, clipping and one AdamW group in a bare loop over the same batches, collated
    and on the device before the clock starts: no data pipeline, schedule or bookkeeping.
    The ratio is what the pipeline costs.
    """
    assert clf.model is not None
    model = clf.model.to(device).train()
    docs = clf.numericalize(texts)
    n = len(docs)
    y = np.arange(n) % 2
    batches = ClassificationBatches(docs, y, 64, train=True, seed=0, device=device)
    train_cfg = ClassifierTrainConfig().train.replace(epochs=1, progress=False)
    amp = resolve_precision(train_cfg.precision, device)
    precision = precision_name(amp)
    loss_fn = nn.CrossEntropyLoss()
    task = ClassifierTask(model, batches, None, loss_fn, dict, train_cfg.alpha, train_cfg.beta)
    opt = torch.optim.AdamW(
        model.parameters(), lr=1e-4, betas=train_cfg.betas, fused=device.type == "cuda"
    )
    autocast = autocast_for(device, amp)

    def ours() -> None:
        fit(task, train_cfg, None, save_checkpoints=False)
        sync(device)

    ready = list(batches.batches(0))  # the bare loop's batches: collated, on the device

    def bare() -> None:
        for b in ready:
            with autocast:
                loss = task.train_step(model, b, None).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), train_cfg.clip)
            opt.step()
        sync(device)

    peaks: dict[str, float] = {}

    def reset() -> None:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    def measured(name: str, fn: Callable[[], None]) -> Callable[[], None]:
        def go() -> None:
            fn()
            if device.type == "cuda":
                peaks[name] = torch.cuda.max_memory_allocated(device) / 2**20

        return go

    bare()  # warm-up: kernels, allocator, optimizer state
    ours()
    systems = [("ours", measured("ours", ours)), ("model step", measured("model step", bare))]
    times = timed_rounds(systems, rounds, setup={"ours": reset, "model step": reset})
    rate = {k: n * len(v) / sum(v) for k, v in times.items()}
    what = f"classifier training docs/s ({n} IMDb reviews, bs 64, {precision}, {device.type})"
    rows = []
    for name, label in (
        ("ours", "ours: the training loop (fit over ClassifierTask)"),
        ("model step", "its train_step in a bare loop over pre-collated batches"),
    ):
        peak = f"peak {peaks[name]:,.0f} MiB; " if name in peaks else ""
        ratio = f"{rate['ours'] / rate['model step']:.2f}x model step" if name == "ours" else ""
        rows.append(
            Row(sec, what, label, f"{rate[name]:,.1f}", ratio, peak + spread(times[name], n))
        )
    return rows


# -- LM training ---------------------------------------------------------------------------


def lm_rows(lm_argv: list[str]) -> list[Row]:
    """LM training tokens/s from ``benchmarks/lm_throughput.py`` (its own options)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import lm_throughput as lt

    args = lt.parse_args([*lm_argv, "--no-write"])
    device = lt.resolve(args)
    sizes = ", ".join(f"{k} {v}" for k, v in lt.SIZES[args.sizes].items())
    sec = f"LM training ({device.type}; {sizes}; bptt {args.bptt})"
    names = {
        "fit": "ours: ulmfit fit loop end to end (data, variable BPTT, dropouts, AR/TAR, "
        "clip, STLR, AdamW)",
        "model step": "our AWD-LSTM in a bare loop (pre-sliced batches)",
        "ceiling": "raw nn.LSTM stack + tied softmax, no dropout (ceiling)",
        lt.FASTAI: "fastai Learner + LMDataLoader end to end",
    }
    t0 = time.perf_counter()
    results = lt.measure(args, device)
    summary = lt.summarise(results)
    if args.json:  # the raw timings too, as lm_throughput.py --json writes them
        total = time.perf_counter() - t0
        lt.write_json(args.json, args, lt.hardware(device), results, summary, total)
    if args.profile:  # where fit's time goes, for the next step if it misses the bar
        lt.write_profile(args, device)
    rows = []
    for r in summary:
        mem = "" if r["peak_mem_gib"] is None else f"peak {r['peak_mem_gib']:.2f} GiB; "
        bar = f"bar >= {lt.BAR}x ceiling: {r['bar']}; " if r["bar"] else ""
        rows.append(
            Row(
                sec,
                f"tokens/s, bs {r['bs']}, {r['precision']}",
                names.get(r["system"], r["system"]),
                f"{r['tokens_per_s']:,.0f}",
                f"{r['ratio']:.2f}x ceiling",
                f"{mem}{bar}median of {r['repeats']}; {args.steps} steps after {args.warmup}",
            )
        )
    return rows


# -- output ------------------------------------------------------------------------------


def progress(msg: str) -> None:
    print(f"[speed] {msg} ...", file=sys.stderr, flush=True)


def markdown_table(rows: list[Row]) -> str:
    head = ["section", "measurement", "system", "value", "ratio", "notes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.section, r.measurement, r.system, r.value, r.ratio, r.notes]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def hardware() -> str:
    hw = f"{cpu_model()} x{os.cpu_count()}, torch {torch.__version__}"
    if torch.cuda.is_available():
        hw += f", {torch.cuda.get_device_name(0)}"
    return hw


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_data = os.environ.get("ULMFIT_DATA", str(REPO.parent / "shared" / "data"))
    p.add_argument("--data", type=Path, default=Path(default_data), help="shared datasets")
    p.add_argument("--tok-docs", type=int, default=2000, help="IMDb reviews for tokenisation")
    p.add_argument(
        "--docs",
        type=int,
        default=128,
        help="IMDb reviews for CPU inference (default 128: the naive loop takes ~1 min "
        "per round on one busy EPYC core)",
    )
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds per comparison")
    p.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[1],
        help="torch CPU threads for the inference rows (default 1: per core)",
    )
    p.add_argument("--sizes", choices=["paper", "small"], default="paper")
    p.add_argument(
        "--trec-model",
        type=Path,
        default=REPO / "runs/demo_trec/classifier",
        help="trained classifier for the int8 accuracy rows",
    )
    p.add_argument("--gpu-docs", type=int, default=2048, help="IMDb reviews for the GPU rows")
    p.add_argument(
        "--train-docs", type=int, default=256, help="IMDb reviews for the CPU training rows"
    )
    p.add_argument(
        "--train-sizes",
        choices=["paper", "small"],
        default="small",
        help="classifier sizes for the CPU training rows (paper sizes: minutes an epoch)",
    )
    p.add_argument(
        "--sections",
        nargs="+",
        choices=SECTIONS,
        default=list(SECTIONS),
        help="what to measure (default: all; gpu only runs where CUDA is available)",
    )
    p.add_argument("--corpus-workers", type=int, default=os.cpu_count() or 1, help="corpus section")
    p.add_argument(
        "--lm-args",
        default="",
        help="options for the LM section, as for benchmarks/lm_throughput.py "
        '(e.g. "--bs 64 256 --precision bf16 fp16"); default: its device defaults',
    )
    p.add_argument("--results", type=Path, default=REPO / "benchmarks/RESULTS.md")
    p.add_argument("--no-write", action="store_true", help="do not append to RESULTS.md")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data: Path = args.data
    rows: list[Row] = []
    todo = set(args.sections)
    t0 = time.perf_counter()
    tok_texts = imdb_texts(data, args.tok_docs)
    if "tok" in todo:
        progress("tokenisation")
        rows += tokenisation_rows(tok_texts, max(args.rounds, 3))
    if "corpus" in todo:
        progress("corpus tokenisation")
        rows += corpus_rows(data, args.corpus_workers)
    if "cpu" in todo:
        texts = imdb_texts(data, args.docs)
        clf = paper_classifier(tok_texts, args.sizes)
        assert clf.model is not None
        enc = clf.model.config.encoder
        lengths = [len(d) for d in clf.numericalize(texts)]
        sec = (
            f"CPU inference, {enc.emb_size}/{enc.hidden_size}x{enc.n_layers} classifier, "
            f"{len(texts)} IMDb reviews ({np.mean(lengths):.0f} tokens mean, {max(lengths)} max)"
        )
        for threads in args.threads:
            progress(f"CPU inference, {threads} thread(s)")
            rows += inference_rows(sec, clf, texts, args.rounds, threads)[0]
    if "train" in todo:
        progress("CPU classifier training")
        texts = imdb_texts(data, args.train_docs)
        clf = paper_classifier(texts, args.train_sizes)
        assert clf.model is not None
        enc = clf.model.config.encoder
        sec = f"CPU classifier training, {enc.emb_size}/{enc.hidden_size}x{enc.n_layers}"
        with num_threads(args.threads[0]):
            rows += training_rows(sec, clf, texts, torch.device("cpu"), args.rounds)
    if "trained" in todo:
        progress("trained classifier")
        rows += trained_rows(args.trec_model, data, args.rounds, args.threads[0])
    if "lm" in todo:
        progress("LM training")
        rows += lm_rows(shlex.split(args.lm_args))
    if "gpu" in todo:
        if torch.cuda.is_available():
            progress("GPU")
            rows += gpu_rows(imdb_texts(data, args.gpu_docs), args.sizes, args.rounds)
        else:
            rows.append(Row("GPU", "all", "-", "not measured", "", "no CUDA device here"))
    table = markdown_table(rows)
    took = time.perf_counter() - t0
    if not args.no_write:
        # A venv's interpreter (e.g. one with spaCy) is named in full: it changes the rows.
        python = sys.executable if sys.prefix != sys.base_prefix else "python"
        cmd = " ".join(["PYTHONPATH=src", python, *map(shlex.quote, sys.argv)])
        when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        with args.results.open("a", encoding="utf-8") as f:
            f.write(
                f"\n## speed.py: tokenisation and inference, {when}\n\n"
                f"`{cmd}`  \nHardware: {hardware()}; took {took:.0f} s\n\n{table}\n"
            )
    print(f"\n{hardware()}; took {took:.0f} s\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
