"""Stage 3: fine-tune a classifier from a language model; predict, embed, save and load.

``TextClassifier`` is the scikit-learn style entry point::

    clf = TextClassifier("runs/lm_finetuned", ClassifierTrainConfig(task="multiclass"))
    clf.fit(texts, labels)
    clf.predict(["what is the capital of peru ?"])
    clf.save("runs/classifier"); TextClassifier.load("runs/classifier")

For CPU inference, ``TextClassifier.load(dir, quantize="int8")`` (or ``clf.quantize()``)
runs the LSTM and linear layers in dynamic int8: about 3x faster than float32 on a CPU;
on the demo TREC-6 classifier the same accuracy and the same label for 99% of questions
(``benchmarks/speed.py``, ``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ulmfit.checkpoint import (
    CHECKSUM_FIELD,
    VOCAB_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    load_weights,
    read_config,
    save_weights,
    tokenizer_path,
    write_config,
    write_dir_atomically,
)
from ulmfit.data.classification import (
    ClassificationBatches,
    ClsBatch,
    LabelEncoder,
    audit_labelled,
    report_problems,
    stratified_split,
)
from ulmfit.data.taxonomy import HierarchicalLabels, Taxonomy
from ulmfit.inference import (
    INT8_BATCH_SIZE,
    QUANTIZE_DTYPES,
    classify_logits,
    encode_windows,
    is_quantized,
    quantize_int8,
)
from ulmfit.models.awd_lstm import ar_tar_penalty
from ulmfit.models.classifier import (
    CLASSIFIER_DROPOUTS,
    ClassifierConfig,
    TaskKind,
    TextClassifierModel,
    masked_concat_pool,
)
from ulmfit.models.io import check_direction, load_lm
from ulmfit.tasks import metrics as M
from ulmfit.tasks.heads import Head, HierarchyConfig, make_head, node_parents
from ulmfit.text.tokenize import TokenizerConfig, get_tokenizer
from ulmfit.text.vocab import Vocab
from ulmfit.training import distributed
from ulmfit.training.config import TrainConfig
from ulmfit.training.device import pick_device, seed_everything
from ulmfit.training.loop import StepOutput, fit

log = logging.getLogger(__name__)

CLASSIFIER_KIND = "classifier"


@dataclass(frozen=True)
class UnfreezeStage:
    """One stage of gradual unfreezing: train the top ``groups`` groups for ``epochs``."""

    groups: int  # top layer groups trained (0: all of them)
    epochs: int = 1
    lr: float = 1e-2  # peak rate of the top group (lower groups: lr / 2.6 each)


def _paper_stages() -> tuple[UnfreezeStage, ...]:
    # Head, then one more group per epoch, then everything (Howard & Ruder 2018, sec. 3.3).
    return (
        UnfreezeStage(1, 1, 2e-2),
        UnfreezeStage(2, 1, 1e-2),
        UnfreezeStage(3, 1, 5e-3),
        UnfreezeStage(0, 2, 1e-3),
    )


@dataclass(frozen=True)
class ClassifierTrainConfig:
    """Stage 3 recipe; the defaults are the paper's."""

    task: TaskKind = "multiclass"  # multiclass | multilabel | hierarchical: never guessed
    bs: int = 64  # documents per batch
    drop_mult: float = 0.5  # scales every encoder and head dropout
    head_hidden: int = 50  # hidden size of the head
    bptt: int = 70  # BPT3C chunk length
    max_len: int = 1400  # BPT3C: last tokens of a document that are pooled and trained
    stages: tuple[UnfreezeStage, ...] = field(default_factory=_paper_stages)  # gradual unfreezing
    train: TrainConfig = field(default_factory=lambda: TrainConfig(clip=0.1))
    label_smoothing: float = 0.0  # multiclass: cross-entropy label smoothing
    class_weights: bool = False  # multiclass: weight classes by inverse frequency
    pos_weight: bool = False  # multilabel: weight positives by negatives/positives per label
    valid_frac: float = 0.1  # held out of train (stratified) without a validation set; 0: none
    early_stopping: int = 0  # stop after this many epochs without improvement; 0: never
    min_steps: int = 0  # few labels: lengthen the last stage to this many steps in all; 0: off
    min_positives: int = 5  # multilabel: fewer validation positives -> global threshold
    backwards: bool = False  # read documents reversed (the backward model of an ensemble)
    device: str = "auto"  # auto | cpu | cuda
    n_workers: int = 1  # tokeniser processes
    strict: bool = False  # refuse suspicious data (missing-like labels, duplicates, tiny classes)
    hierarchy: HierarchyConfig = field(default_factory=HierarchyConfig)  # task hierarchical

    def __post_init__(self) -> None:
        if self.task not in ("multiclass", "multilabel", "hierarchical"):
            raise ValueError(
                "ClassifierTrainConfig.task must be multiclass|multilabel|hierarchical, "
                f"got {self.task!r}"
            )
        if not self.stages:
            raise ValueError("ClassifierTrainConfig.stages must not be empty")
        if not 0.0 <= self.valid_frac < 1.0:
            raise ValueError(
                f"ClassifierTrainConfig.valid_frac must be in [0, 1), got {self.valid_frac}"
            )
        object.__setattr__(self, "stages", tuple(self.stages))

    def replace(self, **changes: Any) -> ClassifierTrainConfig:
        return dataclasses.replace(self, **changes)


def train_in_stages(
    task: Any,
    model: nn.Module,
    cfg: ClassifierTrainConfig,
    log_dir: str | Path | None,
    history: list[dict[str, Any]],
    score_of: Callable[[dict[str, Any]], tuple[float, ...]] | None,
    what: str,
) -> None:
    """Stage 3's gradual unfreezing through the one loop, for any classifier task.

    Each of ``cfg.stages`` (the last lengthened to ``cfg.min_steps``) trains its top layer
    groups; every epoch's row goes to ``history``. ``score_of(row)`` ranks epochs (higher
    is better; ``what`` names it in the log); the best epoch's weights are restored at
    the end, and ``cfg.early_stopping`` epochs without improvement stop training.
    Without ``score_of`` (no validation data) every epoch would tie: the last is kept.
    """
    best: dict[str, Any] = {"score": None, "state": None, "bad": 0, "epoch": -1}
    if score_of is None and cfg.early_stopping:
        log.warning("early_stopping=%d ignored: no validation data", cfg.early_stopping)

    def on_epoch_end(row: dict[str, Any]) -> bool:
        history.append(row)
        if score_of is None:
            return False
        score = score_of(row)
        if best["score"] is None or score > best["score"]:
            state = copy.deepcopy(model.state_dict())
            best.update(score=score, state=state, bad=0, epoch=len(history) - 1)
        else:
            best["bad"] += 1
        return bool(cfg.early_stopping and best["bad"] >= cfg.early_stopping)

    # Optimiser steps: the loop steps every grad_accum batches and at each epoch's end.
    steps_per_epoch = -(-task.n_batches(0) // cfg.train.grad_accum)
    stages = stretch_stages(cfg.stages, steps_per_epoch, cfg.min_steps)
    if stages != cfg.stages:
        log.info(
            "min_steps=%d: last stage lengthened to %d epochs (%d steps an epoch)",
            cfg.min_steps,
            stages[-1].epochs,
            steps_per_epoch,
        )
    for i, stage in enumerate(stages):
        n_groups = len(model.layer_groups())  # type: ignore[operator]
        trainable = n_groups if stage.groups <= 0 else min(stage.groups, n_groups)
        log.info(
            "stage %d: top %d of %d groups, %d epoch(s), lr %g",
            i,
            trainable,
            n_groups,
            stage.epochs,
            stage.lr,
        )
        state = fit(
            task,
            cfg.train.replace(epochs=stage.epochs, lr=stage.lr),
            Path(log_dir) / f"stage{i}" if log_dir else None,
            trainable_groups=trainable,
            save_checkpoints=False,
            on_epoch_end=on_epoch_end,
        )
        for p in model.parameters():
            p.requires_grad_(True)
        if cfg.early_stopping and best["bad"] >= cfg.early_stopping:
            log.info("early stopping after stage %d", i)
            break
        if not state.finished:
            break
    if best["state"] is not None:
        log.info("keeping epoch %d (%s %.4f)", best["epoch"], what, best["score"][0])
        model.load_state_dict(best["state"])


def token_ids(
    tok: Any, vocab: Vocab, texts: Sequence[str], n_workers: int, backwards: bool
) -> list[np.ndarray]:
    """Each text's token ids (``xxbos`` first; reversed for a backward model);
    ``n_workers`` > 1 tokenises in that many processes."""
    token_lists = (
        tok.tokenize_many(texts, n_workers=n_workers) if n_workers > 1 else map(tok, texts)
    )
    docs = [vocab.numericalize(t) for t in token_lists]
    return [d[::-1].copy() for d in docs] if backwards else docs


def load_encoder(model: nn.Module, lm: nn.Module) -> None:
    """The language model's encoder weights into ``model.encoder``: stage 3 starts from
    stage 2."""
    prefix = "encoder."
    state = {k[len(prefix) :]: v for k, v in lm.state_dict().items() if k.startswith(prefix)}
    model.encoder.load_state_dict(state)  # type: ignore[union-attr]


class NoCarryTask:
    """What a classifier task tells the loop that a language model's would not: no state
    carried between batches, no files of its own (the classifier saves its best epoch)."""

    evaluate_fn: Any = None

    def init_carry(self) -> None:
        return None

    def evaluate(self) -> dict[str, float]:
        return self.evaluate_fn() if self.evaluate_fn is not None else {}

    def save_files(self, model_dir: Path) -> None:
        pass

    def carry_to_tensors(self, carry: Any) -> dict[str, Tensor]:
        return {}

    def carry_from_tensors(self, tensors: Mapping[str, Tensor]) -> Any:
        return None


def stretch_stages(
    stages: Sequence[UnfreezeStage], steps_per_epoch: int, min_steps: int
) -> tuple[UnfreezeStage, ...]:
    """``stages`` with the last one's epochs raised so that all take ``>= min_steps`` steps.

    A recipe written in epochs gives 100 labelled documents 2 steps an epoch at bs 64: far
    too few for the head to learn. Only the last stage grows (all groups trained, by
    default), so gradual unfreezing keeps its shape; ``min_steps=0`` changes nothing.
    """
    stages = tuple(stages)
    total = sum(s.epochs for s in stages) * steps_per_epoch
    if min_steps <= 0 or steps_per_epoch <= 0 or total >= min_steps:
        return stages
    others = sum(s.epochs for s in stages[:-1]) * steps_per_epoch
    epochs = -(-(min_steps - others) // steps_per_epoch)  # ceil
    return (*stages[:-1], dataclasses.replace(stages[-1], epochs=epochs))


class ClassifierTask(NoCarryTask):
    """Stage 3 as a :class:`~ulmfit.training.loop.Task` for the shared loop."""

    def __init__(
        self,
        model: TextClassifierModel,
        train: ClassificationBatches,
        valid: ClassificationBatches | None,
        loss_fn: nn.Module,
        evaluate_fn: Any,
        alpha: float,
        beta: float,
    ) -> None:
        self.model = model
        self.train = train
        self.valid = valid
        self.loss_fn = loss_fn
        self.evaluate_fn = evaluate_fn
        self.alpha = alpha
        self.beta = beta

    def layer_groups(self) -> list[list[nn.Parameter]]:
        return self.model.layer_groups()

    def n_batches(self, epoch: int) -> int:
        return len(self.train) // distributed.current().world_size

    def train_batches(self, epoch: int, start: int) -> Iterator[ClsBatch]:
        # Under torchrun each rank takes every world_size-th batch of the same seeded
        # order, and all ranks take the same number (DDP steps in lockstep).
        info = distributed.current()
        n = self.n_batches(epoch)
        mine = itertools.islice(self.train.batches(epoch), info.rank, None, info.world_size)
        return itertools.islice(mine, start, n)

    def train_step(self, model: nn.Module, batch: ClsBatch, carry: Any) -> StepOutput:
        out = model(batch.x, batch.lengths)
        assert batch.y is not None
        loss = self.loss_fn(out.logits.float(), batch.y)
        reg = (
            ar_tar_penalty(out.output, out.raw_output, self.alpha, self.beta)
            if self.alpha or self.beta
            else 0.0
        )
        n = batch.x.size(0)
        return StepOutput(loss + reg, None, {"loss": loss.detach() * n}, n)


class TextClassifier:
    """A ULMFiT text classifier with ``fit`` / ``predict`` / ``predict_proba`` / ``embed``."""

    def __init__(
        self, language_model: str | Path | None = None, config: ClassifierTrainConfig | None = None
    ) -> None:
        self.language_model = Path(language_model) if language_model else None
        self.config = config or ClassifierTrainConfig()
        self.model: TextClassifierModel | None = None
        self.vocab: Vocab | None = None
        self.tokenizer_config: TokenizerConfig | None = None
        self.spm_model: Path | None = None
        self.labels: LabelEncoder | HierarchicalLabels | None = None
        self.thresholds: np.ndarray | None = None
        self._head: Head | None = None
        self.history: list[dict[str, Any]] = []
        self._tokenizer: Any = None

    # -- text -> ids -----------------------------------------------------------------
    def _tok(self) -> Any:
        if self._tokenizer is None:
            assert self.tokenizer_config is not None
            self._tokenizer = get_tokenizer(self.tokenizer_config, self.spm_model)
        return self._tokenizer

    def numericalize(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Token ids of each text (``xxbos`` first; reversed for a backward model)."""
        assert self.vocab is not None
        cfg = self.config
        return token_ids(self._tok(), self.vocab, texts, cfg.n_workers, cfg.backwards)

    @property
    def head(self) -> Head:
        """The task kind's loss, decoding and scores (``ulmfit.tasks.heads``)."""
        if self._head is None:
            cfg = self.config
            if self.labels is None:
                raise RuntimeError("this TextClassifier is not fitted: call fit() or load() first")
            self._head = make_head(
                cfg.task,
                self.labels,
                cfg.hierarchy,
                label_smoothing=cfg.label_smoothing,
                class_weights=cfg.class_weights,
                pos_weight=cfg.pos_weight,
            )
        return self._head

    @property
    def device(self) -> torch.device:
        assert self.model is not None
        return next(self.model.parameters()).device

    # -- training ----------------------------------------------------------------------
    def fit(
        self,
        texts: Sequence[str],
        labels: Sequence[str] | Sequence[Sequence[str]],
        valid: tuple[Sequence[str], Sequence[Any]] | None = None,
        log_dir: str | Path | None = None,
        classes: Sequence[str] | None = None,
        check_data: bool = True,
        taxonomy: Taxonomy | str | Path | None = None,
        label_sep: str | None = None,
    ) -> TextClassifier:
        """Fine-tune the classifier (gradual unfreezing, discriminative LR, STLR).

        ``classes``: every label the model should know, in order (default: the sorted
        labels seen in ``labels``, and ``valid`` when it is carved out of them); a
        label outside them is an error. Give it when training on a sample that may
        miss rare labels the test data has.

        Suspicious data is reported first (``check_data``): labels that look like missing
        values, duplicate texts, classes with very few examples, training texts that are
        also validation texts. A warning each, or an error with ``config.strict``.
        Duplicate texts are kept on one side of the validation split.

        Hierarchical labels (``task="hierarchical"``) are paths: a list per document
        (``["comp", "comp.graphics"]``), a string split by ``label_sep``
        (``"Science/Physics"``), or several such paths (a list of lists, or of strings that
        contain ``label_sep``). ``taxonomy``: the tree (a :class:`Taxonomy` or a
        ``parent<TAB>child`` file; a bare node name is then completed to its path);
        without it the tree is every node on the labels' paths. ``config.hierarchy``
        chooses the head and its decoding.

        The weights kept are those of the epoch with the best validation metric (accuracy,
        micro-F1 at 0.5, or hierarchical F1; ties go to the lower validation loss); without
        validation data (``valid=([], [])`` or ``valid_frac=0``), those of the last epoch.
        """
        cfg = self.config
        if self.language_model is None:
            raise ValueError("TextClassifier needs a language-model directory to start from")
        if len(texts) != len(labels):
            raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
        seed_everything(cfg.train.seed)
        # Under torchrun: join the process group; each rank trains on its own batches and
        # DDP averages the gradients (a plain run is rank 0 of 1).
        info = distributed.init_from_env(cfg.device)
        device = pick_device(distributed.device_for(info, cfg.device))
        lm = load_lm(self.language_model)
        check_direction(lm, self.language_model, cfg.backwards, "the classifier")
        self.vocab, self.tokenizer_config, self.spm_model = lm.vocab, lm.tokenizer, lm.spm_model
        self._tokenizer = None
        # A refit starts clean: nothing tuned or logged by an earlier fit survives it.
        self.thresholds = None
        self.history = []
        self._head = None
        hier: HierarchicalLabels | None = None
        if cfg.task == "hierarchical":
            tax = taxonomy if taxonomy is None or isinstance(taxonomy, Taxonomy) else None
            if taxonomy is not None and tax is None:
                tax = Taxonomy.read(taxonomy)  # type: ignore[arg-type]
            hier = HierarchicalLabels.fit(
                list(labels) if valid is None else [*labels, *valid[1]], label_sep, tax
            )
            # Named paths (their ends) stand in for the labels in the checks and the split.
            named = hier.decode(hier.encode(labels, source="train"))
            bad = [i + 1 for i, y in enumerate(named) if not y]
        elif cfg.task == "multiclass":
            bad = [i + 1 for i, y in enumerate(labels) if not isinstance(y, str) or not y]
        else:
            bad = [i + 1 for i, y in enumerate(labels) if isinstance(y, str) or y is None]
        if bad:
            raise ValueError(
                f"labels: row(s) {bad[:5]} have no valid {cfg.task} label "
                f"({'a non-empty string' if cfg.task == 'multiclass' else 'a list of strings'})"
            )
        # The split stratifies by class: a hierarchical document's class is its path(s).
        strata: list[Any] = list(labels)
        split_task: Any = cfg.task
        if hier is not None:
            strata = [y[0] if len(y) == 1 else y for y in named]
            split_task = "multiclass" if all(len(y) == 1 for y in named) else "multilabel"
        if check_data:
            report_problems(
                audit_labelled(
                    texts,
                    strata,
                    split_task,
                    valid_texts=None if valid is None else valid[0],
                ),
                cfg.strict,
            )
        if valid is None and cfg.valid_frac == 0:
            train_texts, train_labels, valid_texts, valid_labels = list(texts), list(labels), [], []
        elif valid is None:
            tr, va = stratified_split(
                strata, cfg.valid_frac, cfg.train.seed, split_task, groups=list(texts)
            )
            train_texts = [texts[i] for i in tr]
            train_labels = [labels[i] for i in tr]
            valid_texts = [texts[i] for i in va]
            valid_labels = [labels[i] for i in va]
        else:
            train_texts, train_labels = list(texts), list(labels)
            valid_texts, valid_labels = list(valid[0]), list(valid[1])
        # Classes come from all the labelled data we were given: a rare label that the
        # seeded split happened to put only in validation is still a class.
        if hier is not None:
            self.labels = hier
        elif classes is not None:
            self.labels = LabelEncoder(list(classes), cfg.task)
        else:
            self.labels = LabelEncoder.fit(
                list(labels) if valid is None else train_labels, cfg.task
            )
        y_train = self.labels.encode(train_labels, source="train")
        y_valid = self.labels.encode(valid_labels, source="validation") if valid_texts else None

        enc_cfg = lm.model.config.replace(drop_mult=cfg.drop_mult, **CLASSIFIER_DROPOUTS)
        model_cfg = ClassifierConfig(
            n_classes=len(self.labels),
            task=cfg.task,
            head_hidden=cfg.head_hidden,
            bptt=cfg.bptt,
            max_len=cfg.max_len,
            encoder=enc_cfg,
            label_graph=node_parents(hier)
            if hier is not None and cfg.hierarchy.head == "graph"
            else (),
        )
        model = TextClassifierModel(model_cfg)
        load_encoder(model, lm.model)
        self.model = model.to(device)

        train_docs = self.numericalize(train_texts)
        valid_docs = self.numericalize(valid_texts) if valid_texts else []
        pad = model_cfg.encoder.pad_id
        train_b = ClassificationBatches(
            train_docs, y_train, cfg.bs, train=True, seed=cfg.train.seed, pad_id=pad, device=device
        )
        valid_b = (
            ClassificationBatches(
                valid_docs, y_valid, cfg.bs * 2, train=False, pad_id=pad, device=device
            )
            if valid_docs
            else None
        )
        head = self.head
        head.fit_priors(y_train)
        loss_fn = head.loss(y_train).to(device)

        def evaluate() -> dict[str, float]:
            if valid_b is None or y_valid is None:
                return {}
            # Under torchrun each rank scores its share; every rank gets the whole.
            probs, loss = self._probs(valid_b, loss_fn, shard=True)
            out = {"valid_loss": loss}
            out.update(head.score(y_valid, probs))
            return out

        task = ClassifierTask(
            model, train_b, valid_b, loss_fn, evaluate, cfg.train.alpha, cfg.train.beta
        )
        # The best epoch: the higher metric, ties broken by the lower validation loss
        # (micro-F1 at 0.5 can stay 0 for several epochs while the model improves).
        key = head.select_key
        train_in_stages(
            task,
            model,
            cfg,
            log_dir,
            self.history,
            (lambda row: (row[key], -row["valid_loss"])) if valid_b is not None else None,
            key,
        )
        if head.tuned and valid_b is not None and y_valid is not None:
            distributed.broadcast_buffers(model)
            probs, _ = self._probs(valid_b, None, shard=True)
            self.thresholds, global_t = M.tune_thresholds(y_valid, probs, cfg.min_positives)
            log.info("tuned per-label thresholds (global fallback %.2f)", global_t)
        return self

    # -- inference ---------------------------------------------------------------------
    def _probs(
        self,
        batches: ClassificationBatches,
        loss_fn: nn.Module | None,
        shard: bool = False,
        raw: bool = False,
    ) -> tuple[np.ndarray, float]:
        assert self.model is not None
        n_classes = len(self.labels or [])
        return score_batches(self.model, batches, n_classes, self.head.probs, loss_fn, shard, raw)

    def _batches(self, texts: Sequence[str], bs: int | None = None) -> ClassificationBatches:
        docs = self.numericalize(texts)
        if bs is None:
            bs = INT8_BATCH_SIZE if self.quantized else self.config.bs * 2
        assert self.model is not None
        pad = self.model.config.encoder.pad_id
        return ClassificationBatches(docs, None, bs, train=False, pad_id=pad, device=self.device)

    def predict_proba(self, texts: Sequence[str], bs: int | None = None) -> np.ndarray:
        """``(N, C)`` class probabilities (softmax), per-label probabilities (sigmoid), or
        for a hierarchical classifier each taxonomy node's probability, columns in the
        taxonomy's order (``labels.classes``: parents before children, named by path).

        Documents are sorted by length and read ``bs`` at a time (default ``2 x config.bs``;
        int8: ``INT8_BATCH_SIZE``). In float32 a document's probabilities do not depend on
        the batch it is in; in int8 they move a little with it (activations are quantised
        with one scale per batch).
        """
        return self._scores(texts, bs, raw=False)

    def predict_logits(self, texts: Sequence[str], bs: int | None = None) -> np.ndarray:
        """``(N, C)`` raw scores before the softmax / sigmoid (batched as ``predict_proba``)."""
        return self._scores(texts, bs, raw=True)

    def _scores(self, texts: Sequence[str], bs: int | None, raw: bool) -> np.ndarray:
        self._check_fitted()
        if len(texts) == 0:
            return np.zeros((0, len(self.labels or [])), dtype=np.float32)
        return self._probs(self._batches(texts, bs), None, raw=raw)[0]

    def predict(
        self,
        texts: Sequence[str],
        thresholds: float | np.ndarray | None = None,
        top_k: int | None = None,
    ) -> list[Any]:
        """Labels: one string per text (multiclass), a list of strings (multilabel), or a
        list of paths, each named by its end (``"comp/comp.graphics"``; hierarchical).

        Multilabel (and flat hierarchical) decisions use the tuned thresholds unless
        ``thresholds`` (one value or one per label) or ``top_k`` is given.
        """
        probs = self.predict_proba(texts)
        return self.decide(probs, thresholds, top_k)

    def decide(
        self,
        probs: np.ndarray,
        thresholds: float | np.ndarray | None = None,
        top_k: int | None = None,
    ) -> list[Any]:
        """The labels ``predict`` gives for these probabilities (see there)."""
        t = thresholds if thresholds is not None else self.thresholds
        return self.head.decide(probs, t, top_k)

    @torch.inference_mode()
    def embed(self, texts: Sequence[str], bs: int | None = None) -> np.ndarray:
        """Pooled document vectors ``[last, max, mean]`` ``(N, 3E)`` from the encoder."""
        self._check_fitted()
        assert self.model is not None
        model = self.model.eval()
        out = np.zeros((len(texts), 3 * model.config.encoder.emb_size), dtype=np.float32)
        if len(texts) == 0:
            return out
        batches = self._batches(texts, bs)
        for b in batches.batches(0):
            window, lengths = encode_windows(model, b.x, b.lengths)
            out[b.index] = masked_concat_pool(window, lengths).float().cpu().numpy()
        check_finite(out, "document vectors")
        return out

    def _check_fitted(self) -> None:
        if self.model is None or self.labels is None:
            raise RuntimeError("this TextClassifier is not fitted: call fit() or load() first")

    @property
    def quantized(self) -> bool:
        """True once :meth:`quantize` has made the model int8 (inference only)."""
        return self.model is not None and is_quantized(self.model)

    def quantize(self, dtype: str = "int8") -> TextClassifier:
        """Make the LSTM and linear layers dynamic int8, for CPU inference; returns ``self``.

        Irreversible on this object (re-``load`` for float32); a quantised classifier
        predicts and embeds but cannot be saved or trained further.
        """
        self._check_fitted()
        assert self.model is not None
        if dtype not in QUANTIZE_DTYPES:
            raise ValueError(f"quantize: dtype must be one of {QUANTIZE_DTYPES}, got {dtype!r}")
        if self.device.type != "cpu":
            raise ValueError(
                f"quantize: int8 inference runs on the CPU, but the model is on {self.device}; "
                "load it with device='cpu'"
            )
        if not self.quantized:
            self.model = quantize_int8(self.model)
        return self

    # -- persistence -------------------------------------------------------------------
    def save(self, out_dir: str | Path) -> Path:
        """Write config, weights, vocabulary and labels (and thresholds) atomically.

        Under torchrun only rank 0 writes (every rank holds the same weights); the other
        ranks return the path without touching it.
        """
        self._check_fitted()
        if not distributed.current().is_main:
            return Path(out_dir)
        if self.quantized:
            raise RuntimeError(
                "a quantised classifier cannot be saved: save the float32 one and pass "
                "quantize='int8' to TextClassifier.load"
            )
        assert self.model is not None and self.labels is not None and self.vocab is not None
        assert self.tokenizer_config is not None
        model, labels, vocab, tok_cfg = self.model, self.labels, self.vocab, self.tokenizer_config

        def fill(tmp: Path) -> None:
            digests = write_model_files(tmp, model, vocab, tok_cfg, self.spm_model)
            body = {
                "model": model.config.to_dict(),
                "tokenizer": tok_cfg.to_dict(),
                "labels": labels.to_dict(),
                "head": self.head.state(),
                "thresholds": None
                if self.thresholds is None
                else [float(t) for t in self.thresholds],
                "backwards": self.config.backwards,
                "train_config": _to_jsonable(self.config),
                "history": self.history,
                "language_model": str(self.language_model) if self.language_model else None,
                CHECKSUM_FIELD: digests,
            }
            write_config(tmp / "config.json", CLASSIFIER_KIND, body)

        return write_dir_atomically(Path(out_dir), fill)

    @classmethod
    def load(
        cls, model_dir: str | Path, device: str = "auto", quantize: str | None = None
    ) -> TextClassifier:
        """Load a classifier directory written by :meth:`save`.

        ``quantize="int8"``: dynamic int8 LSTM and linear layers for CPU inference
        (``device`` "auto" then means the CPU).
        """
        model_dir = Path(model_dir)
        if quantize is not None:
            if quantize not in QUANTIZE_DTYPES:
                raise ValueError(f"quantize must be one of {QUANTIZE_DTYPES}, got {quantize!r}")
            if device == "auto":
                device = "cpu"
            if pick_device(device).type != "cpu":
                raise ValueError(f"quantize={quantize!r} is for CPU inference, not {device!r}")
        config = read_config(model_dir, CLASSIFIER_KIND)
        try:
            model_cfg = ClassifierConfig.from_dict(config["model"])
            tok_cfg = TokenizerConfig.from_dict(config["tokenizer"])
            labels = labels_from_dict(config["labels"])
            hierarchy = HierarchyConfig(**config.get("train_config", {}).get("hierarchy", {}))
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(
                f"{model_dir / 'config.json'}: bad classifier config ({e})"
            ) from e
        vocab = Vocab.load(model_dir / VOCAB_FILE)
        if len(vocab) != model_cfg.encoder.vocab_size:
            raise CheckpointError(
                f"{model_dir / VOCAB_FILE}: {len(vocab)} tokens but the model expects "
                f"{model_cfg.encoder.vocab_size}: the vocabulary does not belong to these weights"
            )
        if len(labels) != model_cfg.n_classes:
            raise CheckpointError(
                f"{model_dir / 'config.json'}: {len(labels)} labels but "
                f"{model_cfg.n_classes} model outputs"
            )
        model = TextClassifierModel(model_cfg)
        load_weights(model_dir / WEIGHTS_FILE, model, config.get(CHECKSUM_FIELD))
        clf = cls(
            None,
            ClassifierTrainConfig(
                task=model_cfg.task,
                backwards=bool(config.get("backwards")),
                device=device,
                hierarchy=hierarchy,
            ),
        )
        clf.model = model.to(pick_device(device)).eval()
        clf.vocab, clf.tokenizer_config, clf.labels = vocab, tok_cfg, labels
        spm = tokenizer_path(model_dir, tok_cfg.kind)
        clf.spm_model = spm if spm is not None and spm.exists() else None
        t = config.get("thresholds")
        clf.thresholds = np.asarray(t, dtype=np.float64) if t is not None else None
        clf.history = config.get("history", [])
        clf.head.load_state(config.get("head", {}))
        if quantize is not None:
            clf.quantize(quantize)
        return clf


def ensemble_predict_proba(
    classifiers: Sequence[TextClassifier], texts: Sequence[str], bs: int | None = None
) -> np.ndarray:
    """Average of the classifiers' probabilities (the paper's forward + backward ensemble)."""
    if not classifiers:
        raise ValueError("no classifiers to ensemble")
    first = classifiers[0].labels
    for c in classifiers[1:]:
        if c.labels is None or first is None or c.labels.classes != first.classes:
            raise ValueError("ensembled classifiers must share the same labels in the same order")
    return np.mean([c.predict_proba(texts, bs) for c in classifiers], axis=0)


def write_model_files(
    out: Path, model: nn.Module, vocab: Vocab, tok_cfg: TokenizerConfig, spm_model: Path | None
) -> dict[str, str]:
    """A classifier directory's weights, vocabulary and (subword) tokenizer model; the
    weights' digests (for config.json)."""
    digests = save_weights(out / WEIGHTS_FILE, model)
    vocab.save(out / VOCAB_FILE)
    target = tokenizer_path(out, tok_cfg.kind)
    if spm_model is not None and target is not None:
        import shutil

        shutil.copyfile(spm_model, target)
    return digests


def labels_from_dict(d: dict[str, Any]) -> LabelEncoder | HierarchicalLabels:
    """A saved label set: classes (multiclass, multilabel) or taxonomy nodes."""
    if d.get("task") == "hierarchical":
        return HierarchicalLabels.from_dict(d)
    return LabelEncoder.from_dict(d)


@torch.inference_mode()
def score_batches(
    model: TextClassifierModel,
    batches: ClassificationBatches,
    n_classes: int,
    to_probs: Callable[[Tensor], Tensor],
    loss_fn: nn.Module | None = None,
    shard: bool = False,
    raw: bool = False,
) -> tuple[np.ndarray, float]:
    """``(N, C)`` probabilities (``raw``: logits) of every document of ``batches`` and the
    mean loss.

    ``shard``: under torchrun rank r scores batches r, r + world_size, ... and the
    ranks' parts are summed, so each rank gets every document's probabilities for
    1 / world_size of the work. Each document's row is written by one rank alone (the
    others add zeros), and in float32 a document's probabilities do not depend on its
    batch, so the result equals one process's. Nothing syncs with the host per batch.
    """
    info = distributed.current() if shard else distributed.DistInfo()
    was_training = model.training
    model.eval()
    device = batches.device
    out = torch.zeros((len(batches.docs), n_classes), dtype=torch.float32, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    n = torch.zeros((), dtype=torch.float64, device=device)
    index: list[np.ndarray] = []
    parts: list[Tensor] = []
    for b in itertools.islice(batches.batches(0), info.rank, None, info.world_size):
        # Rows leave the batch as soon as their text is read: big batches cost no padding.
        logits = classify_logits(model, b.x, b.lengths).float()
        if loss_fn is not None and b.y is not None:
            loss_sum += loss_fn(logits, b.y).double() * b.x.size(0)
            n += b.x.size(0)
        parts.append(logits if raw else to_probs(logits))
        index.append(b.index)
    model.train(was_training)
    if parts:  # one scatter (and one host-to-device copy of the positions) at the end
        out[torch.from_numpy(np.concatenate(index)).to(device)] = torch.cat(parts)
    if info.world_size > 1:
        out = distributed.all_reduce_sum(out)
        loss_sum, n = distributed.all_reduce_sum(loss_sum), distributed.all_reduce_sum(n)
    probs = out.cpu().numpy()
    check_finite(probs, "logits" if raw else "probabilities")
    return probs, float(loss_sum) / max(float(n), 1.0)


class NonFiniteOutputError(ValueError):
    """The model produced NaN or infinite outputs: a result that must not be reported."""


def check_finite(values: np.ndarray, what: str) -> None:
    """Refuse non-finite model outputs (a broken model or input), naming the documents."""
    finite = np.isfinite(values).reshape(len(values), -1).all(1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise NonFiniteOutputError(
            f"the model gave non-finite (NaN or infinite) {what} for {len(bad)} of "
            f"{len(values)} documents (first: document {int(bad[0]) + 1}); its weights are "
            "broken (a diverged training run?), so no result is reported"
        )


def ensemble_thresholds(classifiers: Sequence[TextClassifier]) -> np.ndarray:
    """Per-label decision thresholds for averaged multilabel probabilities.

    The mean of the members' tuned thresholds (0.5 for a member without them): symmetric
    in the members, where taking the first one's would let the order of the model
    directories change the decisions.
    """
    if not classifiers:
        raise ValueError("no classifiers to ensemble")
    n = len(classifiers[0].labels.classes) if classifiers[0].labels is not None else 0
    ts = [c.thresholds if c.thresholds is not None else np.full(n, 0.5) for c in classifiers]
    return np.mean(np.asarray(ts, dtype=np.float64), axis=0)


def _to_jsonable(obj: Any) -> Any:
    from ulmfit.config import to_dict

    return to_dict(obj)


__all__ = [
    "ClassifierTask",
    "ClassifierTrainConfig",
    "NonFiniteOutputError",
    "TextClassifier",
    "UnfreezeStage",
    "ensemble_predict_proba",
    "ensemble_thresholds",
    "score_batches",
]
