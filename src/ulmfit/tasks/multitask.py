"""Multi-task classification: several named heads on one fine-tuned encoder, trained
together in the one loop and served with one encoder pass.

::

    mt = MultiTaskClassifier("runs/lm_ft", MultiTaskConfig(heads=(
        HeadSpec("coarse"), HeadSpec("fine", weight=0.5), HeadSpec("stars", kind="regression"))))
    mt.fit(texts, {"coarse": coarse, "fine": fine, "stars": stars})  # None: not labelled
    mt.predict(texts)        # {"coarse": [...], "fine": [...], "stars": [...]}
    mt.save("runs/mt"); MultiTaskClassifier.load("runs/mt")

Each head is one of the task kinds of ``ulmfit.tasks.heads`` (multiclass, multilabel,
hierarchical, regression) and owns its loss, decoding and metrics. A document may be
labelled for some heads only: its missing targets are masked out of their heads' losses.
Batches are drawn one task at a time (a batch of documents that task labels), in an order
the sampler sets: ``proportional`` (every task's batches once an epoch, shuffled),
``temperature`` (task t drawn with probability ~ n_t^(1/T)) or ``round_robin``; each batch
trains every head its documents are labelled for. Gradual unfreezing and discriminative
rates work over the shared encoder as for one head (the heads are the top group). The best
epoch is the one with the best weighted validation score: each head's selection metric
(accuracy, micro-F1, hierarchical F1, R^2) weighted by its ``select_weight``.

A model with one head is :class:`~ulmfit.tasks.classify.TextClassifier`, unchanged.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

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
    tokenizer_path,
    write_config,
    write_dir_atomically,
)
from ulmfit.data.classification import ClassificationBatches, ClsBatch, LabelEncoder
from ulmfit.data.taxonomy import HierarchicalLabels, Taxonomy
from ulmfit.inference import encode_windows
from ulmfit.models.awd_lstm import ar_tar_penalty
from ulmfit.models.classifier import CLASSIFIER_DROPOUTS, masked_concat_pool
from ulmfit.models.io import load_lm
from ulmfit.models.multihead import HeadShape, MultiHeadConfig, MultiHeadModel
from ulmfit.tasks import metrics as M
from ulmfit.tasks.classify import (
    ClassifierTrainConfig,
    NoCarryTask,
    check_finite,
    labels_from_dict,
    load_encoder,
    token_ids,
    train_in_stages,
    write_model_files,
)
from ulmfit.tasks.heads import (
    Head,
    HierarchyConfig,
    RegressionLabels,
    make_head,
    node_parents,
)
from ulmfit.text.tokenize import TokenizerConfig, get_tokenizer
from ulmfit.text.vocab import Vocab
from ulmfit.training import distributed
from ulmfit.training.device import pick_device, seed_everything
from ulmfit.training.loop import StepOutput

log = logging.getLogger(__name__)

MULTITASK_KIND = "multitask_classifier"
HeadKind = Literal["multiclass", "multilabel", "hierarchical", "regression"]
Sampling = Literal["proportional", "temperature", "round_robin"]
Batching = Literal["per_task", "mixed"]


@dataclass(frozen=True)
class HeadSpec:
    """One named head: its task kind, loss weight and weight in model selection."""

    name: str
    kind: HeadKind = "multiclass"
    weight: float = 1.0  # the head's loss is multiplied by this
    select_weight: float = 1.0  # weight of its metric in the validation score (0: ignored)
    regression_loss: Literal["mse", "huber"] = "mse"
    hierarchy: HierarchyConfig = field(default_factory=HierarchyConfig)
    label_sep: str | None = None  # hierarchical: the path separator of string labels
    taxonomy: str | None = None  # hierarchical: a parent<TAB>child file

    def __post_init__(self) -> None:
        if self.kind not in ("multiclass", "multilabel", "hierarchical", "regression"):
            raise ValueError(f"head {self.name!r}: unknown kind {self.kind!r}")
        if self.weight < 0 or self.select_weight < 0:
            raise ValueError(f"head {self.name!r}: weight and select_weight must be >= 0")
        HeadShape(self.name, 1)  # the name's rules


@dataclass(frozen=True)
class MultiTaskConfig:
    """The heads, how batches are drawn across them, and the shared stage-3 recipe."""

    heads: tuple[HeadSpec, ...] = ()
    sampling: Sampling = "proportional"
    temperature: float = 2.0  # sampling "temperature": p_t ~ n_t ** (1 / temperature)
    classifier: ClassifierTrainConfig = field(default_factory=ClassifierTrainConfig)
    # per_task: each batch holds one task's documents (tasks ordered by the sampler);
    # mixed: each batch mixes the tasks' documents in the sampler's proportions.
    batching: Batching = "per_task"

    def __post_init__(self) -> None:
        names = [h.name for h in self.heads]
        if not names:
            raise ValueError("MultiTaskConfig.heads: at least one head")
        if len(set(names)) != len(names):
            raise ValueError(f"MultiTaskConfig.heads: repeated names {names}")
        if self.sampling not in ("proportional", "temperature", "round_robin"):
            raise ValueError(f"MultiTaskConfig.sampling: unknown {self.sampling!r}")
        if self.temperature <= 0:
            raise ValueError("MultiTaskConfig.temperature must be > 0")
        if self.batching not in ("per_task", "mixed"):
            raise ValueError(f"MultiTaskConfig.batching: unknown {self.batching!r}")
        object.__setattr__(self, "heads", tuple(self.heads))


def label_space(
    kind: str, name: str, labels: Sequence[Any], label_sep: str | None, taxonomy: str | None
) -> Any:
    """A head's label space from its labels: classes, taxonomy nodes or one value."""
    if kind == "regression":
        return RegressionLabels(name)
    if kind == "hierarchical":
        tax = Taxonomy.read(taxonomy) if taxonomy else None
        return HierarchicalLabels.fit(labels, label_sep, tax)
    return LabelEncoder.fit(labels, kind)  # type: ignore[arg-type]


def task_weights(sizes: Sequence[int], sampling: str, temperature: float) -> np.ndarray:
    """Each task's share of the batches (or, mixed, of the documents) an epoch draws."""
    n = np.asarray(sizes, dtype=np.float64)
    if sampling == "proportional":
        w = n
    elif sampling == "round_robin":
        w = (n > 0).astype(np.float64)
    else:
        w = np.where(n > 0, n ** (1.0 / temperature), 0.0)
    return w / w.sum()


def mixed_draw(
    members: Sequence[np.ndarray], n_docs: int, sampling: str, temperature: float, seed: int,
    epoch: int,
) -> np.ndarray:  # fmt: skip
    """The documents one mixed epoch trains on (``members``: each task's documents).

    ``proportional``: every labelled document once, shuffled. Otherwise ``n_docs`` draws
    with replacement, a document's probability the sum over its tasks of the task's
    share (:func:`task_weights`) divided by its number of documents.
    """
    rng = np.random.default_rng([seed, epoch, 11])
    labelled = np.unique(np.concatenate([m for m in members if len(m)]))
    if sampling == "proportional":
        return rng.permutation(labelled)
    share = task_weights([len(m) for m in members], sampling, temperature)
    p = np.zeros(n_docs)
    for m, w in zip(members, share, strict=True):
        if len(m):
            p[m] += w / len(m)
    return rng.choice(n_docs, size=len(labelled), p=p / p.sum())


def task_order(
    sizes: Sequence[int], sampling: str, temperature: float, seed: int, epoch: int
) -> list[int]:
    """Which task each batch of an epoch comes from (``sizes``: batches per task).

    An epoch has ``sum(sizes)`` batches. ``proportional``: every task's batches exactly
    once, shuffled; ``temperature``: each batch's task drawn with probability
    ``~ size ** (1 / T)`` (T=1: proportional in expectation; large T: uniform);
    ``round_robin``: tasks in turn. A pure function of its arguments.
    """
    total = int(sum(sizes))
    active = [t for t, n in enumerate(sizes) if n > 0]
    if total == 0:
        return []
    rng = np.random.default_rng([seed, epoch, 7])
    if sampling == "proportional":
        order = np.repeat(np.arange(len(sizes)), sizes)
        rng.shuffle(order)
        return [int(t) for t in order]
    if sampling == "round_robin":
        return [active[i % len(active)] for i in range(total)]
    p = np.array([sizes[t] ** (1.0 / temperature) for t in active], dtype=np.float64)
    return [int(active[i]) for i in rng.choice(len(active), size=total, p=p / p.sum())]


class _Targets:
    """Each head's targets over the documents, with a mask of the labelled ones."""

    def __init__(self, values: np.ndarray, mask: np.ndarray, device: torch.device) -> None:
        self.values = torch.from_numpy(values).to(device)
        self.mask = torch.from_numpy(mask).to(device)
        self.numpy_values, self.numpy_mask = values, mask


def masked_loss(loss_fn: nn.Module, logits: Tensor, target: _Targets, ids: Tensor) -> Tensor:
    """The head's loss over the batch's documents that it has labels for; zero (with
    zero gradients) when there are none."""
    rows = target.mask[ids]
    if not bool(rows.any()):
        return logits.sum() * 0.0
    loss: Tensor = loss_fn(logits[rows].float(), target.values[ids][rows])
    return loss


def _endless(batches: ClassificationBatches, epoch: int) -> Iterator[ClsBatch]:
    """One task's batches for an epoch, reshuffled and repeated when they run out. (A
    function, not a generator expression in a comprehension: that would read the loop
    variable late and give every task the last task's batches.)"""
    for k in itertools.count():
        yield from batches.batches(epoch * 1000 + k)


class MultiTaskTask(NoCarryTask):
    """Stage 3 with several heads, as a :class:`~ulmfit.training.loop.Task`."""

    def __init__(
        self,
        model: MultiHeadModel,
        batches: list[ClassificationBatches],
        targets: dict[str, _Targets],
        losses: dict[str, nn.Module],
        weights: dict[str, float],
        config: MultiTaskConfig,
        evaluate_fn: Any,
    ) -> None:
        self.model, self.batches, self.targets = model, batches, targets
        self.losses, self.weights, self.config = losses, weights, config
        self.evaluate_fn = evaluate_fn
        self._docs: dict[int, np.ndarray] | None = None
        self._mixed_epoch: tuple[int, ClassificationBatches] | None = None

    def layer_groups(self) -> list[list[nn.Parameter]]:
        return self.model.layer_groups()

    def _mixed(self, epoch: int) -> ClassificationBatches:
        """One mixed epoch's batches: the sampler's documents, sortish-batched together
        (drawn once an epoch: the loop asks for their number more than once)."""
        if self._mixed_epoch is not None and self._mixed_epoch[0] == epoch:
            return self._mixed_epoch[1]
        cfg, first = self.config, self.batches[0]
        if self._docs is None:  # every task's documents by position, once
            self._docs = {}
            for b in self.batches:
                assert b.targets is not None
                self._docs.update(zip(b.targets.tolist(), b.docs, strict=True))
        members = [np.asarray(b.targets) for b in self.batches]  # each task's doc positions
        seed = cfg.classifier.train.seed
        n_docs = max(self._docs) + 1
        idx = mixed_draw(members, n_docs, cfg.sampling, cfg.temperature, seed, epoch)
        batches = ClassificationBatches(
            [self._docs[int(i)] for i in idx],
            idx.astype(np.int64),
            first.bs,
            train=True,
            seed=seed,
            pad_id=first.pad_id,
            device=first.device,
        )
        self._mixed_epoch = (epoch, batches)
        return batches

    def n_batches(self, epoch: int) -> int:
        if self.config.batching == "mixed":
            return len(self._mixed(epoch)) // distributed.current().world_size
        return sum(len(b) for b in self.batches) // distributed.current().world_size

    def _epoch(self, epoch: int) -> Iterator[ClsBatch]:
        cfg = self.config
        if cfg.batching == "mixed":
            yield from self._mixed(epoch).batches(epoch)
            return
        seed = cfg.classifier.train.seed
        sizes = [len(b) for b in self.batches]
        # Each task's own batches, reshuffled each time a task runs out (temperature and
        # round-robin may draw a small task more often than it has batches).
        streams = [_endless(b, epoch) for b in self.batches]
        for t in task_order(sizes, cfg.sampling, cfg.temperature, seed, epoch):
            yield next(streams[t])

    def train_batches(self, epoch: int, start: int) -> Iterator[ClsBatch]:
        info = distributed.current()
        mine = itertools.islice(self._epoch(epoch), info.rank, None, info.world_size)
        return itertools.islice(mine, start, self.n_batches(epoch))

    def train_step(self, model: nn.Module, batch: ClsBatch, carry: Any) -> StepOutput:
        logits, out, _ = model(batch.x, batch.lengths)
        assert batch.y is not None  # the documents' positions: the targets are looked up
        ids = batch.y
        parts = {
            name: masked_loss(self.losses[name], logits[name], self.targets[name], ids)
            for name in self.losses
        }
        loss = sum(self.weights[n] * v for n, v in parts.items())
        alpha, beta = self.config.classifier.train.alpha, self.config.classifier.train.beta
        reg = ar_tar_penalty(out, out, alpha, beta) if alpha or beta else 0.0
        n = batch.x.size(0)
        logged = {f"loss_{k}": v.detach() * n for k, v in parts.items()}
        logged["loss"] = torch.as_tensor(loss).detach() * n
        return StepOutput(loss + reg, None, logged, n)  # type: ignore[arg-type]


class MultiTaskClassifier:
    """Named heads over one ULMFiT encoder: ``fit`` / ``predict`` / ``predict_proba`` /
    ``embed`` / ``evaluate``, a result per head."""

    def __init__(
        self, language_model: str | Path | None = None, config: MultiTaskConfig | None = None
    ) -> None:
        self.language_model = Path(language_model) if language_model else None
        if config is None:
            raise ValueError("MultiTaskClassifier needs a MultiTaskConfig naming its heads")
        self.config = config
        self.model: MultiHeadModel | None = None
        self.vocab: Vocab | None = None
        self.tokenizer_config: TokenizerConfig | None = None
        self.spm_model: Path | None = None
        self.labels: dict[str, Any] = {}
        self.heads: dict[str, Head] = {}
        self.thresholds: dict[str, np.ndarray | None] = {}
        self.history: list[dict[str, Any]] = []
        self._tokenizer: Any = None

    @property
    def head_names(self) -> list[str]:
        return [h.name for h in self.config.heads]

    # -- text -> ids -----------------------------------------------------------------
    def numericalize(self, texts: Sequence[str]) -> list[np.ndarray]:
        assert self.vocab is not None and self.tokenizer_config is not None
        if self._tokenizer is None:
            self._tokenizer = get_tokenizer(self.tokenizer_config, self.spm_model)
        c = self.config.classifier
        return token_ids(self._tokenizer, self.vocab, texts, c.n_workers, c.backwards)

    @property
    def device(self) -> torch.device:
        assert self.model is not None
        return next(self.model.parameters()).device

    def _label_space(self, spec: HeadSpec, labels: Sequence[Any]) -> Any:
        given = [y for y in labels if y is not None]
        return label_space(spec.kind, spec.name, given, spec.label_sep, spec.taxonomy)

    def _make_head(self, spec: HeadSpec, labels: Any) -> Head:
        c = self.config.classifier
        return make_head(
            spec.kind,
            labels,
            spec.hierarchy,
            label_smoothing=c.label_smoothing,
            class_weights=c.class_weights,
            pos_weight=c.pos_weight,
            regression_loss=spec.regression_loss,
        )

    def _targets(
        self,
        name: str,
        labels: Sequence[Any],
        device: torch.device,
        rows: Sequence[int] | None = None,
    ) -> _Targets:
        """The head's targets over all documents; unlabelled rows get a placeholder.
        ``rows``: each document's row number in the caller's data (for errors)."""
        space = self.labels[name]
        mask = np.array([y is not None for y in labels], dtype=bool)
        given = [y for y in labels if y is not None]
        where = [
            int(rows[int(i)]) if rows is not None else int(i) + 1 for i in np.flatnonzero(mask)
        ]
        source = f"head {name!r}"
        enc = space.encode(given, rows=where, source=source) if given else None
        width = len(space)
        if isinstance(space, LabelEncoder) and space.task == "multiclass":
            values = np.zeros(len(labels), dtype=np.int64)
        else:
            values = np.zeros((len(labels), width), dtype=np.float32)
        if enc is not None:
            values[mask] = enc
        return _Targets(values, mask, device)

    # -- training ----------------------------------------------------------------------
    def fit(
        self,
        texts: Sequence[str],
        labels: Mapping[str, Sequence[Any]],
        valid: tuple[Sequence[str], Mapping[str, Sequence[Any]]] | None = None,
        log_dir: str | Path | None = None,
    ) -> MultiTaskClassifier:
        """Fine-tune every head together. ``labels[name]`` has one entry per text (None:
        the text is not labelled for that head). ``valid``: the same for validation
        (default: ``classifier.valid_frac`` of the texts, seeded)."""
        cfg, ccfg = self.config, self.config.classifier
        if self.language_model is None:
            raise ValueError("MultiTaskClassifier needs a language-model directory to start from")
        missing = [n for n in self.head_names if n not in labels]
        extra = [n for n in labels if n not in self.head_names]
        if missing or extra:
            raise ValueError(f"labels: heads {missing} missing, {extra} not in the config")
        for name, ys in labels.items():
            if len(ys) != len(texts):
                raise ValueError(f"head {name!r}: {len(ys)} labels for {len(texts)} texts")
            if all(y is None for y in ys):
                raise ValueError(f"head {name!r}: no labelled text")
        if valid is not None:
            v_texts, v_labels = valid
            if not len(v_texts):
                valid = None  # ([], {...}): no validation data
            elif set(v_labels) != set(self.head_names) or any(
                len(ys) != len(v_texts) for ys in v_labels.values()
            ):
                raise ValueError(
                    "valid: a label list (None for unlabelled) per head "
                    f"({', '.join(self.head_names)}), one entry per validation text"
                )
        seed_everything(ccfg.train.seed)
        info = distributed.init_from_env(ccfg.device)
        device = pick_device(distributed.device_for(info, ccfg.device))
        lm = load_lm(self.language_model)
        self.vocab, self.tokenizer_config, self.spm_model = lm.vocab, lm.tokenizer, lm.spm_model
        self._tokenizer = None
        self.history, self.thresholds = [], {n: None for n in self.head_names}
        texts = list(texts)
        positions = list(range(1, len(texts) + 1))  # row numbers, for errors
        if valid is None and ccfg.valid_frac > 0:
            order = np.random.default_rng(ccfg.train.seed).permutation(len(texts))
            n_valid = max(1, round(ccfg.valid_frac * len(texts)))
            va, tr = np.sort(order[:n_valid]), np.sort(order[n_valid:])
            valid = ([texts[i] for i in va], {n: [ys[i] for i in va] for n, ys in labels.items()})
            texts = [texts[i] for i in tr]
            positions = [int(i) + 1 for i in tr]
            labels = {n: [ys[i] for i in tr] for n, ys in labels.items()}
            for n in self.head_names:  # a small head may land on one side only
                n_train = sum(y is not None for y in labels[n])
                n_valid = sum(y is not None for y in valid[1][n])
                if not n_train or not n_valid:
                    log.warning(
                        "head %s: %d training and %d validation documents after the split",
                        n,
                        n_train,
                        n_valid,
                    )
        specs = {h.name: h for h in cfg.heads}
        every = {n: [*labels[n], *(valid[1][n] if valid else [])] for n in self.head_names}
        self.labels = {n: self._label_space(specs[n], every[n]) for n in self.head_names}
        self.heads = {n: self._make_head(specs[n], self.labels[n]) for n in self.head_names}

        enc_cfg = lm.model.config.replace(drop_mult=ccfg.drop_mult, **CLASSIFIER_DROPOUTS)
        shapes = tuple(
            HeadShape(
                n,
                len(self.labels[n]),
                node_parents(self.labels[n])
                if specs[n].kind == "hierarchical" and specs[n].hierarchy.head == "graph"
                else (),
            )
            for n in self.head_names
        )
        model_cfg = MultiHeadConfig(
            heads=shapes,
            head_hidden=ccfg.head_hidden,
            bptt=ccfg.bptt,
            max_len=ccfg.max_len,
            encoder=enc_cfg,
        )
        model = MultiHeadModel(model_cfg)
        load_encoder(model, lm.model)
        self.model = model.to(device)

        docs = self.numericalize(texts)
        targets = {n: self._targets(n, labels[n], device, positions) for n in self.head_names}
        losses: dict[str, nn.Module] = {}
        for n, head in self.heads.items():
            y = targets[n].numpy_values[targets[n].numpy_mask]
            head.fit_priors(y)
            losses[n] = head.loss(y).to(device)
        pad = model_cfg.encoder.pad_id
        batches = []
        for k, n in enumerate(self.head_names):  # each task: its labelled documents
            rows = np.flatnonzero(targets[n].numpy_mask)
            batches.append(
                ClassificationBatches(
                    [docs[i] for i in rows],
                    rows.astype(np.int64),  # the documents' positions, to look targets up
                    ccfg.bs,
                    train=True,
                    seed=ccfg.train.seed + k,
                    pad_id=pad,
                    device=device,
                )
            )
        valid_docs = self.numericalize(list(valid[0])) if valid and len(valid[0]) else []
        valid_t = (
            {n: self._targets(n, valid[1][n], device) for n in self.head_names}
            if valid_docs and valid is not None
            else {}
        )
        valid_b = (
            ClassificationBatches(
                valid_docs, None, ccfg.bs * 2, train=False, pad_id=pad, device=device
            )
            if valid_docs
            else None
        )
        weights = {h.name: h.weight for h in cfg.heads}
        select = {h.name: h.select_weight for h in cfg.heads}

        def evaluate() -> dict[str, float]:
            if valid_b is None:
                return {}
            probs = self._scores(valid_b, raw=False)
            out: dict[str, float] = {}
            total, wsum = 0.0, 0.0
            for n, head in self.heads.items():
                m = valid_t[n].numpy_mask
                if not m.any():
                    continue
                scores = head.score(valid_t[n].numpy_values[m], probs[n][m])
                out.update({f"{n}/{k}": v for k, v in scores.items()})
                total += select[n] * scores[head.select_key]
                wsum += select[n]
            out["valid_score"] = total / wsum if wsum else 0.0
            return out

        task = MultiTaskTask(model, batches, targets, losses, weights, cfg, evaluate)
        score_of = (lambda row: (row["valid_score"],)) if valid_b is not None else None
        train_in_stages(task, model, ccfg, log_dir, self.history, score_of, "valid_score")
        if valid_b is not None:
            distributed.broadcast_buffers(model)
            probs = self._scores(valid_b, raw=False)
            for n, head in self.heads.items():
                m = valid_t[n].numpy_mask
                if head.tuned and m.any():
                    y = valid_t[n].numpy_values[m]
                    self.thresholds[n], _ = M.tune_thresholds(y, probs[n][m], ccfg.min_positives)
        return self

    # -- inference ---------------------------------------------------------------------
    @torch.inference_mode()
    def _scores(self, batches: ClassificationBatches, raw: bool) -> dict[str, np.ndarray]:
        """Every head's ``(N, C)`` probabilities (``raw``: logits) from one encoder pass."""
        model = self.model
        assert model is not None
        was_training = model.training
        model.eval()
        n = len(batches.docs)
        out = {h.name: np.zeros((n, h.n_outputs), dtype=np.float32) for h in model.config.heads}
        for b in batches.batches(0):
            window, lengths = encode_windows(model, b.x, b.lengths)  # type: ignore[arg-type]
            logits = model.score(masked_concat_pool(window, lengths))
            for name, z in logits.items():
                z = z.float()
                out[name][b.index] = (z if raw else self.heads[name].probs(z)).cpu().numpy()
        model.train(was_training)
        for name, v in out.items():
            check_finite(v, f"{name} {'logits' if raw else 'outputs'}")
        return out

    def _batches(self, texts: Sequence[str], bs: int | None) -> ClassificationBatches:
        assert self.model is not None
        pad = self.model.config.encoder.pad_id
        return ClassificationBatches(
            self.numericalize(texts),
            None,
            bs or self.config.classifier.bs * 2,
            train=False,
            pad_id=pad,
            device=self.device,
        )

    def predict_proba(self, texts: Sequence[str], bs: int | None = None) -> dict[str, np.ndarray]:
        """Each head's ``(N, C)`` outputs (columns: ``labels[name].classes``), one pass."""
        self._check_fitted()
        if not texts:
            return {n: np.zeros((0, len(self.labels[n])), dtype=np.float32) for n in self.labels}
        return self._scores(self._batches(texts, bs), raw=False)

    def predict_logits(self, texts: Sequence[str], bs: int | None = None) -> dict[str, np.ndarray]:
        """Each head's ``(N, C)`` raw scores, one encoder pass."""
        self._check_fitted()
        if not texts:
            return {n: np.zeros((0, len(self.labels[n])), dtype=np.float32) for n in self.labels}
        return self._scores(self._batches(texts, bs), raw=True)

    def predict(self, texts: Sequence[str], bs: int | None = None) -> dict[str, list[Any]]:
        """Each head's decisions (labels, label lists, paths or values)."""
        probs = self.predict_proba(texts, bs)
        return self.decide(probs)

    def decide(self, probs: Mapping[str, np.ndarray]) -> dict[str, list[Any]]:
        return {n: self.heads[n].decide(p, self.thresholds.get(n)) for n, p in probs.items()}

    @torch.inference_mode()
    def embed(self, texts: Sequence[str], bs: int | None = None) -> np.ndarray:
        """Pooled document vectors ``[last, max, mean]`` ``(N, 3E)`` from the encoder."""
        self._check_fitted()
        assert self.model is not None
        model = self.model.eval()
        out = np.zeros((len(texts), 3 * model.config.encoder.emb_size), dtype=np.float32)
        if texts:
            for b in self._batches(texts, bs).batches(0):
                window, lengths = encode_windows(model, b.x, b.lengths)  # type: ignore[arg-type]
                out[b.index] = masked_concat_pool(window, lengths).float().cpu().numpy()
        return out

    def evaluate(
        self,
        texts: Sequence[str],
        labels: Mapping[str, Sequence[Any]],
        source: str = "",
        lines: Sequence[int] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Each head's metrics on the texts it has labels for (None: not labelled).
        ``source`` and ``lines`` (each text's line there) name a bad label's place; the
        labels are checked before the model runs."""
        targets = {}
        for n, ys in labels.items():
            if n not in self.heads:
                raise ValueError(f"no head {n!r} (heads: {', '.join(self.heads)})")
            rows = [i for i, y in enumerate(ys) if y is not None]
            where = [lines[i] if lines is not None else i + 1 for i in rows]
            if rows:
                y = self.labels[n].encode([ys[i] for i in rows], rows=where, source=source)
                targets[n] = (rows, y)
        probs = self.predict_proba(texts)
        out = {}
        for n, (rows, y) in targets.items():
            t = self.thresholds.get(n)
            out[n] = self.heads[n].metrics(y, probs[n][rows], t if self.heads[n].tuned else None)
        return out

    def _check_fitted(self) -> None:
        if self.model is None or not self.heads:
            raise RuntimeError("this MultiTaskClassifier is not fitted: call fit() or load()")

    # -- persistence -------------------------------------------------------------------
    def save(self, out_dir: str | Path) -> Path:
        """Config, weights (the encoder once, every head by name), vocabulary, labels."""
        self._check_fitted()
        if not distributed.current().is_main:
            return Path(out_dir)
        model, vocab, tok_cfg = self.model, self.vocab, self.tokenizer_config
        assert model is not None and vocab is not None and tok_cfg is not None

        def fill(tmp: Path) -> None:
            digests = write_model_files(tmp, model, vocab, tok_cfg, self.spm_model)
            t = self.thresholds
            heads = [
                {
                    "name": n,
                    "labels": self.labels[n].to_dict(),
                    "thresholds": None if t.get(n) is None else [float(x) for x in t[n]],  # type: ignore[union-attr]
                    "state": self.heads[n].state(),
                }
                for n in self.head_names
            ]
            from ulmfit.config import to_dict

            body = {
                "model": model.config.to_dict(),
                "tokenizer": tok_cfg.to_dict(),
                "heads": heads,
                "multitask_config": to_dict(self.config),
                "history": self.history,
                "language_model": str(self.language_model) if self.language_model else None,
                CHECKSUM_FIELD: digests,
            }
            write_config(tmp / "config.json", MULTITASK_KIND, body)

        return write_dir_atomically(Path(out_dir), fill)

    @classmethod
    def load(cls, model_dir: str | Path, device: str = "auto") -> MultiTaskClassifier:
        from ulmfit.config import from_dict

        model_dir = Path(model_dir)
        config = read_config(model_dir, MULTITASK_KIND)
        try:
            model_cfg = MultiHeadConfig.from_dict(config["model"])
            tok_cfg = TokenizerConfig.from_dict(config["tokenizer"])
            mt_cfg = from_dict(MultiTaskConfig, config["multitask_config"], "multitask_config")
            heads = {h["name"]: h for h in config["heads"]}
            labels = {n: _labels_from_dict(h["labels"]) for n, h in heads.items()}
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(
                f"{model_dir / 'config.json'}: bad multi-task config ({e})"
            ) from e
        for shape in model_cfg.heads:
            if shape.name not in labels or len(labels[shape.name]) != shape.n_outputs:
                raise CheckpointError(
                    f"{model_dir / 'config.json'}: head {shape.name!r} has no labels or a "
                    "number of them that its weights do not have"
                )
        vocab = Vocab.load(model_dir / VOCAB_FILE)
        model = MultiHeadModel(model_cfg)
        load_weights(model_dir / WEIGHTS_FILE, model, config.get(CHECKSUM_FIELD))
        mt_cfg = dataclasses.replace(mt_cfg, classifier=mt_cfg.classifier.replace(device=device))
        clf = cls(None, mt_cfg)
        clf.model = model.to(pick_device(device)).eval()
        clf.vocab, clf.tokenizer_config, clf.labels = vocab, tok_cfg, labels
        spm = tokenizer_path(model_dir, tok_cfg.kind)
        clf.spm_model = spm if spm is not None and spm.exists() else None
        specs = {h.name: h for h in mt_cfg.heads}
        clf.heads = {n: clf._make_head(specs[n], labels[n]) for n in clf.head_names}
        for n, h in heads.items():
            clf.heads[n].load_state(h.get("state") or {})
            t = h.get("thresholds")
            clf.thresholds[n] = None if t is None else np.asarray(t, dtype=np.float64)
        clf.history = config.get("history", [])
        return clf


def is_multitask_dir(path: str | Path) -> bool:
    """Whether ``path`` holds a model written by :meth:`MultiTaskClassifier.save`."""
    import json

    try:
        with open(Path(path) / "config.json", encoding="utf-8") as f:
            return bool(json.load(f).get("kind") == MULTITASK_KIND)
    except (OSError, ValueError, AttributeError):
        return False  # not one: the single-head loader says what is wrong


def _labels_from_dict(d: dict[str, Any]) -> Any:
    if d.get("task") == "regression":
        return RegressionLabels.from_dict(d)
    return labels_from_dict(d)


__all__ = [
    "HeadSpec",
    "MultiTaskClassifier",
    "MultiTaskConfig",
    "is_multitask_dir",
    "masked_loss",
    "mixed_draw",
    "task_order",
    "task_weights",
]
