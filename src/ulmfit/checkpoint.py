"""Model directories: ``config.json`` + ``model.safetensors`` + vocab + training state.

A directory is written whole into a temporary sibling and then renamed into place, so
a crash never leaves a half-written checkpoint where a good one (or none) was. Only
safetensors and JSON are read: no pickle, so loading a file never runs its code.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

log = logging.getLogger(__name__)

FORMAT = "ulmfit"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
VOCAB_FILE = "vocab.json"
SPM_FILE = "spm.model"
TRAIN_STATE_FILE = "training_state.safetensors"
TRAIN_META_FILE = "training_state.json"


class CheckpointError(ValueError):
    """A model directory that cannot be loaded; the message names the file and the problem."""


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_dir_atomically(out_dir: Path, fill: Callable[[Path], None]) -> Path:
    """Call ``fill(tmp_dir)`` and move the result to ``out_dir`` (replacing an old one).

    If ``fill`` raises, nothing at ``out_dir`` changes and the temporary folder is removed.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".tmp"))
    try:
        fill(tmp)
        if out_dir.exists():
            # Keep files we did not write (logs, plots, other artifacts) beside the new ones.
            for item in out_dir.iterdir():
                if not (tmp / item.name).exists():
                    os.replace(item, tmp / item.name)
            old = out_dir.with_name(f".{out_dir.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def model_state_for_saving(model: nn.Module) -> dict[str, Tensor]:
    """The state dict with each shared tensor stored once (tied decoder weight dropped)."""
    out: dict[str, Tensor] = {}
    seen: set[tuple[int, torch.dtype, tuple[int, ...]]] = set()
    for name, t in model.state_dict().items():
        key = (t.data_ptr(), t.dtype, tuple(t.shape))
        if t.numel() and key in seen:
            continue  # a tied weight: the first name stands for both
        seen.add(key)
        out[name] = t.detach().contiguous().cpu()
    return out


def save_weights(
    path: Path, model: nn.Module, dtype: torch.dtype | None = None, max_shard_bytes: int = 0
) -> None:
    """Write the weights as ``path`` (one safetensors file) or, with ``max_shard_bytes``,
    as ``<stem>-NNNNN.safetensors`` shards plus ``<name>.index.json``.

    Shards keep weights easy to move (e.g. under a file-size limit); a tensor larger than
    a shard is cut into row blocks, which the index records and loading joins again.
    """
    state = model_state_for_saving(model)
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION)}
    if not max_shard_bytes:
        save_file(state, str(path), metadata=meta)
        return
    pieces: list[tuple[str, Tensor]] = []
    splits: dict[str, int] = {}
    for name, t in state.items():
        nbytes = t.numel() * t.element_size()
        if nbytes > max_shard_bytes and t.dim() > 0 and t.size(0) > 1:
            row_bytes = max(1, nbytes // t.size(0))
            rows = max(1, max_shard_bytes // row_bytes)
            blocks = torch.split(t, rows)
            splits[name] = len(blocks)
            pieces += [(f"{name}::{i}", b.contiguous()) for i, b in enumerate(blocks)]
        else:
            pieces.append((name, t))
    shards: list[dict[str, Tensor]] = [{}]
    size = 0
    for key, t in pieces:
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = t
        size += nbytes
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = f"{path.stem}-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(path.parent / fname), metadata=meta)
        weight_map.update({k: fname for k in shard})
    index = {"format": FORMAT, "weight_map": weight_map, "splits": splits}
    atomic_write_text(path.parent / f"{path.name}.index.json", json.dumps(index, indent=1))


def _read_state(path: Path) -> dict[str, Tensor]:
    """One safetensors file, or the shards named by ``<path>.index.json``, joined."""
    index_path = path.parent / f"{path.name}.index.json"
    if path.exists():
        return load_file(str(path))
    if not index_path.exists():
        raise CheckpointError(f"{path}: missing weights file (and no {index_path.name})")
    index = json.loads(index_path.read_text(encoding="utf-8"))
    raw: dict[str, Tensor] = {}
    for fname in sorted(set(index["weight_map"].values())):
        shard = path.parent / fname
        if not shard.exists():
            raise CheckpointError(f"{shard}: shard listed in {index_path.name} is missing")
        raw.update(load_file(str(shard)))
    state = {k: v for k, v in raw.items() if "::" not in k}
    for name, n in index.get("splits", {}).items():
        state[name] = torch.cat([raw[f"{name}::{i}"] for i in range(n)])
    return state


def load_weights(path: Path, model: nn.Module) -> None:
    """Load ``path`` into ``model``, checking names and shapes first; names every problem."""
    try:
        state = _read_state(path)
    except CheckpointError:
        raise
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    expected = model.state_dict()
    tied = set(expected) - set(model_state_for_saving(model))
    problems = []
    for name, t in expected.items():
        if name in tied:
            continue
        if name not in state:
            problems.append(f"missing tensor {name} (expected shape {tuple(t.shape)})")
        elif state[name].shape != t.shape:
            problems.append(
                f"{name} has shape {tuple(state[name].shape)}, the config expects {tuple(t.shape)}"
            )
    extra = sorted(set(state) - set(expected))
    if extra:
        problems.append(f"unexpected tensors {extra[:5]}{'...' if len(extra) > 5 else ''}")
    if problems:
        raise CheckpointError(
            f"{path}: weights do not match the model config: " + "; ".join(problems)
        )
    with torch.no_grad():
        for name, t in expected.items():
            if name not in tied:
                t.copy_(state[name])


def read_config(model_dir: Path, kind: str | None = None) -> dict[str, Any]:
    """Read and check ``config.json`` (format, version and, if given, kind)."""
    path = Path(model_dir) / CONFIG_FILE
    if not path.exists():
        raise CheckpointError(f"{path}: missing ({model_dir} is not a ulmfit model directory)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a ulmfit config (field 'format' must be {FORMAT!r})")
    version = config.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version {version!r} is not supported by this ulmfit "
            f"(reads versions up to {FORMAT_VERSION}); upgrade ulmfit"
        )
    if kind is not None and config.get("kind") != kind:
        raise CheckpointError(f"{path}: holds a {config.get('kind')!r} model, expected {kind!r}")
    return config


def write_config(path: Path, kind: str, body: Mapping[str, Any]) -> None:
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind, **body}
    atomic_write_text(path, json.dumps(config, indent=2) + "\n")


# --- training state (optimizer, RNG, loop position, carried recurrent state) -------------


def optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors (safetensors) and the rest (JSON)."""
    sd = opt.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, pstate in sd["state"].items():
        for key, value in pstate.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{idx}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_flat(
    opt: torch.optim.Optimizer, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, t in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = t
    for idx, d in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(d)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_tensors() -> dict[str, Tensor]:
    out = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda.{i}"] = s
    return out


def restore_rng(tensors: Mapping[str, Tensor]) -> None:
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted(k for k in tensors if k.startswith("rng.cuda."))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])


def save_training_state(
    model_dir: Path,
    meta: Mapping[str, Any],
    optimizer: torch.optim.Optimizer,
    extra_tensors: Mapping[str, Tensor] | None = None,
) -> None:
    """Write the resume files into ``model_dir`` (called inside ``write_dir_atomically``)."""
    tensors, opt_meta = optimizer_to_flat(optimizer)
    tensors.update(rng_tensors())
    for k, v in (extra_tensors or {}).items():
        tensors[f"extra.{k}"] = v.detach().contiguous().cpu()
    save_file(tensors, str(model_dir / TRAIN_STATE_FILE))
    atomic_write_text(
        model_dir / TRAIN_META_FILE, json.dumps({**meta, "optimizer": opt_meta}, indent=1)
    )


def load_training_state(model_dir: Path) -> tuple[dict[str, Any], dict[str, Tensor]] | None:
    """``(meta, tensors)`` of a saved training state, or None if the directory has none."""
    meta_path, tensor_path = model_dir / TRAIN_META_FILE, model_dir / TRAIN_STATE_FILE
    if not meta_path.exists() or not tensor_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        tensors = load_file(str(tensor_path))
    except Exception as e:
        raise CheckpointError(f"{model_dir}: unreadable training state ({e})") from e
    return meta, tensors
