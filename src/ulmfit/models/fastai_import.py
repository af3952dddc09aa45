"""Import fastai's published AWD-LSTM weights (e.g. WT103 ``lstm_wt103.pth`` + ``itos_wt103.pkl``).

Nothing in the input files is executed. The weights are read with
``torch.load(weights_only=True)``; a file that holds more than tensors (``Learner.save``
keeps the optimizer state, with fastcore's ``L`` and other classes) is read again with an
unpickler that builds tensors and plain containers only and stands every other class or
function the file names in for an inert placeholder, never imported, never called. The
vocabulary (a pickled list of strings) is read with an unpickler that refuses every
global, so a file that tries to build anything but lists, strings and numbers fails with
a clear error instead of running code.
"""

from __future__ import annotations

import io
import logging
import pickle
import re
import zipfile
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


class _Inert:
    """Stands in for a class or function a torch file names but that is never imported:
    calling it, or filling it as pickle does, only records what it was given."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.__dict__.setdefault("items", {})[key] = value

    def append(self, value: Any) -> None:
        self.__dict__.setdefault("list", []).append(value)

    def extend(self, values: Any) -> None:
        self.__dict__.setdefault("list", []).extend(values)


# What a state dict needs: torch's tensor rebuilders and plain containers. Storage types
# are resolved by torch.load itself; dtypes are looked up by name below.
_TORCH_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("collections", "OrderedDict"),
    ("torch", "Size"),
    ("torch", "device"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
}


class _TensorsOnly(pickle.Unpickler):
    """Builds tensors and containers; every other global becomes an :class:`_Inert`."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _TORCH_GLOBALS:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        return type(name, (_Inert,), {"__module__": f"inert:{module}"})


def _load_tensors_only(file: Any, **kwargs: Any) -> Any:
    return _TensorsOnly(file, **kwargs).load()


class _TensorsOnlyPickle:
    """A ``pickle_module`` for ``torch.load``: whatever torch unpickles goes through
    :class:`_TensorsOnly` (never ``pickle.load``, which would run the file's code)."""

    Unpickler = _TensorsOnly
    load = staticmethod(_load_tensors_only)


def load_fastai_weights(path: Path | str) -> dict[str, Tensor]:
    """A fastai LM state dict: plain, or under ``'model'`` as ``Learner.save`` writes it
    (with the optimizer state beside it, read inertly and dropped)."""
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as first:  # pickle errors, zip errors, refused globals
        try:  # a Learner.save file: its optimizer state names fastcore's classes
            if not zipfile.is_zipfile(path):  # only torch's own format gets a second reading
                raise first
            obj = torch.load(
                path, map_location="cpu", weights_only=False, pickle_module=_TensorsOnlyPickle
            )
        except Exception:
            raise CheckpointError(
                f"{path}: cannot read as a torch file of tensors ({first})"
            ) from first
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or "0.encoder.weight" not in obj:
        raise CheckpointError(f"{path}: no '0.encoder.weight': not a fastai AWD-LSTM LM state dict")
    bad = sorted(str(k) for k, v in obj.items() if not isinstance(v, Tensor))
    if bad:
        raise CheckpointError(f"{path}: entries that are not tensors: {bad[:5]}")
    return obj


def _tensor(sd: dict[str, Tensor], key: str, where: Path | str) -> Tensor:
    try:
        return sd[key]
    except KeyError:
        raise CheckpointError(
            f"{where}: missing {key!r}: not the layout of a fastai AWD-LSTM language model "
            f"(its keys: {', '.join(sorted(sd)[:8])}{' ...' if len(sd) > 8 else ''})"
        ) from None


def fastai_to_ulmfit(
    sd: dict[str, Tensor], where: Path | str = "state dict"
) -> tuple[AWDLSTMConfig, dict[str, Tensor]]:
    """Our config and state dict (in fastai's vocabulary order) from a fastai state dict.

    A decoder without bias (``out_bias=False``) gets a zero one: the same logits. Any
    other missing key is an error that names it and ``where``.
    """
    emb = _tensor(sd, "0.encoder.weight", where)
    n_layers = 1 + max((int(m.group(1)) for k in sd if (m := _LAYER_KEY.match(k))), default=0)
    hh0 = _tensor(sd, "0.rnns.0.weight_hh_l0_raw", where)  # no layers: names the key
    hidden = hh0.shape[1] if n_layers > 1 else emb.shape[1]
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
        out[f"encoder.rnns.{i}.lstm.weight_hh_l0"] = _tensor(sd, src + "weight_hh_l0_raw", where)
        for name in ("weight_ih_l0", "bias_ih_l0", "bias_hh_l0"):
            out[f"encoder.rnns.{i}.lstm.{name}"] = _tensor(sd, src + "module." + name, where)
    bias = sd.get("1.decoder.bias")
    out["decoder.bias"] = bias if bias is not None else emb.new_zeros(emb.shape[0])
    known = {"0.encoder.weight", "0.encoder_dp.emb.weight", "1.decoder.weight", "1.decoder.bias"}
    for i in range(n_layers):
        known |= {f"0.rnns.{i}.weight_hh_l0_raw", f"0.rnns.{i}.module.weight_hh_l0"}
        known |= {f"0.rnns.{i}.module.{n}" for n in ("weight_ih_l0", "bias_ih_l0", "bias_hh_l0")}
    extra = sorted(set(sd) - known)
    if extra:
        raise CheckpointError(
            f"{where}: unexpected key(s) {extra[:5]}: not the layout of a fastai AWD-LSTM "
            "language model (a classifier's weights, or another architecture?)"
        )
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
    direction: str | None = None,
    source: dict[str, Any] | None = None,
) -> Path:
    """Convert fastai files into a ulmfit language-model directory at ``out_dir``
    (an existing one is refused unless ``overwrite``). The directory records ``tokenizer``,
    by default fastai's own tokenisation (kind ``fastai``), so that every later stage
    feeds the model the tokens it was trained on; ``direction`` (``forward`` or
    ``backward``) where it is known, so a stage reading text the other way refuses it;
    and ``source`` (default: the two paths)."""
    if direction not in (None, "forward", "backward"):
        raise ValueError(f"direction must be 'forward' or 'backward', not {direction!r}")
    refuse_existing(Path(out_dir), overwrite, "model directory")
    sd = load_fastai_weights(weights_path)
    fa_itos = load_fastai_vocab(vocab_path)
    config, state = fastai_to_ulmfit(sd, weights_path)
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
    extra: dict[str, Any] = {
        "stage": "import-fastai",
        "source": source or {"weights": str(weights_path), "vocab": str(vocab_path)},
    }
    if direction is not None:
        extra["direction"] = direction
    out = Path(out_dir)
    write_dir_atomically(
        out,
        lambda tmp: write_lm_files(
            tmp, model, vocab, tokenizer or TokenizerConfig(kind="fastai"), None, extra
        ),
    )
    log.info("imported fastai LM (%d tokens, %d layers) into %s", len(itos), config.n_layers, out)
    return out
