"""Save and load language-model directories (config + weights + vocab, never pickle)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ulmfit.checkpoint import (
    SPM_FILE,
    VOCAB_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    load_weights,
    read_config,
    save_weights,
    write_config,
)
from ulmfit.models.awd_lstm import AWDLSTMConfig, AWDLSTMLanguageModel
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
) -> None:
    """Write an LM's files into ``model_dir`` (use inside ``write_dir_atomically``)."""
    if len(vocab) != model.config.vocab_size:
        raise CheckpointError(
            f"{model_dir}: vocab has {len(vocab)} tokens but the model {model.config.vocab_size}"
        )
    save_weights(model_dir / WEIGHTS_FILE, model, dtype)
    vocab.save(model_dir / VOCAB_FILE)
    if spm_model is not None and Path(spm_model).resolve() != (model_dir / SPM_FILE).resolve():
        shutil.copyfile(spm_model, model_dir / SPM_FILE)
    body = {
        "model": model.config.to_dict(),
        "tokenizer": tokenizer.to_dict(),
        **(extra or {}),
    }
    write_config(model_dir / "config.json", LM_KIND, body)


def load_lm(model_dir: Path | str, device: torch.device | str = "cpu") -> LoadedLM:
    """Load a language-model directory, checking format, vocabulary and shapes."""
    model_dir = Path(model_dir)
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
    load_weights(model_dir / WEIGHTS_FILE, model)
    spm = model_dir / SPM_FILE
    if tok_cfg.kind == "spm" and not spm.exists():
        raise CheckpointError(f"{spm}: missing SentencePiece model (tokenizer kind is 'spm')")
    return LoadedLM(model.to(device), vocab, tok_cfg, spm if spm.exists() else None, config)
