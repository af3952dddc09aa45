"""Save and load language-model directories (config + weights + vocab, never pickle)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ulmfit.checkpoint import (
    CHECKSUM_FIELD,
    VOCAB_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    load_weights,
    read_config,
    refuse_existing,
    save_weights,
    tokenizer_path,
    write_config,
    write_dir_atomically,
)
from ulmfit.models.awd_lstm import AWDLSTMConfig, AWDLSTMLanguageModel
from ulmfit.models.pretrained import resolve
from ulmfit.text.tokenize import TokenizerConfig
from ulmfit.text.vocab import Vocab

LM_KIND = "language_model"


@dataclass
class LoadedLM:
    model: AWDLSTMLanguageModel
    vocab: Vocab
    tokenizer: TokenizerConfig
    spm_model: Path | None
    config: dict[str, Any]  # the whole config.json


def write_lm_files(
    model_dir: Path,
    model: AWDLSTMLanguageModel,
    vocab: Vocab,
    tokenizer: TokenizerConfig,
    spm_model: Path | None = None,
    extra: dict[str, Any] | None = None,
    dtype: torch.dtype | None = None,
    max_shard_bytes: int = 0,
) -> None:
    """Write an LM's files into ``model_dir`` (use inside ``write_dir_atomically``)."""
    if len(vocab) != model.config.vocab_size:
        raise CheckpointError(
            f"{model_dir}: vocab has {len(vocab)} tokens but the model {model.config.vocab_size}"
        )
    digests = save_weights(model_dir / WEIGHTS_FILE, model, dtype, max_shard_bytes)
    vocab.save(model_dir / VOCAB_FILE)
    target = tokenizer_path(model_dir, tokenizer.kind)
    if (
        spm_model is not None
        and target is not None
        and Path(spm_model).resolve() != target.resolve()
    ):
        shutil.copyfile(spm_model, target)
    body = {
        "model": model.config.to_dict(),
        "tokenizer": tokenizer.to_dict(),
        **(extra or {}),
        CHECKSUM_FIELD: digests,
    }
    write_config(model_dir / "config.json", LM_KIND, body)


def load_lm(model_dir: Path | str, device: torch.device | str = "cpu") -> LoadedLM:
    """Load a language-model directory, checking format, vocabulary and shapes.

    ``model_dir`` may also be the name of a pretrained model (``wt103-fwd``): it is
    fetched and converted once (:mod:`ulmfit.models.pretrained`).
    """
    model_dir = resolve(model_dir)
    config = read_config(model_dir, LM_KIND)
    try:
        model_cfg = AWDLSTMConfig.from_dict(config["model"])
        tok_cfg = TokenizerConfig.from_dict(config["tokenizer"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(
            f"{model_dir / 'config.json'}: bad model/tokenizer section ({e})"
        ) from e
    vocab_path = model_dir / VOCAB_FILE
    if not vocab_path.exists():
        raise CheckpointError(f"{vocab_path}: missing vocabulary file")
    vocab = Vocab.load(vocab_path)
    if len(vocab) != model_cfg.vocab_size:
        raise CheckpointError(
            f"{vocab_path}: vocabulary has {len(vocab)} tokens but config.json says "
            f"vocab_size={model_cfg.vocab_size}: the vocabulary does not belong to these weights"
        )
    model = AWDLSTMLanguageModel(model_cfg)
    load_weights(model_dir / WEIGHTS_FILE, model, config.get(CHECKSUM_FIELD))
    spm = tokenizer_path(model_dir, tok_cfg.kind)
    if spm is not None and not spm.exists():
        raise CheckpointError(
            f"{spm}: missing tokenizer model (tokenizer kind is {tok_cfg.kind!r})"
        )
    return LoadedLM(model.to(device), vocab, tok_cfg, spm, config)


def check_direction(lm: LoadedLM, model_dir: Path | str, backwards: bool, user: str) -> None:
    """Refuse to start ``user`` (a stage reading text ``backwards`` or not) from an LM
    trained in the other direction: it would train on, silently and badly, reversed text.

    LMs without a recorded direction (imported fastai weights) are not checked.
    """
    recorded = lm.config.get("direction")
    wanted = "backward" if backwards else "forward"
    if recorded in ("forward", "backward") and recorded != wanted:
        raise CheckpointError(
            f"{Path(model_dir) / 'config.json'}: direction is {recorded!r}, but {user} reads "
            f"text {wanted} ({'backwards = true' if backwards else 'backwards = false'}); "
            f"start it from a {wanted} language model"
        )


def export_lm(
    src: Path | str,
    dst: Path | str,
    dtype: str = "bf16",
    max_shard_mib: int = 16,
    overwrite: bool = False,
) -> Path:
    """Copy an LM directory for distribution: weights cast (bf16 halves them) and sharded.

    The training state is left behind: an exported model is for fine-tuning, not resuming.
    An existing ``dst`` is refused unless ``overwrite``.
    """
    refuse_existing(Path(dst), overwrite, "model directory")
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if dtype not in dtypes:
        raise ValueError(f"export dtype must be one of {sorted(dtypes)}, got {dtype!r}")
    lm = load_lm(src)
    extra = {
        k: v
        for k, v in lm.config.items()
        if k not in ("format", "format_version", "kind", "model", "tokenizer", CHECKSUM_FIELD)
    }
    extra["exported"] = {"from": str(src), "dtype": dtype, "max_shard_mib": max_shard_mib}
    return write_dir_atomically(
        Path(dst),
        lambda tmp: write_lm_files(
            tmp,
            lm.model,
            lm.vocab,
            lm.tokenizer,
            lm.spm_model,
            extra,
            dtypes[dtype],
            max_shard_mib * 2**20,
        ),
    )
