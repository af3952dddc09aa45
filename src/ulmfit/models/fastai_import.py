"""Import fastai's published AWD-LSTM weights (e.g. WT103 ``lstm_wt103.pth`` + ``itos_wt103.pkl``).

Nothing in the input files is executed: the weights are read with
``torch.load(weights_only=True)`` and the vocabulary (a pickled list of strings) with an
unpickler that refuses every global, so a file that tries to build any object other than
lists, strings and numbers fails with a clear error instead of running code.
"""

from __future__ import annotations

import io
import logging
import pickle
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ulmfit.checkpoint import CheckpointError, refuse_existing, write_dir_atomically
from ulmfit.models.awd_lstm import AWDLSTMConfig, AWDLSTMLanguageModel
from ulmfit.models.io import write_lm_files
from ulmfit.models.transfer import transfer_rows
from ulmfit.text.tokenize import SPECIAL_TOKENS, TokenizerConfig
from ulmfit.text.vocab import Vocab

log = logging.getLogger(__name__)

_LAYER_KEY = re.compile(r"^0\.rnns\.(\d+)\.")


class _NoGlobalsUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: a vocabulary file may hold only a list of strings"
        )


def load_fastai_vocab(path: Path | str) -> list[str]:
    """The ``itos`` list of a fastai vocabulary pickle, read without executing anything."""
    path = Path(path)
    try:
        obj = _NoGlobalsUnpickler(io.BytesIO(path.read_bytes())).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: not a fastai vocabulary pickle ({e})") from e
    if isinstance(obj, dict) and "itos" in obj:  # some exports wrap the list
        obj = obj["itos"]
    if not isinstance(obj, list) or not all(isinstance(t, str) for t in obj):
        raise CheckpointError(
            f"{path}: expected a pickled list of strings, got {type(obj).__name__}"
        )
    return obj


def load_fastai_weights(path: Path | str) -> dict[str, Tensor]:
    """A fastai LM state dict (plain, or under ``'model'`` as ``Learner.save`` writes it)."""
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, zip errors, refused globals
        raise CheckpointError(f"{path}: cannot read as a weights-only torch file ({e})") from e
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or "0.encoder.weight" not in obj:
        raise CheckpointError(f"{path}: no '0.encoder.weight': not a fastai AWD-LSTM LM state dict")
    return obj


def fastai_to_ulmfit(sd: dict[str, Tensor]) -> tuple[AWDLSTMConfig, dict[str, Tensor]]:
    """Our config and state dict (in fastai's vocabulary order) from a fastai state dict."""
    emb = sd["0.encoder.weight"]
    n_layers = 1 + max(int(m.group(1)) for k in sd if (m := _LAYER_KEY.match(k)))
    hidden = sd["0.rnns.0.weight_hh_l0_raw"].shape[1] if n_layers > 1 else emb.shape[1]
    dec_w = sd.get("1.decoder.weight")
    tied = dec_w is None or torch.equal(dec_w, emb)
    config = AWDLSTMConfig(
        vocab_size=emb.shape[0],
        emb_size=emb.shape[1],
        hidden_size=hidden,
        n_layers=n_layers,
        tie_weights=tied,
    )
    out = {"encoder.embedding.weight": emb}
    for i in range(n_layers):
        src = f"0.rnns.{i}."
        out[f"encoder.rnns.{i}.lstm.weight_hh_l0"] = sd[src + "weight_hh_l0_raw"]
        for name in ("weight_ih_l0", "bias_ih_l0", "bias_hh_l0"):
            out[f"encoder.rnns.{i}.lstm.{name}"] = sd[src + "module." + name]
    out["decoder.bias"] = sd["1.decoder.bias"]
    if not tied and dec_w is not None:
        out["decoder.weight"] = dec_w
    return config, out


def ulmfit_to_fastai(model: AWDLSTMLanguageModel) -> dict[str, Tensor]:
    """fastai's key layout for our LM (for export, and to test the import both ways)."""
    if model.config.kind != "awd_lstm":
        raise ValueError(
            f"fastai's layout holds an AWD-LSTM; this model's backbone is {model.config.kind!r}"
        )
    sd = model.state_dict()
    out = {"0.encoder.weight": sd["encoder.embedding.weight"]}
    out["0.encoder_dp.emb.weight"] = sd["encoder.embedding.weight"]
    for i in range(model.config.n_layers):
        src = f"encoder.rnns.{i}.lstm."
        out[f"0.rnns.{i}.weight_hh_l0_raw"] = sd[src + "weight_hh_l0"]
        out[f"0.rnns.{i}.module.weight_hh_l0"] = sd[src + "weight_hh_l0"]  # fastai v1 keeps both
        for name in ("weight_ih_l0", "bias_ih_l0", "bias_hh_l0"):
            out[f"0.rnns.{i}.module.{name}"] = sd[src + name]
    out["1.decoder.weight"] = sd["decoder.weight"]
    out["1.decoder.bias"] = sd["decoder.bias"]
    return {k: v.clone() for k, v in out.items()}


def our_itos(fastai_itos: Sequence[str]) -> list[str]:
    """Our special tokens first (our order), then fastai's tokens in their order."""
    special = set(SPECIAL_TOKENS)
    seen: set[str] = set()
    rest = []
    for tok in fastai_itos:
        if tok not in special and tok not in seen:
            seen.add(tok)
            rest.append(tok)
    return list(SPECIAL_TOKENS) + rest


def import_fastai(
    weights_path: Path | str,
    vocab_path: Path | str,
    out_dir: Path | str,
    tokenizer: TokenizerConfig | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert fastai files into a ulmfit language-model directory at ``out_dir``
    (an existing one is refused unless ``overwrite``)."""
    refuse_existing(Path(out_dir), overwrite, "model directory")
    sd = load_fastai_weights(weights_path)
    fa_itos = load_fastai_vocab(vocab_path)
    config, state = fastai_to_ulmfit(sd)
    if len(fa_itos) != config.vocab_size:
        raise CheckpointError(
            f"{vocab_path}: {len(fa_itos)} tokens, but {weights_path} has an embedding of "
            f"{config.vocab_size} rows: the vocabulary does not belong to these weights"
        )
    itos = our_itos(fa_itos)
    for key in ("encoder.embedding.weight", "decoder.bias", "decoder.weight"):
        if key in state:
            state[key], _ = transfer_rows(state[key], fa_itos, itos)
    config = config.replace(vocab_size=len(itos))
    model = AWDLSTMLanguageModel(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if [k for k in missing if k != "decoder.weight"] or unexpected:
        raise CheckpointError(
            f"{weights_path}: unexpected layout (missing {missing}, extra {unexpected})"
        )
    vocab = Vocab(itos)
    extra = {
        "stage": "import-fastai",
        "source": {"weights": str(weights_path), "vocab": str(vocab_path)},
    }
    out = Path(out_dir)
    write_dir_atomically(
        out,
        lambda tmp: write_lm_files(tmp, model, vocab, tokenizer or TokenizerConfig(), None, extra),
    )
    log.info("imported fastai LM (%d tokens, %d layers) into %s", len(itos), config.n_layers, out)
    return out
