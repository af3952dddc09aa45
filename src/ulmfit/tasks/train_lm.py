"""Stages 1 and 2: pretrain a language model, or fine-tune a pretrained one on target text.

Read top to bottom: tokenise the corpus (cached), build the vocabulary, build or
transfer the model, hand an :class:`LMTask` to the shared training loop.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ulmfit.checkpoint import (
    CONFIG_FILE,
    VOCAB_FILE,
    CheckpointError,
    OutputExistsError,
    load_training_state,
    read_config,
)
from ulmfit.config import to_dict
from ulmfit.data.lm import LMDataConfig, LMStream
from ulmfit.data.prepare import CorpusConfig, iter_texts, split_docs, tokenize_files
from ulmfit.models.awd_lstm import AWDLSTMConfig, AWDLSTMLanguageModel
from ulmfit.models.io import check_direction, load_lm, write_lm_files
from ulmfit.models.transfer import transfer_lm_state
from ulmfit.tasks.lm import LMTask
from ulmfit.text.corpus import corpus_cache_key, default_cache_dir
from ulmfit.text.subword import train_sentencepiece
from ulmfit.text.tokenize import TokenizerConfig, get_tokenizer
from ulmfit.text.vocab import Vocab
from ulmfit.training import distributed
from ulmfit.training.config import TrainConfig
from ulmfit.training.device import pick_device, seed_everything
from ulmfit.training.loop import LoopState, fit
from ulmfit.training.lr_finder import LRFinderResult, lr_find

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VocabConfig:
    max_size: int = 60000  # most frequent tokens kept (special tokens included)
    min_freq: int = 2  # tokens seen fewer times map to xxunk


@dataclass(frozen=True)
class LMStageConfig:
    """Everything a language-model stage needs; saved into the model directory."""

    out_dir: str = "runs/lm"  # model directory written (and resumed from)
    pretrained: str | None = None  # stage 2: the pretrained LM to fine-tune (directory or name)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    vocab: VocabConfig = field(default_factory=VocabConfig)
    model: AWDLSTMConfig = field(default_factory=AWDLSTMConfig)
    data: LMDataConfig = field(default_factory=LMDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    resume: bool = False  # continue from the training state in out_dir, if any
    overwrite: bool = False  # replace a model already in out_dir (default: refuse it)

    def reading(self, backwards: bool) -> LMStageConfig:
        """This stage reading text backwards (the ensemble's backward LM) or forwards."""
        return replace(self, data=replace(self.data, backwards=backwards))


def _valid_stream(
    valid: tuple[np.ndarray, np.ndarray],
    data: LMDataConfig,
    info: distributed.DistInfo,
    device: torch.device,
) -> LMStream:
    """The validation stream: as many rows as one training batch of all ranks together.

    A small validation set still needs two columns per row: shrink the rows, not the
    data. Under torchrun each rank reads its share of the rows and evaluate_lm sums
    over ranks, so the figure is the one a single process of the global batch gets.
    """
    world = info.world_size
    rows = min(data.bs * world, max(1, len(valid[0]) // (2 * data.bptt)))
    if world > 1 and rows < world:  # too few rows to share: every rank reads them all
        world = 1
    cfg = LMDataConfig(bs=rows // world, bptt=data.bptt, backwards=data.backwards)
    rank = info.rank if world > 1 else 0
    return LMStream(*valid, cfg, train=False, device=device, rank=rank, world_size=world)


#: The model settings stage 2 takes from its own config; the rest is the pretrained model's.
DROPOUT_FIELDS = ("input_p", "embed_p", "weight_p", "hidden_p", "output_p", "attn_p", "drop_mult")

#: Settings a resumed LM run must keep: they fix the model, the vocabulary or the token
#: stream (and so the schedule's steps); ``[train]``'s are checked by the loop.
RESUME_FIXED = {
    "pretrained": None,
    "model": None,
    "tokenizer": None,
    "vocab": None,
    "data": None,
    "corpus": ("train", "valid", "fmt", "text_column", "one_doc_per", "valid_frac", "max_docs"),
}


def check_out_dir(out_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to train into a directory that holds a model, unless resuming or replacing it."""
    if (Path(out_dir) / CONFIG_FILE).exists() and not (resume or overwrite):
        raise OutputExistsError(
            f"{out_dir}: already holds a model; refusing to replace it. Pass --resume to "
            "continue its training, --overwrite to replace it, or choose another out_dir"
        )


def resume_changes(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``section.field: old -> new`` for each :data:`RESUME_FIXED` setting that differs."""
    changes = []
    for section, fields in RESUME_FIXED.items():
        old, new = saved.get(section), now.get(section)
        if isinstance(new, dict) and isinstance(old, dict):
            for k in fields or sorted(set(old) | set(new)):
                if old.get(k) != new.get(k):
                    changes.append(f"{section}.{k}: {old.get(k)!r} -> {new.get(k)!r}")
        elif section in saved and old != new:
            changes.append(f"{section}: {old!r} -> {new!r}")
    return changes


def _check_resume_settings(out_dir: Path, cfg: LMStageConfig) -> None:
    saved = read_config(out_dir).get("stage_config")
    if not isinstance(saved, dict):
        return  # written before stage configs were saved: nothing to compare
    # Through JSON, so that tuples and lists compare equal.
    changes = resume_changes(saved, json.loads(json.dumps(to_dict(cfg))))
    if changes:
        raise ValueError(
            f"{out_dir}: cannot resume with changed settings ({'; '.join(changes)}); "
            "use the saved settings, or --overwrite / a new out_dir to start again"
        )


def train_language_model(cfg: LMStageConfig) -> Path:
    """Run stage 1 (``pretrained`` unset) or stage 2; returns the model directory.

    An ``out_dir`` that already holds a model is refused unless ``resume`` (continue its
    training, with the same settings) or ``overwrite`` (replace it).
    """
    check_out_dir(Path(cfg.out_dir), cfg.resume, cfg.overwrite)
    task = build_lm_task(cfg)
    state: LoopState = fit(task, cfg.train, Path(cfg.out_dir), resume=cfg.resume)
    final = [r for r in state.history if r.get("epoch_end")]
    if final:
        log.info("final: %s", {k: v for k, v in final[-1].items() if k.startswith("valid")})
    return Path(cfg.out_dir)


def find_lm_lr(
    cfg: LMStageConfig, num_steps: int = 100, plot: Path | None = None
) -> LRFinderResult:
    """The LR range test for this stage's model and data; writes a PNG if ``plot``."""
    result = lr_find(build_lm_task(cfg), cfg.train, num_steps=num_steps)
    if plot is not None:
        result.plot(plot)
    return result


def build_lm_task(cfg: LMStageConfig) -> LMTask:
    """Tokenise, build the vocabulary and the (transferred) model: everything but training."""
    out_dir = Path(cfg.out_dir)
    info = distributed.init_from_env(cfg.device)
    device = pick_device(distributed.device_for(info, cfg.device))
    seed_everything(cfg.train.seed)
    resuming = cfg.resume and load_training_state(out_dir) is not None
    if resuming:
        _check_resume_settings(out_dir, cfg)

    # Tokeniser: the pretrained model's for stage 2 (its vocabulary lives in that space).
    pre = None
    if cfg.pretrained:
        pre = load_lm(cfg.pretrained)
        check_direction(pre, cfg.pretrained, cfg.data.backwards, "LM fine-tuning")
    tok_cfg = pre.tokenizer if pre else cfg.tokenizer
    spm_model = pre.spm_model if pre else None
    if tok_cfg.kind == "bytebpe" and spm_model is None:
        raise ValueError(
            "tokenizer kind 'bytebpe' comes with a pretrained model: start from one "
            "(ulmfit import-gpt2) with --pretrained"
        )
    if tok_cfg.kind == "spm" and spm_model is None:
        with distributed.main_first():
            spm_model = _train_spm(cfg, tok_cfg)
    tokenizer = get_tokenizer(tok_cfg, spm_model)
    spm_key = _file_digest(spm_model) if spm_model else ""

    with distributed.main_first():  # rank 0 fills the cache, the others read it
        corpus = tokenize_files(cfg.corpus.train, cfg.corpus, tokenizer, key_extra=spm_key)
    log.info("train corpus: %d documents, %d tokens", corpus.n_docs, corpus.n_tokens)

    if resuming:
        vocab = Vocab.load(out_dir / VOCAB_FILE)
    elif tok_cfg.kind in ("spm", "bytebpe"):  # a fixed vocabulary: the tokenizer's own
        vocab = Vocab(tokenizer.itos())  # type: ignore[attr-defined]
    else:
        vocab = corpus.to_vocab(cfg.vocab.max_size, cfg.vocab.min_freq)
    ids, offsets = corpus.numericalize(vocab)

    if cfg.corpus.valid:
        with distributed.main_first():
            valid_corpus = tokenize_files(
                cfg.corpus.valid, cfg.corpus, tokenizer, limit=False, key_extra=spm_key
            )
        valid = valid_corpus.numericalize(vocab)
        train = (ids, offsets)
    elif cfg.corpus.valid_frac > 0:
        train, valid = split_docs(ids, offsets, cfg.corpus.valid_frac, cfg.train.seed)
    else:
        train, valid = (ids, offsets), None

    model = _build_model(cfg, vocab, pre, out_dir if resuming else None).to(device)
    log.info(
        "model: %s parameters, vocab %d",
        f"{sum(p.numel() for p in model.parameters()):,}",
        len(vocab),
    )
    train_stream = LMStream(
        *train,
        cfg.data,
        train=True,
        seed=cfg.train.seed,
        device=device,
        rank=info.rank,
        world_size=info.world_size,
    )
    valid_stream = None
    if valid is not None:
        valid_stream = _valid_stream(valid, cfg.data, info, device)
    extra = {
        "stage": "finetune-lm" if pre else "pretrain",
        "direction": "backward" if cfg.data.backwards else "forward",
        "stage_config": to_dict(cfg),
        "corpus_stats": {"train_tokens": len(train[0]), "train_docs": int(len(train[1]) - 1)},
    }

    def save_files(model_dir: Path) -> None:
        write_lm_files(model_dir, model, vocab, tok_cfg, spm_model, extra)

    return LMTask(
        model,
        train_stream,
        valid_stream,
        alpha=cfg.train.alpha,
        beta=cfg.train.beta,
        save_files=save_files,
    )


def _build_model(
    cfg: LMStageConfig, vocab: Vocab, pre: Any, resume_dir: Path | None
) -> AWDLSTMLanguageModel:
    if resume_dir is not None:
        loaded = load_lm(resume_dir)
        return loaded.model
    if pre is None:
        return AWDLSTMLanguageModel(cfg.model.replace(vocab_size=len(vocab), pad_id=vocab.pad_id))
    # Stage 2: the pretrained architecture, this stage's dropouts, the target vocabulary.
    sizes = pre.model.config
    if cfg.model.kind not in (sizes.kind, AWDLSTMConfig().kind):
        raise CheckpointError(
            f"{Path(str(cfg.pretrained)) / CONFIG_FILE}: holds a {sizes.kind!r} language model, "
            f"but [model] kind is {cfg.model.kind!r}; stage 2 fine-tunes the pretrained kind"
        )
    # Everything but the dropouts is the pretrained architecture's.
    model_cfg = sizes.replace(
        vocab_size=len(vocab),
        pad_id=vocab.pad_id,
        **{k: getattr(cfg.model, k) for k in DROPOUT_FIELDS},
    )
    model = AWDLSTMLanguageModel(model_cfg)
    state = {k: v for k, v in pre.model.state_dict().items()}
    state = transfer_lm_state(state, pre.vocab.itos, vocab.itos)
    if model_cfg.tie_weights:
        state.pop("decoder.weight", None)
    missing, unexpected = model.load_state_dict(state, strict=False)
    bad = [k for k in missing if not (model_cfg.tie_weights and k == "decoder.weight")]
    if bad or unexpected:
        raise ValueError(f"pretrained weights do not fit: missing {bad}, unexpected {unexpected}")
    return model


def _train_spm(cfg: LMStageConfig, tok_cfg: TokenizerConfig) -> Path:
    """Train (or reuse from the cache) a SentencePiece model on the training corpus."""
    key = corpus_cache_key(
        [Path(p) for p in cfg.corpus.train], cfg.corpus.reader_options(), tok_cfg, "spm"
    )
    cache = Path(cfg.corpus.cache_dir) if cfg.corpus.cache_dir else default_cache_dir()
    prefix = cache / f"spm-{key}"
    model_path = prefix.with_suffix(".model")
    if model_path.exists():
        return model_path
    return train_sentencepiece(iter_texts(cfg.corpus.train, cfg.corpus, True), prefix, tok_cfg)


def _file_digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def evaluate_language_model(
    model_dir: Path | str,
    paths: list[str],
    corpus: CorpusConfig | None = None,
    bs: int = 16,
    bptt: int = 70,
    device: str = "auto",
) -> dict[str, float]:
    """Perplexity of a saved LM on text files (e.g. WikiText-103 valid/test)."""
    from ulmfit.tasks.lm import evaluate_lm

    dev = pick_device(device)
    loaded = load_lm(model_dir, dev)
    corpus = corpus or CorpusConfig()
    tokenizer = get_tokenizer(loaded.tokenizer, loaded.spm_model)
    tc = tokenize_files(paths, corpus, tokenizer, limit=False)
    ids, offsets = tc.numericalize(loaded.vocab)
    stream = LMStream(ids, offsets, LMDataConfig(bs=bs, bptt=bptt), train=False, device=dev)
    out = evaluate_lm(loaded.model, stream)
    out["tokens"] = float(len(ids))
    out["oov_rate"] = float(np.mean(ids == 0))
    return out
