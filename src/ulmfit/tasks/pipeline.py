"""``ulmfit run CONFIG.toml``: all three stages, every artifact in one output directory.

::

    out_dir/
      lm_pretrained/    stage 1 (skipped when `pretrained` names an existing LM directory)
      lm_finetuned/     stage 2: the LM fine-tuned on the target text (labelled + unlabelled)
      classifier/       stage 3: the classifier (config, weights, vocab, labels, thresholds)
      report.json       test metrics beside the majority-class baseline, wall time per stage
      evaluation.png    confusion matrix (multiclass), per-label F1 (multilabel) or F1 per
                        taxonomy level (hierarchical)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ulmfit.checkpoint import CONFIG_FILE, OutputExistsError, atomic_write_text
from ulmfit.config import to_dict
from ulmfit.data.classification import (
    LabelEncoder,
    audit_labelled,
    read_labelled,
    report_problems,
)
from ulmfit.data.prepare import CorpusConfig
from ulmfit.data.taxonomy import HierarchicalLabels, Taxonomy
from ulmfit.models.pretrained import resolve as resolve_pretrained
from ulmfit.tasks.classify import (
    ClassifierTrainConfig,
    TextClassifier,
    ensemble_predict_proba,
    ensemble_thresholds,
)
from ulmfit.tasks.heads import HierarchyConfig
from ulmfit.tasks.multitask import Batching, HeadKind, Sampling
from ulmfit.tasks.train_lm import LMStageConfig, train_language_model
from ulmfit.training import distributed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelledDataConfig:
    """The target task's labelled (and unlabelled) data."""

    train: str = ""  # labelled training file (csv/tsv/jsonl) or folder-per-class
    test: str | None = None  # labelled test file, scored at the end
    valid: str | None = None  # labelled validation file; default: held out of train
    unlabelled: tuple[str, ...] = ()  # extra target-domain text for LM fine-tuning only
    text_column: tuple[str, ...] = ("text",)  # text field(s); several are joined with xxfld
    label_column: str = "label"  # label field (a list in JSONL, or see label_sep)
    label_sep: str | None = None  # multilabel CSV: between labels; hierarchical: in a path
    taxonomy: str | None = None  # hierarchical: a parent<TAB>child file (default: the paths')
    max_train: int = 0  # use only the first N training rows (0: all; logged, never silent)


@dataclass(frozen=True)
class TaskDataConfig:
    """One head of a multi-task run (a ``[[tasks]]`` table): its kind, data and weights."""

    name: str = ""  # the head's name (predictions and reports use it)
    kind: HeadKind = "multiclass"  # multiclass | multilabel | hierarchical | regression
    train: str = ""  # labelled training file of this head
    valid: str | None = None  # its validation file (default: held out of all training texts)
    test: str | None = None  # its test file, scored at the end
    text_column: tuple[str, ...] = ("text",)
    label_column: str = "label"
    label_sep: str | None = None  # multilabel CSV: between labels; hierarchical: in a path
    taxonomy: str | None = None  # hierarchical: a parent<TAB>child file
    weight: float = 1.0  # loss weight
    select_weight: float = 1.0  # weight in the validation score that picks the best epoch
    regression_loss: Literal["mse", "huber"] = "mse"
    hierarchy: HierarchyConfig = field(default_factory=HierarchyConfig)
    max_train: int = 0  # use only the first N training rows (0: all)


@dataclass(frozen=True)
class MultiTaskOptions:
    """How batches are drawn across the ``[[tasks]]``."""

    sampling: Sampling = "proportional"  # proportional | temperature | round_robin
    temperature: float = 2.0  # temperature sampling: p ~ n ** (1 / temperature)
    batching: Batching = "per_task"  # per_task (one task a batch) | mixed (tasks mixed)


@dataclass(frozen=True)
class PipelineConfig:
    out_dir: str = "runs/pipeline"  # every artifact goes under this directory
    pretrained: str | None = None  # an LM directory or name (wt103-fwd): skips stage 1
    bidirectional: bool = False  # also train backward models; report the fwd+bwd ensemble
    pretrained_backward: str | None = None  # a backward LM (dir or name): skips its stage 1
    overwrite: bool = False  # replace models already under out_dir (default: refuse them)
    pretrain: LMStageConfig = field(default_factory=LMStageConfig)  # stage 1 settings
    finetune_lm: LMStageConfig = field(default_factory=LMStageConfig)  # stage 2 settings
    data: LabelledDataConfig = field(default_factory=LabelledDataConfig)
    classifier: ClassifierTrainConfig = field(default_factory=ClassifierTrainConfig)
    # Stage 3 is then multi-task, and [data] gives only the unlabelled text, if any.
    tasks: tuple[TaskDataConfig, ...] = ()  # several heads on one encoder: [[tasks]] tables
    multitask: MultiTaskOptions = field(default_factory=MultiTaskOptions)


def run_pipeline(cfg: PipelineConfig, skip_lm_finetuning: bool = False) -> dict[str, Any]:
    """Run stages 1-3 and score the test set; returns (and writes) the report.

    With ``skip_lm_finetuning`` the ``pretrained`` LM goes straight to stage 3.
    """
    if cfg.tasks:
        return run_multitask_pipeline(cfg, skip_lm_finetuning)
    out = Path(cfg.out_dir)
    times: dict[str, float] = {}
    data = cfg.data
    if not data.train:
        raise ValueError("[data] train: no labelled training file given")
    _check_outputs(cfg, out, skip_lm_finetuning)

    # Read the labelled data first: a bad row fails here, before hours of LM training.
    def read(path: str) -> Any:
        return read_labelled(
            path,
            text_column=list(data.text_column),
            label_column=data.label_column,
            task=cfg.classifier.task,
            label_sep=data.label_sep,
        )

    train = read(data.train)
    if not train.texts:
        raise ValueError(f"{data.train}: no training records")
    # The classes are all the training file's labels, also when max_train keeps only
    # the first rows: the test data may well hold a rare label those rows lack.
    known = _label_space(cfg, train.labels or [])
    if data.max_train and len(train.texts) > data.max_train:
        log.info(
            "%s: using the first %d of %d training rows (max_train)",
            data.train,
            data.max_train,
            len(train.texts),
        )
        train = dataclasses.replace(
            train,
            texts=train.texts[: data.max_train],
            labels=None if train.labels is None else train.labels[: data.max_train],
            rows=train.rows[: data.max_train],
        )
    valid = valid_rows = None
    if data.valid:
        valid_rows = read(data.valid)
        if valid_rows.labels is None:
            raise ValueError(f"{data.valid}: no labels in column {data.label_column!r}")
        valid = (valid_rows.texts, valid_rows.labels)
    # Suspicious data is reported now, before any language model is trained.
    report_problems(
        audit_labelled(
            train.texts,
            train.labels or [],
            cfg.classifier.task,
            source=data.train,
            rows=train.rows,
            valid_texts=None if valid_rows is None else valid_rows.texts,
            valid_source=data.valid or "",
        ),
        cfg.classifier.strict,
    )
    test = None
    if data.test:
        test = read(data.test)
    # A validation or test label outside the training file's fails now, naming its file
    # line, rather than after the language models are trained.
    for path, held_out in ((data.train, train), (data.valid, valid_rows), (data.test, test)):
        if held_out is not None and held_out.labels is not None:
            known.encode(held_out.labels, rows=held_out.rows, source=str(path))

    out.mkdir(parents=True, exist_ok=True)  # the data are read: now there is work to keep
    directions = [("", False)] + ([("backward/", True)] if cfg.bidirectional else [])
    clfs: list[TextClassifier] = []
    artifacts: dict[str, str] = {}
    for sub, backwards in directions:
        given = cfg.pretrained_backward if backwards else cfg.pretrained
        clf, paths = _run_direction(
            cfg,
            out / sub,
            train,
            valid,
            backwards,
            given,
            skip_lm_finetuning,
            times,
            sub,
            known,
        )
        clfs.append(clf)
        artifacts.update({f"{sub}{k}": v for k, v in paths.items()})
    clf = clfs[0]
    report: dict[str, Any] = {"config": to_dict(cfg), "times": times, "artifacts": artifacts}
    if not distributed.current().is_main:
        return report  # under torchrun rank 0 scores the test set and writes the report
    if test is not None and test.labels is not None:
        t0 = time.perf_counter()
        report["test"] = evaluate_classifier(
            clf,
            test.texts,
            test.labels,
            out / "evaluation.png",
            source=data.test or "",
            rows=test.rows,
        )
        times["test_inference_s"] = time.perf_counter() - t0
        report["test"]["docs_per_s"] = len(test.texts) / times["test_inference_s"]
        assert clf.labels is not None
        y_tr = clf.labels.encode(train.labels or [], rows=train.rows, source=data.train)
        y_te = clf.labels.encode(test.labels, rows=test.rows, source=data.test or "")
        report["baseline"] = clf.head.baseline(y_tr, y_te)
        if len(clfs) > 1:
            report["test_backward"] = evaluate_classifier(clfs[1], test.texts, test.labels, None)
            report["test_ensemble"] = evaluate_classifier(
                clfs, test.texts, test.labels, out / "evaluation_ensemble.png"
            )
    atomic_write_text(out / "report.json", json.dumps(report, indent=2, default=str) + "\n")
    return report


def _check_outputs(cfg: PipelineConfig, out: Path, skip_lm_finetuning: bool) -> None:
    """Refuse, before anything runs, to replace models of an earlier run (unless
    ``overwrite``, or ``resume`` for an LM stage)."""
    if cfg.overwrite:
        return
    taken = []
    for sub, given in (("", cfg.pretrained), ("backward/", cfg.pretrained_backward)):
        if sub and not cfg.bidirectional:
            continue
        stages = [("lm_pretrained", cfg.pretrain.resume or cfg.pretrain.overwrite, not given)]
        stages.append(("lm_finetuned", cfg.finetune_lm.resume, not skip_lm_finetuning))
        stages.append(("classifier", False, True))
        for name, allowed, runs in stages:
            if runs and not allowed and (out / sub / name / CONFIG_FILE).exists():
                taken.append(str(out / sub / name))
    if taken:
        raise OutputExistsError(
            f"{out}: holds the models of an earlier run ({', '.join(taken)}); refusing to "
            "replace them. Pass --overwrite to replace them, or choose another out_dir"
        )


def _run_direction(
    cfg: PipelineConfig,
    out: Path,
    train: Any,
    valid: tuple[list[str], Any] | None,
    backwards: bool,
    pretrained_dir: str | None,
    skip_lm_finetuning: bool,
    times: dict[str, float],
    prefix: str,
    labels: LabelEncoder | HierarchicalLabels,
) -> tuple[TextClassifier, dict[str, str]]:
    """Stages 1-3 in one reading direction; the backward model reads every text reversed."""
    clf_cfg = cfg.classifier
    if backwards:
        clf_cfg = dataclasses.replace(clf_cfg, backwards=True)
    pretrained, finetuned = _language_models(
        cfg, out, train.texts, backwards, pretrained_dir, skip_lm_finetuning, times, prefix
    )
    # Stage 3: the classifier.
    t0 = time.perf_counter()
    clf = TextClassifier(finetuned, clf_cfg)
    clf.fit(
        train.texts,
        train.labels or [],
        valid=valid,
        log_dir=out / "classifier_logs",
        check_data=False,  # run_pipeline reported the files' problems, with their lines
        **_label_args(labels),
    )
    clf.save(out / "classifier")
    times[f"{prefix}classifier_s"] = time.perf_counter() - t0
    paths = {
        "pretrained_lm": str(pretrained),
        "finetuned_lm": str(finetuned),
        "classifier": str(out / "classifier"),
    }
    return clf, paths


def _language_models(
    cfg: PipelineConfig,
    out: Path,
    texts: list[str],
    backwards: bool,
    pretrained_dir: str | None,
    skip_lm_finetuning: bool,
    times: dict[str, float],
    prefix: str,
) -> tuple[Path, Path]:
    """Stages 1 and 2: the pretrained LM (given or trained) and its fine-tuned copy."""
    stage1, stage2 = cfg.pretrain, cfg.finetune_lm
    if backwards:  # forward: the configs as given (they may read backwards themselves)
        stage1, stage2 = stage1.reading(True), stage2.reading(True)
    # Stage 1: general-domain LM (or the one given).
    if pretrained_dir:
        pretrained = resolve_pretrained(pretrained_dir)  # a directory, or a model's name
        log.info("stage 1 skipped: using pretrained LM %s", pretrained)
    else:
        t0 = time.perf_counter()
        pretrained = train_language_model(
            dataclasses.replace(
                stage1,
                out_dir=str(out / "lm_pretrained"),
                overwrite=stage1.overwrite or cfg.overwrite,
            )
        )
        times[f"{prefix}pretrain_s"] = time.perf_counter() - t0
    # Stage 2: fine-tune the LM on the target text (training texts + unlabelled files).
    t0 = time.perf_counter()
    if skip_lm_finetuning:
        finetuned = pretrained
    else:
        finetuned = _finetune_lm(cfg, stage2, out, pretrained, texts)
        times[f"{prefix}finetune_lm_s"] = time.perf_counter() - t0
    return pretrained, finetuned


def run_multitask_pipeline(cfg: PipelineConfig, skip_lm_finetuning: bool = False) -> dict[str, Any]:
    """Stages 1-3 with several heads (``cfg.tasks``): each task's files are read and
    checked first (errors name the file and line), the documents of all tasks are joined
    (the same text in two tasks' files is one document labelled for both), the LM is
    fine-tuned on all of them, and one :class:`MultiTaskClassifier` is trained; each
    head is scored on its own test file."""
    from ulmfit.tasks.multitask import HeadSpec, MultiTaskClassifier, MultiTaskConfig

    out = Path(cfg.out_dir)
    if cfg.data.train:
        raise ValueError("[[tasks]] and [data] train both given: give each head's data in its task")
    if cfg.bidirectional:
        raise ValueError("bidirectional = true is not available with [[tasks]] yet")
    names = [t.name for t in cfg.tasks]
    if any(not t.name or not t.train for t in cfg.tasks) or len(set(names)) != len(names):
        raise ValueError(f"[[tasks]]: each needs a unique name and a train file (got {names})")
    with_valid = [t.name for t in cfg.tasks if t.valid]
    if with_valid and len(with_valid) != len(names):
        raise ValueError(
            f"[[tasks]]: {', '.join(with_valid)} give a valid file and the others do not; give "
            "one for every task, or none (then classifier.valid_frac is held out)"
        )
    _check_outputs(cfg, out, skip_lm_finetuning)
    times: dict[str, float] = {}

    def read(task: TaskDataConfig, path: str) -> Any:
        rows = read_labelled(
            path,
            text_column=list(task.text_column),
            label_column=task.label_column,
            task=task.kind,
            label_sep=task.label_sep,
        )
        if rows.labels is None:
            raise ValueError(f"{path}: no labels in column {task.label_column!r}")
        return rows

    train: dict[str, Any] = {}
    valid: dict[str, Any] = {}
    test: dict[str, Any] = {}
    spaces: dict[str, Any] = {}
    for t in cfg.tasks:  # read and check everything before any model trains
        rows = read(t, t.train)
        if t.max_train and len(rows) > t.max_train:
            log.info(
                "%s: using the first %d of %d rows (max_train)", t.train, t.max_train, len(rows)
            )
            rows = dataclasses.replace(
                rows, texts=rows.texts[: t.max_train], labels=rows.labels[: t.max_train],
                rows=rows.rows[: t.max_train],
            )  # fmt: skip
        train[t.name] = rows
        for path, store in ((t.valid, valid), (t.test, test)):
            if path:
                store[t.name] = read(t, path)

    def join(parts: dict[str, Any]) -> tuple[list[str], dict[str, list[Any]]]:
        texts: list[str] = []
        at: dict[str, int] = {}
        labels: dict[str, list[Any]] = {n: [] for n in names}
        conflicts: dict[str, int] = {}
        for name, rows in parts.items():
            for text, label in zip(rows.texts, rows.labels, strict=True):
                if text not in at:
                    at[text] = len(texts)
                    texts.append(text)
                    for n in names:
                        labels[n].append(None)
                if labels[name][at[text]] is None:  # a repeated text keeps its first label
                    labels[name][at[text]] = label
                elif labels[name][at[text]] != label:
                    conflicts[name] = conflicts.get(name, 0) + 1
        for name, count in conflicts.items():
            log.warning("task %s: %d repeated text(s), other label: kept the first", name, count)
        return texts, labels

    texts, labels = join(train)
    # The label spaces are the joined documents' (a repeated text keeps its first label):
    # every file's labels are checked against them now, naming the line of a bad one.
    for t in cfg.tasks:
        spaces[t.name] = _task_space(t, [y for y in labels[t.name] if y is not None])
        for part in (train, valid, test):
            if t.name in part:
                r = part[t.name]
                spaces[t.name].encode(r.labels, rows=r.rows, source=str(r.source))
    valid_set = join(valid) if valid else None
    log.info("%d documents over %d tasks", len(texts), len(names))
    out.mkdir(parents=True, exist_ok=True)
    pretrained, finetuned = _language_models(
        cfg, out, texts, False, cfg.pretrained, skip_lm_finetuning, times, ""
    )
    t0 = time.perf_counter()
    specs = tuple(
        HeadSpec(
            t.name,
            t.kind,
            t.weight,
            t.select_weight,
            t.regression_loss,
            t.hierarchy,
            t.label_sep,
            t.taxonomy,
        )
        for t in cfg.tasks
    )
    options = cfg.multitask
    mt_cfg = MultiTaskConfig(
        specs, options.sampling, options.temperature, cfg.classifier, options.batching
    )
    clf = MultiTaskClassifier(finetuned, mt_cfg)
    clf.fit(texts, labels, valid=valid_set, log_dir=out / "classifier_logs")
    clf.save(out / "classifier")
    times["classifier_s"] = time.perf_counter() - t0
    report: dict[str, Any] = {
        "config": to_dict(cfg),
        "times": times,
        "artifacts": {
            "pretrained_lm": str(pretrained),
            "finetuned_lm": str(finetuned),
            "classifier": str(out / "classifier"),
        },
    }
    if not distributed.current().is_main:
        return report
    report["test"], report["baseline"] = {}, {}
    for name, rows in test.items():
        t0 = time.perf_counter()
        metrics = clf.evaluate(rows.texts, {name: rows.labels}, str(rows.source), rows.rows)[name]
        times[f"test_inference_s_{name}"] = time.perf_counter() - t0
        head = clf.heads[name]
        head.plot(metrics, out / f"evaluation_{name}.png")
        report["test"][name] = metrics
        space = clf.labels[name]
        y_tr = space.encode([y for y in labels[name] if y is not None])
        report["baseline"][name] = head.baseline(y_tr, space.encode(rows.labels))
    atomic_write_text(out / "report.json", json.dumps(report, indent=2, default=str) + "\n")
    return report


def _task_space(task: TaskDataConfig, labels: list[Any]) -> Any:
    """A task's label space from its training labels (regression: numbers)."""
    from ulmfit.tasks.multitask import label_space

    return label_space(task.kind, task.name, labels, task.label_sep, task.taxonomy)


def _label_space(cfg: PipelineConfig, labels: list[Any]) -> LabelEncoder | HierarchicalLabels:
    """Every label the classifier will know: the training file's (and the taxonomy's)."""
    if cfg.classifier.task == "hierarchical":
        tax = Taxonomy.read(cfg.data.taxonomy) if cfg.data.taxonomy else None
        return HierarchicalLabels.fit(labels, cfg.data.label_sep, tax)
    if cfg.data.taxonomy:
        raise ValueError("[data] taxonomy is for task = 'hierarchical'")
    return LabelEncoder.fit(labels, cfg.classifier.task)


def _label_args(labels: LabelEncoder | HierarchicalLabels) -> dict[str, Any]:
    """``TextClassifier.fit``'s arguments that fix its label space to ``labels``."""
    if isinstance(labels, HierarchicalLabels):
        return {"taxonomy": labels.taxonomy, "label_sep": labels.sep}
    return {"classes": labels.classes}


def _finetune_lm(
    cfg: PipelineConfig, stage: LMStageConfig, out: Path, pretrained: Path, texts: list[str]
) -> Path:
    """Stage 2 on the training texts (one per line) plus any unlabelled files."""
    lm_text = out / "lm_text.txt"
    with distributed.main_first():  # under torchrun rank 0 writes it, the others read it
        if distributed.current().is_main:
            atomic_write_text(lm_text, "\n".join(_one_line(t) for t in texts) + "\n")
    corpus = dataclasses.replace(
        stage.corpus,
        train=(str(lm_text), *cfg.data.unlabelled),
        text_column=cfg.data.text_column,
        fmt=None,
    )
    stage = dataclasses.replace(
        stage,  # not cfg.finetune_lm: this direction's copy (the backward one reads reversed)
        out_dir=str(out / "lm_finetuned"),
        pretrained=str(pretrained),
        corpus=corpus,
        overwrite=stage.overwrite or cfg.overwrite,
    )
    return train_language_model(stage)


def evaluate_classifier(
    clf: TextClassifier | list[TextClassifier],
    texts: list[str],
    labels: list[Any],
    plot: Path | None,
    source: str = "",
    rows: list[int] | None = None,
) -> dict[str, Any]:
    """Metrics on labelled texts (and a PNG of the confusion matrix / per-label F1).

    A list of classifiers is scored by their averaged probabilities (an ensemble).
    ``source`` and ``rows`` (the texts' line numbers there) name an unknown label's line.
    """
    models = clf if isinstance(clf, list) else [clf]
    clf = models[0]
    assert clf.labels is not None
    y = clf.labels.encode(labels, rows=rows, source=source)
    probs = ensemble_predict_proba(models, texts)
    thresholds = ensemble_thresholds(models) if clf.head.tuned else None
    metrics = clf.head.metrics(y, probs, thresholds)
    if plot is not None:
        clf.head.plot(metrics, plot)
    return metrics


def _headline(m: dict[str, Any]) -> str:
    """One metric line of a head's report, whatever its kind."""
    if "hierarchical" in m:
        return f"hierarchical F1 {100 * m['hierarchical']['micro']['f1']:.2f}"
    if "accuracy" in m:
        return f"accuracy {100 * m['accuracy']:.2f}%"
    if "micro_f1" in m:
        return f"micro-F1 {100 * m['micro_f1']:.2f}"
    if "rmse" in m:
        return f"RMSE {m['rmse']:.4f}, Pearson {m['pearson']:.3f}"
    return "-"


def _one_line(text: str) -> str:
    # The LM corpus file holds one document per line.
    return " ".join(text.split())


def report_summary(report: dict[str, Any], task: str) -> str:
    """A few lines for the terminal: test figure beside the baseline, and where things are."""
    lines = []
    nan = float("nan")
    test, base = report.get("test"), report.get("baseline", {})
    if test and report.get("config", {}).get("tasks"):  # multi-task: a line per head
        for name, m in test.items():
            lines.append(f"{name}: {_headline(m)}  (baseline: {_headline(base.get(name, {}))})")
        test = None
    if test:
        if task == "hierarchical":
            h = test["hierarchical"]["micro"]["f1"]
            lines.append(
                f"test hierarchical F1: {100 * h:.2f}  leaf accuracy: "
                f"{100 * test['leaf_accuracy']:.2f}%  (most-frequent-path baseline hF1: "
                f"{100 * base.get('hierarchical', {}).get('micro', {}).get('f1', nan):.2f})"
            )
        elif task == "multiclass":
            lines.append(
                f"test error rate: {100 * test['error_rate']:.2f}%  "
                f"(majority-class baseline: {100 * base.get('error_rate', nan):.2f}%)"
            )
        else:
            # The majority-labels baseline is usually empty (micro-F1 0): show the top label's.
            lines.append(
                f"test micro-F1: {100 * test['micro_f1']:.2f}  "
                f"macro-F1: {100 * test['macro_f1']:.2f}  "
                f"(majority-labels baseline micro-F1: {100 * base.get('micro_f1', nan):.2f}, "
                f"most-frequent-label: {100 * base.get('top_label_micro_f1', nan):.2f})"
            )
    ens = report.get("test_ensemble")
    if ens and task == "multiclass":
        lines.append(f"forward+backward ensemble test error rate: {100 * ens['error_rate']:.2f}%")
    elif ens and task == "hierarchical":
        h = ens["hierarchical"]["micro"]["f1"]
        lines.append(f"forward+backward ensemble test hierarchical F1: {100 * h:.2f}")
    elif ens:
        lines.append(f"forward+backward ensemble test micro-F1: {100 * ens['micro_f1']:.2f}")
    for name, secs in report.get("times", {}).items():
        lines.append(f"{name}: {secs:.1f}")
    for name, path in report.get("artifacts", {}).items():
        lines.append(f"{name}: {path}")
    return "\n".join(lines)


__all__ = [
    "CorpusConfig",
    "LabelledDataConfig",
    "PipelineConfig",
    "evaluate_classifier",
    "run_pipeline",
]


@dataclass(frozen=True)
class ClassifierStageConfig:
    """``ulmfit train-classifier``: stage 3 alone, from a fine-tuned LM directory."""

    lm: str = ""  # the (fine-tuned) language-model directory the encoder comes from
    out_dir: str = "runs/classifier"  # classifier directory written
    overwrite: bool = False  # replace a classifier already in out_dir (default: refuse it)
    data: LabelledDataConfig = field(default_factory=LabelledDataConfig)
    classifier: ClassifierTrainConfig = field(default_factory=ClassifierTrainConfig)
    tasks: tuple[TaskDataConfig, ...] = ()  # several heads ([[tasks]] in --config's TOML)
    multitask: MultiTaskOptions = field(default_factory=MultiTaskOptions)


def train_classifier_stage(cfg: ClassifierStageConfig) -> dict[str, Any]:
    """Stage 3 from files; scores ``data.test`` if given. Returns the report."""
    if not cfg.lm:
        raise ValueError("train-classifier needs --lm DIR (a language-model directory)")
    return run_pipeline(
        PipelineConfig(
            out_dir=cfg.out_dir,
            pretrained=cfg.lm,
            data=cfg.data,
            classifier=cfg.classifier,
            overwrite=cfg.overwrite,
            tasks=cfg.tasks,
            multitask=cfg.multitask,
        ),
        skip_lm_finetuning=True,
    )
