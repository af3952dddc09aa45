"""Reproduce a row of the paper: ULMFiT's three stages and the baselines on one split.

The systems all see the same documents: the official training split minus a seeded,
stratified 10% validation split (used for model selection, tuning and thresholds),
and the full official test set.

* ``ulmfit``: pretrain (or reuse) an LM, fine-tune it on the task's training text,
  fine-tune the classifier (the forward model).
* ``ulmfit-bwd``: the same three stages reading every text backwards (its own backward
  LM: pretrained here, reused, or ``--pretrained-backward``). With ``ulmfit`` it adds the
  paper's ensemble row ``ulmfit-ens``: the two models' probabilities averaged
  (multi-label: thresholds tuned again on the averaged validation probabilities).
* ``scratch``: the same classifier and recipe from a randomly initialised LM.
* ``tfidf`` (``tfidf-svm``): TF-IDF word + char n-grams, logistic regression (linear SVM).
* ``fasttext``: fastText supervised, bigrams (needs ``fasttext-numpy2-wheel``).

Budgets:

* ``smoke``: the small CPU recipe of ``configs/demo_trec.toml`` (AWD-LSTM 64/256x3,
  1.3M-token Wikipedia slice, one epoch). Training splits above 6,000 documents are
  subsampled to 2,000 (validation to 500); TREC is used whole. Reuses
  ``runs/demo_trec/lm_pretrained`` when it exists.
* ``full``: the paper's sizes for one GPU: AWD-LSTM 400/1152x3, vocab 60k, pretrained with
  ``configs/pretrain_wiki_gpu.toml`` on the 32.5M-word Wikipedia subset (WikiText-103's
  training set is not in the mirror; or pass ``--pretrained`` e.g. an imported fastai
  WT-103 model); LM fine-tuning bs 64, lr 4e-3, 10 epochs (the paper gives no epoch
  count; fastai's IMDb example uses 10), on the training text (IMDb: plus ``unsup``);
  classifier with the paper's gradual unfreezing, bs 64, drop_mult 0.5; all documents.
* ``tiny``: a 16/32x2 LM on three Wikipedia articles and 200/100/200 documents: a test
  of the harness, not a measurement.

Appends one row per system to ``benchmarks/RESULTS.md`` and prints the table last::

    ULMFIT_DATA=/work/shared/data PYTHONPATH=src python benchmarks/reproduce.py trec6
    PYTHONPATH=src python benchmarks/reproduce.py reuters21578 --systems tfidf,fasttext
"""

from __future__ import annotations

import os

# Before torch loads OpenMP: idle OpenMP threads sleep instead of spinning. On 2 cores
# shared with another busy process, spinning made a TREC classifier epoch 25x slower
# (108 s against 4.3 s passive, 4.6 s with one thread).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import dataclasses
import datetime as dt
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench_env import command_line, cpu_model, with_data_root
from ulmfit.baselines import (
    BaselineResult,
    align_columns,
    fasttext_baseline,
    restrict_labels,
    scratch_baseline,
    tfidf_baseline,
)
from ulmfit.config import from_dict, load_toml
from ulmfit.data.classification import LabelEncoder, TaskKind
from ulmfit.data.lm import LMDataConfig
from ulmfit.data.prepare import CorpusConfig
from ulmfit.datasets import DatasetSplit, data_dir, dataset_spec, load_dataset, load_splits
from ulmfit.models.awd_lstm import AWDLSTMConfig
from ulmfit.models.backbone import KINDS
from ulmfit.models.io import check_direction, load_lm
from ulmfit.tasks import metrics as M
from ulmfit.tasks.classify import ClassifierTrainConfig, TextClassifier, UnfreezeStage
from ulmfit.tasks.pipeline import PipelineConfig
from ulmfit.tasks.train_lm import LMStageConfig, VocabConfig, train_language_model
from ulmfit.training.config import TrainConfig

log = logging.getLogger("reproduce")

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "RESULTS.md"
DEMO_LM = REPO / "runs" / "demo_trec" / "lm_pretrained"
SYSTEMS = ("ulmfit", "ulmfit-bwd", "scratch", "tfidf", "tfidf-svm", "fasttext", "hiclass")
ENSEMBLE = "ulmfit-ens"  # a row of its own when ulmfit and ulmfit-bwd both run
BASELINE_KIND = {
    "tfidf": "a linear model on n-gram counts",
    "tfidf-svm": "a linear model on n-gram counts",
    "fasttext": "a bag-of-bigrams linear model",
    "hiclass": "hiclass's local classifier per parent node over n-gram counts",
}

# Howard & Ruder (2018), test error % of the fwd+bwd ensemble.
PAPER = {
    "trec6": 3.6,
    "imdb": 4.6,
    "ag_news": 5.01,
    "dbpedia14": 0.80,
    "yelp_polarity": 2.16,
    "yelp_full": 29.98,
}
# Multi-label: no ULMFiT figure in the paper; the anchor is micro-F1 (ANCHORS.md).
PAPER_F1 = {"reuters21578": (88.9, "KD-LSTM_reg micro-F1, Adhikari et al. 2019")}
# Per-system references: (error %, source). CPU anchors: shared/docs/CPU_ANCHORS.md.
REFERENCE: dict[tuple[str, str], tuple[float, str]] = {
    ("trec6", "tfidf"): (11.6, "CPU anchor, word 1-2 grams + LR"),
    ("imdb", "tfidf"): (9.42, "CPU anchor, word 1-2 grams + LR"),
    ("trec6", "fasttext"): (10.6, "CPU anchor 10.2-10.6"),
    ("imdb", "fasttext"): (10.26, "CPU anchor"),
    ("ag_news", "fasttext"): (7.5, "Joulin et al. 2017"),
    ("dbpedia14", "fasttext"): (1.4, "Joulin et al. 2017"),
    ("yelp_polarity", "fasttext"): (4.3, "Joulin et al. 2017"),
    ("yelp_full", "fasttext"): (36.1, "Joulin et al. 2017"),
    ("trec6", "scratch"): (10.67, "paper Table 4, no pretraining, validation error"),
    ("imdb", "scratch"): (5.63, "paper Table 4, no pretraining, validation error"),
    ("ag_news", "scratch"): (5.52, "paper Table 4, no pretraining, validation error"),
}


# --------------------------------------------------------------------------- budgets


@dataclass(frozen=True)
class Budget:
    """How much of everything a run gets."""

    name: str
    pretrain: LMStageConfig
    finetune_lm: LMStageConfig
    classifier: ClassifierTrainConfig
    subsample_above: int  # training splits with more documents than this are subsampled
    max_train: int  # ... to this many classifier training documents
    max_valid: int  # ... and this many validation documents
    max_test: int = 0  # 0: the full test set
    use_unsup: bool = False  # add the dataset's unlabelled split to LM fine-tuning
    reuse_lm: Path | None = None  # a pretrained LM to reuse when it exists
    description: str = ""


def smoke_budget(root: Path) -> Budget:
    cfg = from_dict(PipelineConfig, load_toml(REPO / "configs/demo_trec.toml"), "demo_trec.toml")
    return Budget(
        name="smoke",
        pretrain=with_data_root(cfg.pretrain, root),
        finetune_lm=cfg.finetune_lm,
        classifier=cfg.classifier,
        subsample_above=6000,
        max_train=2000,
        max_valid=500,
        reuse_lm=DEMO_LM,
        description="configs/demo_trec.toml recipe (AWD-LSTM 64/256x3, vocab 15k, 1 epoch on "
        "300 Wikipedia articles; LM fine-tuning 2 epochs; classifier 1+1+15 epochs, peak lr 4e-2)",
    )


def full_budget(root: Path) -> Budget:
    pre = from_dict(LMStageConfig, load_toml(REPO / "configs/pretrain_wiki_gpu.toml"), "gpu")
    pre = dataclasses.replace(with_data_root(pre, root), resume=True)
    finetune = LMStageConfig(
        data=LMDataConfig(bs=64, bptt=70),
        train=TrainConfig(epochs=10, lr=4e-3, clip=0.4, precision="auto"),
        device="auto",
    )
    return Budget(
        name="full",
        pretrain=pre,
        finetune_lm=finetune,
        classifier=ClassifierTrainConfig(bs=64, drop_mult=0.5),
        subsample_above=0,
        max_train=0,
        max_valid=0,
        use_unsup=True,
        description="paper sizes on one GPU: AWD-LSTM 400/1152x3, vocab 60k, pretraining "
        "per configs/pretrain_wiki_gpu.toml; LM fine-tuning bs 64 lr 4e-3 10 epochs; "
        "classifier: paper's gradual unfreezing, bs 64, drop_mult 0.5",
    )


def tiny_budget(root: Path) -> Budget:
    train = TrainConfig(epochs=1, lr=1e-2, progress=False, log_every=10)
    pretrain = LMStageConfig(
        corpus=CorpusConfig(
            train=(str(root / "wikipedia_en_2015_subset/AA.txt.xz"),),
            max_docs=3,
            valid_frac=0.1,
            n_workers=1,
        ),
        vocab=VocabConfig(max_size=2000),
        model=AWDLSTMConfig(emb_size=16, hidden_size=32, n_layers=2),
        data=LMDataConfig(bs=8, bptt=20),
        train=train,
    )
    finetune = LMStageConfig(
        corpus=CorpusConfig(n_workers=1), data=LMDataConfig(bs=8, bptt=20), train=train
    )
    classifier = ClassifierTrainConfig(
        bs=32,
        stages=(UnfreezeStage(1, 1, 2e-2), UnfreezeStage(0, 1, 1e-2)),
        train=TrainConfig(clip=0.1, progress=False, log_every=10),
    )
    return Budget(
        name="tiny",
        pretrain=pretrain,
        finetune_lm=finetune,
        classifier=classifier,
        subsample_above=0,
        max_train=200,
        max_valid=100,
        max_test=200,
        description="harness test: 16/32x2 LM on 3 Wikipedia articles, 200 training docs",
    )


BUDGETS = {"smoke": smoke_budget, "full": full_budget, "tiny": tiny_budget}


def with_kind(budget: Budget, kind: str) -> Budget:
    """The budget with another backbone of the same sizes: stage 1 trains its own LM (the
    reusable one is an AWD-LSTM), under a name of its own."""
    model = budget.pretrain.model.replace(kind=kind)
    return dataclasses.replace(
        budget,
        name=f"{budget.name}-{kind}",
        pretrain=dataclasses.replace(budget.pretrain, model=model),
        reuse_lm=None,
        description=f"{budget.description}; backbone {kind} of the same sizes",
    )


def with_lm_epochs(budget: Budget, epochs: int) -> Budget:
    """``budget`` with ``epochs`` of LM fine-tuning (a device session short of time)."""
    ft = budget.finetune_lm
    was = ft.train.epochs
    return dataclasses.replace(
        budget,
        finetune_lm=dataclasses.replace(ft, train=ft.train.replace(epochs=epochs)),
        description=f"{budget.description}; LM fine-tuning {epochs} epochs here (recipe: {was})",
    )


# --------------------------------------------------------------------------- data


@dataclass
class Splits:
    task: TaskKind
    train: DatasetSplit
    valid: DatasetSplit
    test: DatasetSplit
    classes: list[str]  # every label of the official train and test splits
    n_official_train: int
    unlabelled: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    paths: dict[str, tuple[str, ...]] = field(default_factory=dict)  # hierarchical: leaf's path


def _subsample(split: DatasetSplit, n: int, seed: int) -> DatasetSplit:
    if not n or len(split) <= n:
        return split
    idx = np.sort(np.random.default_rng(seed).choice(len(split), n, replace=False))
    return split.subset(idx, split.split)


def _leaf(split: DatasetSplit) -> DatasetSplit:
    # Hierarchical labels [top, leaf] are scored as a multi-class problem on the leaf.
    assert split.labels is not None
    labels: Any = [y[-1] for y in split.labels]
    return dataclasses.replace(split, labels=labels, task="multiclass")


def load_task(name: str, budget: Budget, seed: int, root: Path, verify: bool = True) -> Splits:
    """The budget's train/valid/test documents of dataset ``name``."""
    spec = dataset_spec(name)
    if spec.task == "lm":
        raise SystemExit(f"{name}: a language-modelling corpus, not a classification dataset")
    sp = load_splits(name, 0.1, seed, root, verify)
    train, valid, test = sp["train"], sp["valid"], sp["test"]
    task: TaskKind = "multiclass" if spec.task in ("multiclass", "hierarchical") else "multilabel"
    if spec.task == "hierarchical":
        train, valid, test = _leaf(train), _leaf(valid), _leaf(test)
    n_official = len(train) + len(valid)
    out_notes = []
    if budget.max_train and (not budget.subsample_above or n_official > budget.subsample_above):
        train = _subsample(train, budget.max_train, seed)
        valid = _subsample(valid, budget.max_valid, seed + 1)
        out_notes.append(f"subsampled to {len(train)} train / {len(valid)} valid (seed {seed})")
    if budget.max_test:
        test = _subsample(test, budget.max_test, seed + 2)
        out_notes.append(f"test subsampled to {len(test)}")
    labels: set[str] = set()
    for part in (sp["train"], sp["valid"], test):
        for y in part.labels or []:
            if spec.task == "hierarchical":
                labels.add(y[-1])
            else:
                labels.update([y] if isinstance(y, str) else y)
    unlabelled: list[str] = []
    if budget.use_unsup and "unsup" in spec.split_names:
        unlabelled = load_dataset(name, "unsup", root, verify).texts
    paths: dict[str, tuple[str, ...]] = {}
    if spec.task == "hierarchical":  # each leaf's path, for the hierarchical baseline
        for part in (sp["train"], sp["valid"], sp["test"]):
            paths.update({y[-1]: tuple(y) for y in part.labels or []})
    return Splits(
        task, train, valid, test, sorted(labels), n_official, unlabelled, out_notes, paths
    )


# --------------------------------------------------------------------------- systems


@dataclass
class SystemRun:
    system: str
    scores: np.ndarray  # (N, C) over Splits.classes
    thresholds: np.ndarray | None
    times: dict[str, float | str]
    params: dict[str, Any] = field(default_factory=dict)
    valid_scores: np.ndarray | None = None  # multi-label ULMFiT: for the ensemble's thresholds


def _is_lm_dir(path: Path | None) -> bool:
    return path is not None and (path / "config.json").exists()


def pretrained_lm(
    budget: Budget, out: Path, given: str | None, backwards: bool = False
) -> tuple[Path, float | str]:
    """The stage-1 LM: ``given``, the budget's reusable one, or a freshly trained one
    (``backwards``: one that reads text backwards, for ``ulmfit-bwd``)."""
    if given:
        return Path(given), "given"
    if not backwards and budget.reuse_lm is not None and _is_lm_dir(budget.reuse_lm):
        return budget.reuse_lm, "reused"
    suffix = "_bwd" if backwards else ""
    # A harness test pretrains its own throwaway LM; real budgets share one across datasets.
    if budget.name == "tiny":
        target = out / f"lm_pretrained{suffix}"
    else:
        target = REPO / "runs" / "reproduce" / f"lm_pretrained_{budget.name}{suffix}"
        if _is_lm_dir(target):
            return target, "reused"
    stage = budget.pretrain.reading(backwards)
    t0 = time.perf_counter()
    # The harness owns its working directories: a rerun replaces them.
    train_language_model(dataclasses.replace(stage, out_dir=str(target), overwrite=True))
    return target, time.perf_counter() - t0


def finetune_lm(stage: LMStageConfig, pretrained: Path, texts: Sequence[str], out: Path) -> Path:
    """Stage 2: fine-tune ``pretrained`` on ``texts`` (one document per line) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    text_file = out.with_name(out.name + "_text.txt")
    # One document per line: the LM corpus reader splits plain text on newlines.
    text_file.write_text("\n".join(" ".join(t.split()) for t in texts) + "\n", encoding="utf-8")
    corpus = dataclasses.replace(stage.corpus, train=(str(text_file),), fmt=None)
    cfg = dataclasses.replace(
        stage, out_dir=str(out), pretrained=str(pretrained), corpus=corpus, overwrite=True
    )
    return train_language_model(cfg)


def fit_classifier(
    lm_dir: Path,
    budget: Budget,
    data: Splits,
    train: tuple[list[str], list[Any]],
    log_dir: Path | None,
) -> tuple[np.ndarray, np.ndarray | None, dict[str, float], TextClassifier]:
    """Stage 3 from ``lm_dir`` on ``train``: test scores and thresholds over
    ``data.classes``, the stage's times, and the classifier."""
    t0 = time.perf_counter()
    assert data.valid.labels is not None
    known = LabelEncoder.fit(train[1], data.task).classes
    valid = restrict_labels(data.valid.texts, data.valid.labels, known, data.task)
    clf = TextClassifier(lm_dir, budget.classifier.replace(task=data.task))
    clf.fit(train[0], train[1], valid, log_dir)
    times = {"classifier": time.perf_counter() - t0}
    t0 = time.perf_counter()
    probs = clf.predict_proba(data.test.texts).astype(np.float64)
    times["predict"] = time.perf_counter() - t0
    assert clf.labels is not None
    thresholds = None if data.task == "multiclass" else clf.thresholds
    if data.task == "multilabel" and thresholds is None:
        thresholds = np.full(len(clf.labels), 0.5)
    scores, t = align_columns(probs, clf.labels.classes, data.classes, thresholds)
    return scores, t, times, clf


def run_ulmfit(
    data: Splits,
    budget: Budget,
    out: Path,
    pretrained: Path,
    pretrain_time: float | str,
    backwards: bool = False,
) -> SystemRun:
    """Stages 2 and 3 from ``pretrained``; ``backwards``: every text read backwards."""
    suffix = "_bwd" if backwards else ""
    times: dict[str, float | str] = {"pretrain": pretrain_time}
    t0 = time.perf_counter()
    lm_text = data.train.texts + data.valid.texts + data.unlabelled
    stage = budget.finetune_lm.reading(backwards)
    ft = finetune_lm(stage, pretrained, lm_text, out / f"lm_finetuned{suffix}")
    times["finetune_lm"] = time.perf_counter() - t0
    assert data.train.labels is not None
    train = (data.train.texts, list(data.train.labels))
    clf_budget = dataclasses.replace(
        budget, classifier=budget.classifier.replace(backwards=backwards)
    )
    logs = out / f"classifier_logs{suffix}"
    scores, t, clf_times, clf = fit_classifier(ft, clf_budget, data, train, logs)
    times.update(clf_times)
    valid_scores = None
    if data.task == "multilabel":  # the ensemble tunes its own thresholds on these
        assert clf.labels is not None
        valid_probs = clf.predict_proba(data.valid.texts).astype(np.float64)
        valid_scores, _ = align_columns(valid_probs, clf.labels.classes, data.classes)
    system = "ulmfit-bwd" if backwards else "ulmfit"
    return SystemRun(system, scores, t, times, {"finetuned_lm": str(ft)}, valid_scores)


def ensemble_run(fwd: SystemRun, bwd: SystemRun, data: Splits, budget: Budget) -> SystemRun:
    """The paper's forward + backward ensemble: the two models' probabilities averaged.

    Multi-label thresholds are tuned again on the averaged validation probabilities (a
    label neither model saw in training stays never predicted).
    """
    scores = (fwd.scores + bwd.scores) / 2
    thresholds = None
    if data.task == "multilabel":
        assert fwd.valid_scores is not None and bwd.valid_scores is not None
        assert data.valid.labels is not None
        assert fwd.thresholds is not None and bwd.thresholds is not None
        y_valid = LabelEncoder(data.classes, data.task).encode(data.valid.labels)
        thresholds, _ = M.tune_thresholds(
            y_valid, (fwd.valid_scores + bwd.valid_scores) / 2, budget.classifier.min_positives
        )
        unseen = np.isinf(fwd.thresholds) & np.isinf(bwd.thresholds)
        thresholds = np.where(unseen, np.inf, thresholds)
    predict = sum(float(r.times.get("predict", 0.0)) for r in (fwd, bwd))
    times: dict[str, float | str] = {"stages": "ulmfit + ulmfit-bwd", "predict": predict}
    return SystemRun(ENSEMBLE, scores, thresholds, times, {"of": [fwd.system, bwd.system]})


def run_baseline(
    system: str, data: Splits, budget: Budget, out: Path, pretrained: Path | None
) -> SystemRun:
    assert data.train.labels is not None and data.valid.labels is not None
    args = (data.train.texts, data.train.labels, data.test.texts, data.task)
    valid = (data.valid.texts, data.valid.labels)
    r: BaselineResult
    if system == "tfidf":
        r = tfidf_baseline(*args, valid=valid, model="logreg")
    elif system == "tfidf-svm":
        r = tfidf_baseline(*args, valid=valid, model="svm")
    elif system == "fasttext":
        r = fasttext_baseline(*args, valid=valid)
    elif system == "hiclass":
        return hiclass_baseline(data)
    elif system == "scratch":
        r = scratch_baseline(
            *args,
            valid=valid,
            like=pretrained,
            classifier_config=budget.classifier,
            max_vocab=budget.finetune_lm.vocab.max_size,
            min_freq=budget.finetune_lm.vocab.min_freq,
            log_dir=out / "scratch_logs",
        )
    else:
        raise ValueError(f"unknown system {system!r}; known: {', '.join(SYSTEMS)}")
    scores, t = align_columns(r.scores, r.classes, data.classes, r.thresholds)
    times: dict[str, float | str] = {"fit": r.fit_s, "predict": r.predict_s}
    params = {k: v for k, v in r.params.items() if k != "encoder"}
    return SystemRun(system, scores, t, times, params)


def hiclass_baseline(data: Splits) -> SystemRun:
    """hiclass's LocalClassifierPerParentNode (TF-IDF + logistic regression per parent,
    as benchmarks/hierarchical.py) on the same split, scored on its predicted leaf."""
    if not data.paths:
        raise SystemExit("hiclass: a hierarchical dataset only (e.g. newsgroups20)")
    import hierarchical as HB  # benchmarks/hierarchical.py: the same features and model

    assert data.train.labels is not None
    train_paths = [data.paths[str(y)] for y in data.train.labels]
    t0 = time.perf_counter()  # hiclass fits and predicts in one call here: one time
    pred = HB.hiclass_lcppn((data.train.texts, train_paths), data.test.texts)
    wall = time.perf_counter() - t0
    col = {c: j for j, c in enumerate(data.classes)}
    scores = np.zeros((len(data.test), len(data.classes)))
    for i, path in enumerate(pred):
        if path and path[-1] in col:
            scores[i, col[path[-1]]] = 1.0
    return SystemRun("hiclass", scores, None, {"fit": wall, "predict": "-"}, {})


def score(data: Splits, run: SystemRun) -> dict[str, Any]:
    enc = LabelEncoder(data.classes, data.task)
    assert data.test.labels is not None
    y = enc.encode(data.test.labels)
    if data.task == "multiclass":
        return M.multiclass_metrics(y, run.scores, data.classes)
    assert run.thresholds is not None
    return M.multilabel_metrics(y, run.scores, run.thresholds, data.classes)


# --------------------------------------------------------------------------- report


def hardware() -> str:
    cpu = cpu_model()
    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name()}, torch {torch.__version__}"
    return f"{cpu} x{os.cpu_count()} CPU, torch {torch.__version__}"


def _fmt_time(v: float | str) -> str:
    return v if isinstance(v, str) else f"{v:.0f}s" if v >= 10 else f"{v:.1f}s"


def _lm_summary(pretrained: Path | None) -> tuple[str, float]:
    """'64/256x3 AWD-LSTM' and the pretraining corpus size in tokens (0 when unknown)."""
    if pretrained is None or not _is_lm_dir(pretrained):
        return "?", 0.0
    cfg = json.loads((pretrained / "config.json").read_text())
    m = cfg["model"]
    tokens = float(cfg.get("corpus_stats", {}).get("train_tokens", 0))
    name = {"awd_lstm": "AWD-LSTM", "qrnn": "QRNN"}.get(m.get("kind", "awd_lstm"), m.get("kind"))
    return f"{m['emb_size']}/{m['hidden_size']}x{m['n_layers']} {name}", tokens


def note(
    dataset: str,
    system: str,
    ours: float,
    target: float | None,
    lower_is_better: bool,
    data: Splits,
    budget: Budget,
    pretrained: Path | None,
    vs_paper: bool = False,
    macro_f1: float | None = None,
) -> str:
    """One line on why our figure is worse than the target, or '' if it is not.

    ``vs_paper``: a baseline measured against the paper's figure (it has no reference of
    its own). ``macro_f1`` (multi-label, %): flags rare labels that are never predicted.
    """
    if target is None:
        return ""
    gap = ours - target if lower_is_better else target - ours
    if gap <= 0:
        return ""
    reasons = []
    if vs_paper and system in BASELINE_KIND:
        reasons.append(f"{BASELINE_KIND[system]}, not the model behind that figure")
    if system.startswith("ulmfit") or system == "scratch":
        size, tokens = _lm_summary(pretrained)
        amount = f"{tokens / 1e6:.1f}M" if tokens >= 1e5 else f"{tokens / 1e3:.0f}k"
        if budget.name != "full":
            what = (
                f"a random {size} (no pretraining, no LM fine-tuning)"
                if system == "scratch"
                else f"{amount}-token pretraining of a {size} on a CPU"
            )
            reasons.append(f"{budget.name} budget: {what} vs 103M tokens and 400/1150x3 on a GPU")
        elif system != "scratch" and tokens:
            reasons.append(f"pretrained on {amount} Wikipedia tokens, not WikiText-103's 103M")
        one = {"ulmfit": "forward", "ulmfit-bwd": "backward"}.get(system)
        if one:
            reasons.append(f"{one} model only (paper: fwd+bwd ensemble)")
    if len(data.train) + len(data.valid) < data.n_official_train:
        reasons.append(f"{len(data.train)} of {data.n_official_train} training docs")
    if macro_f1 is not None and macro_f1 < 10:
        reasons.append(f"rare labels never predicted (macro-F1 {macro_f1:.1f})")
    n = len(data.test)
    p = (ours if lower_is_better else 100 - ours) / 100
    two_se = 200 * math.sqrt(max(p * (1 - p), 1e-12) / max(n, 1))
    if not reasons and gap < two_se:
        reasons.append(f"within test-set noise ({gap:.2f} < 2 s.e. = {two_se:.2f} points)")
    if not reasons:
        reasons.append("not explained by budget or data: see the section notes")
    return "; ".join(reasons)


def make_rows(
    dataset: str,
    data: Splits,
    runs: list[SystemRun],
    metrics: list[dict[str, Any]],
    budget: Budget,
    pretrained: Path | None,
    when: str,
    cmd: str,
) -> tuple[str, list[str]]:
    hw = hardware()
    rows = []
    multiclass = data.task == "multiclass"
    header = (
        "| dataset | system | "
        + ("test error %" if multiclass else "test micro-F1 / macro-F1")
        + " | paper ULMFiT | reference for this system | wall time per stage | hardware | "
        "date | command | why worse |"
    )
    paper_f1 = PAPER_F1.get(dataset)
    if multiclass:
        paper = f"{PAPER[dataset]:.2f}" if dataset in PAPER else "-"
    else:
        paper = f"{paper_f1[0]} ({paper_f1[1]})" if paper_f1 else "-"
    for run, m in zip(runs, metrics, strict=True):
        macro = None
        if multiclass:
            ours = 100 * m["error_rate"]
            shown = f"{ours:.2f}"
        else:
            ours, macro = 100 * m["micro_f1"], 100 * m["macro_f1"]
            shown = f"{ours:.2f} / {macro:.2f}"
        ulmfit = run.system.startswith("ulmfit")
        ref = None if ulmfit else REFERENCE.get((dataset, run.system.split("-")[0]))
        paper_target = PAPER.get(dataset) if multiclass else (paper_f1[0] if paper_f1 else None)
        target = ref[0] if ref else paper_target
        ref_text = "(paper)" if ulmfit else f"{ref[0]} ({ref[1]})" if ref else "-"
        vs_paper = not ulmfit and ref is None
        why = note(
            dataset,
            run.system,
            ours,
            target,
            multiclass,
            data,
            budget,
            pretrained,
            vs_paper,
            macro,
        )
        stages = " / ".join(f"{k} {_fmt_time(v)}" for k, v in run.times.items())
        rows.append(
            f"| {dataset} | {run.system} | {shown} | {paper} | {ref_text} | {stages} | {hw} | "
            f"{when} | `{cmd}` | {why or '-'} |"
        )
    return header, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dataset", help="a registered dataset, e.g. trec6, reuters21578")
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="smoke")
    parser.add_argument(
        "--systems", default="ulmfit,scratch,tfidf,fasttext", help=f"from {','.join(SYSTEMS)}"
    )
    parser.add_argument("--pretrained", help="an existing LM directory: skips stage 1")
    parser.add_argument(
        "--pretrained-backward", help="an existing backward LM: skips ulmfit-bwd's stage 1"
    )
    parser.add_argument("--data-dir", type=Path, help="dataset mirror (default: $ULMFIT_DATA)")
    parser.add_argument("--out-dir", type=Path, help="default: runs/reproduce/DATASET_BUDGET")
    parser.add_argument("--results", type=Path, default=RESULTS, help="Markdown file appended")
    parser.add_argument("--no-write", action="store_true", help="do not append to --results")
    parser.add_argument("--seed", type=int, default=0, help="validation split and subsamples")
    parser.add_argument(
        "--kind",
        choices=KINDS,
        help="the LM backbone (default: the budget's, an AWD-LSTM); stage 1 then trains its own",
    )
    parser.add_argument(
        "--lm-epochs",
        type=int,
        help="override the budget's LM fine-tuning epochs (stated in the RESULTS section)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    bad = [s for s in systems if s not in SYSTEMS]
    if bad:
        parser.error(f"unknown system(s) {bad}; known: {', '.join(SYSTEMS)}")
    root = args.data_dir or data_dir()
    budget = BUDGETS[args.budget](root)
    if args.lm_epochs:
        budget = with_lm_epochs(budget, args.lm_epochs)
    if args.kind and args.kind != budget.pretrain.model.kind:
        budget = with_kind(budget, args.kind)
    out = args.out_dir or REPO / "runs" / "reproduce" / f"{args.dataset}_{budget.name}"
    out.mkdir(parents=True, exist_ok=True)
    data = load_task(args.dataset, budget, args.seed, root)
    log.info(
        "%s: %d train / %d valid / %d test documents, %d classes (%s)",
        args.dataset,
        len(data.train),
        len(data.valid),
        len(data.test),
        len(data.classes),
        data.task,
    )

    pretrained: Path | None = None
    pretrain_time: float | str = "-"
    if "ulmfit" in systems or "scratch" in systems:
        pretrained, pretrain_time = pretrained_lm(budget, out, args.pretrained)
        # Fail here, not after the baselines, if it is not a (forward) LM.
        check_direction(load_lm(pretrained), pretrained, False, "ulmfit")
    backward: Path | None = None
    backward_time: float | str = "-"
    if "ulmfit-bwd" in systems:
        backward, backward_time = pretrained_lm(budget, out, args.pretrained_backward, True)
        check_direction(load_lm(backward), backward, True, "ulmfit-bwd")
    runs, metrics = [], []
    for system in systems:
        log.info("=== %s", system)
        if system == "ulmfit":
            assert pretrained is not None
            run = run_ulmfit(data, budget, out, pretrained, pretrain_time)
        elif system == "ulmfit-bwd":
            assert backward is not None
            run = run_ulmfit(data, budget, out, backward, backward_time, backwards=True)
        else:
            run = run_baseline(system, data, budget, out, pretrained)
        runs.append(run)
        metrics.append(score(data, run))
        log.info("%s: %s", system, _headline(metrics[-1]))
    by_name = {r.system: r for r in runs}
    if "ulmfit" in by_name and "ulmfit-bwd" in by_name:
        runs.append(ensemble_run(by_name["ulmfit"], by_name["ulmfit-bwd"], data, budget))
        metrics.append(score(data, runs[-1]))
        log.info("%s: %s", ENSEMBLE, _headline(metrics[-1]))

    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cmd = command_line("benchmarks/reproduce.py", argv)
    lm_for_notes = pretrained or backward
    header, rows = make_rows(args.dataset, data, runs, metrics, budget, lm_for_notes, when, cmd)
    table = "\n".join([header, "|" + "---|" * (header.count("|") - 1), *rows])
    report = {
        "dataset": args.dataset,
        "budget": budget.name,
        "pretrained": str(pretrained) if pretrained else None,
        "pretrained_backward": str(backward) if backward else None,
        "sizes": {k: len(getattr(data, k)) for k in ("train", "valid", "test")},
        "systems": {
            r.system: {"times": r.times, "params": r.params, "metrics": _headline(m)}
            for r, m in zip(runs, metrics, strict=True)
        },
    }
    (out / "reproduce.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    if not args.no_write:
        with open(args.results, "a", encoding="utf-8") as f:
            section = _section(args.dataset, data, budget, pretrained, when, cmd, table, backward)
            f.write(section)
    print(table)
    return 0


def _headline(m: dict[str, Any]) -> dict[str, float]:
    keys = ("error_rate", "macro_f1") if m["task"] == "multiclass" else ("micro_f1", "macro_f1")
    return {k: round(float(m[k]), 4) for k in keys}


def _section(
    dataset: str,
    data: Splits,
    budget: Budget,
    pretrained: Path | None,
    when: str,
    cmd: str,
    table: str,
    backward: Path | None = None,
) -> str:
    enc = LabelEncoder(data.classes, data.task)
    assert data.train.labels is not None and data.test.labels is not None
    base = M.majority_baseline(
        enc.encode(data.train.labels), enc.encode(data.test.labels), data.task
    )
    if data.task == "multiclass":
        baseline = f"majority class: {100 * base['error_rate']:.2f}% error"
    else:
        baseline = f"most frequent label alone: micro-F1 {100 * base['top_label_micro_f1']:.2f}"
    extra = "".join(f"; {n}" for n in data.notes)
    split = (
        f"{len(data.train)} train / {len(data.valid)} valid (seeded 10% of the official "
        f"{data.n_official_train}-doc train split{extra}), {len(data.test)} test"
    )
    lm = f"Pretrained LM: `{pretrained}`. " if pretrained else ""
    if backward:
        lm += f"Backward pretrained LM: `{backward}`. "
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    omp = os.environ.get("OMP_WAIT_POLICY", "unset")
    return (
        f"\n## reproduce.py: {dataset}, {budget.name} budget, {when}\n\n"
        f"`{cmd}`  \nRecipe: {budget.description}.  \nSplit: {split}; {baseline}.  \n"
        f"Baselines tune on the validation split, then refit on train + valid; ULMFiT and "
        f"scratch use it for epoch selection (and multi-label thresholds). {lm}"
        f"Load average at the end: {load:.1f} on {os.cpu_count()} cores (other work shares "
        f"them: wall times are upper bounds; OMP_WAIT_POLICY={omp}).\n\n{table}\n"
    )


if __name__ == "__main__":
    raise SystemExit(main())
