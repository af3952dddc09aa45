"""Model directories: ``config.json`` + ``model.safetensors`` + vocab + training state.

A directory is written whole into a temporary sibling and then renamed into place, so
a crash never leaves a half-written checkpoint where a good one (or none) was. Only
safetensors and JSON are read: no pickle, so loading a file never runs its code.

What is written, and how (the README's "Guarantees" section says the same for users):

* A file appears whole or not at all: it is written to an unnamed temporary file in the
  target's folder (Linux ``O_TMPFILE``; elsewhere a uniquely named hidden file) and
  linked into place at the end, so two writers never share a temporary file. With
  ``overwrite=False`` the link is exclusive: if the target appeared meanwhile, this
  writer is refused.
* A ``kill -9`` leaves no temporary behind: named temporaries (files and directories)
  are registered with a watcher process (:mod:`ulmfit._reaper`) that removes them when
  the writer dies. They also carry the writer's process id, so should the watcher be
  missing, the next write of the same target removes those whose process is gone.
* Weights files are recorded with their SHA-256 in ``config.json`` and checked when
  loaded; non-finite weights are refused.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ulmfit import _reaper

log = logging.getLogger(__name__)

FORMAT = "ulmfit"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
VOCAB_FILE = "vocab.json"
SPM_FILE = "spm.model"
BPE_FILE = "tokenizer.json"
#: The file a tokenizer kind keeps beside the weights (the word tokenizer keeps none).
TOKENIZER_FILES = {"spm": SPM_FILE, "bytebpe": BPE_FILE}


def tokenizer_path(model_dir: Path, kind: str) -> Path | None:
    """Where a model directory keeps the file of tokenizer ``kind`` (None: it has none)."""
    name = TOKENIZER_FILES.get(kind)
    return None if name is None else Path(model_dir) / name


TRAIN_STATE_FILE = "training_state.safetensors"
TRAIN_META_FILE = "training_state.json"
#: config.json field: ``{file name: sha256}`` of every weights file of the directory.
CHECKSUM_FIELD = "weights_sha256"


class CheckpointError(ValueError):
    """A model directory that cannot be loaded; the message names the file and the problem."""


class OutputExistsError(FileExistsError):
    """An output that already exists, and the writer was not allowed to replace it."""


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def refuse_existing(path: Path, overwrite: bool, what: str = "output") -> None:
    """Raise :class:`OutputExistsError` if ``path`` exists and ``overwrite`` is False."""
    if not overwrite and os.path.lexists(path):
        raise OutputExistsError(
            f"{path}: {what} already exists; refusing to replace it "
            "(pass --overwrite, or overwrite=True, to replace it)"
        )


def _tmp_name(path: Path, suffix: str = ".tmp") -> str:
    """A hidden sibling name unique to this process and call: ``.NAME.PID.RANDOM.tmp``."""
    return f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}{suffix}"


# Per filesystem (st_dev): can an O_TMPFILE file be linked into place through /proc?
_UNNAMED_LINKS: dict[int, bool] = {}


def _open_unnamed(folder: Path) -> int | None:
    """A descriptor of an unnamed file in ``folder`` (Linux O_TMPFILE), or None where the
    platform, the filesystem or /proc cannot give it a name afterwards."""
    flag = getattr(os, "O_TMPFILE", 0)
    if not flag or not os.path.isdir("/proc/self/fd"):
        return None
    dev = os.stat(folder).st_dev
    if _UNNAMED_LINKS.get(dev) is False:
        return None
    try:
        if dev not in _UNNAMED_LINKS:  # one probe per filesystem and process
            probe = os.open(folder, flag | os.O_WRONLY, 0o600)
            name = folder / f".probe.{os.getpid()}.{os.urandom(4).hex()}.tmp"
            try:
                os.link(f"/proc/self/fd/{probe}", name, follow_symlinks=True)
                name.unlink()
                _UNNAMED_LINKS[dev] = True
            except OSError:
                _UNNAMED_LINKS[dev] = False
                return None
            finally:
                os.close(probe)
        return os.open(folder, flag | os.O_WRONLY, 0o666)
    except OSError as e:  # a filesystem without O_TMPFILE support
        if e.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
            _UNNAMED_LINKS[dev] = False
            return None
        raise


def _publish(src: str, path: Path, overwrite: bool, follow: bool) -> None:
    """Give the finished file ``src`` the name ``path`` (exclusively unless ``overwrite``)."""
    if overwrite:
        staged = str(path.parent / _tmp_name(path))
        if follow:  # an unnamed file: give it a unique name first, then rename over path
            os.link(src, staged, follow_symlinks=True)
            src = staged
        try:
            os.replace(src, path)
        except BaseException:
            if follow:
                Path(staged).unlink(missing_ok=True)
            raise
        return
    try:
        os.link(src, path, follow_symlinks=follow)
    except FileExistsError:
        raise OutputExistsError(
            f"{path}: appeared while this run was writing it (another writer?); refusing to "
            "replace it (pass --overwrite, or overwrite=True, to replace it)"
        ) from None
    if not follow:
        os.unlink(src)


@contextlib.contextmanager
def atomic_output(
    path: Path | str,
    mode: str = "w",
    *,
    overwrite: bool = True,
    encoding: str | None = "utf-8",
    newline: str | None = None,
) -> Iterator[IO[Any]]:
    """Open a file that appears at ``path``, complete, only when the block ends cleanly.

    Nothing is left behind when the block raises. ``overwrite=False`` refuses an
    existing ``path``, both before writing and (exclusively) at the end.
    """
    path = Path(path)
    refuse_existing(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    binary = "b" in mode
    enc = None if binary else encoding
    nl = None if binary else newline
    fd = _open_unnamed(path.parent)
    named: str | None = None
    if fd is None:
        named = str(path.parent / _tmp_name(path))
        _reaper.watch(named)  # before it exists: a kill -9 at any moment leaves nothing
        fd = os.open(named, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, mode, encoding=enc, newline=nl) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
            if named is None:
                _publish(f"/proc/self/fd/{f.fileno()}", path, overwrite, follow=True)
        if named is not None:
            _publish(named, path, overwrite, follow=False)
    finally:
        if named is not None:
            Path(named).unlink(missing_ok=True)
            _reaper.unwatch(named)


def atomic_write_text(path: Path, text: str, overwrite: bool = True) -> None:
    """Write ``text`` to ``path`` whole or not at all (see :func:`atomic_output`)."""
    with atomic_output(path, "w", overwrite=overwrite) as f:
        f.write(text)


def figure_format(path: Path) -> str:
    """The image format a plot's suffix names (``png``, ``pdf``, ``svg`` ...); any suffix
    matplotlib cannot write is refused by name. Needs matplotlib."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fmt = path.suffix.lower().lstrip(".")
    supported = FigureCanvasAgg.get_supported_filetypes()
    if fmt not in supported:
        raise ValueError(
            f"{path}: cannot write a plot as {path.suffix or 'a file without a suffix'!r}; "
            f"use one of {', '.join('.' + k for k in sorted(supported))}"
        )
    return fmt


def save_figure(fig: Any, path: Path | str, dpi: int = 100, overwrite: bool = True) -> Path:
    """Write a matplotlib figure atomically, in the format its suffix names (or refuse)."""
    path = Path(path)
    fmt = figure_format(path)
    with atomic_output(path, "wb", overwrite=overwrite) as f:
        fig.savefig(f, format=fmt, dpi=dpi)
    return path


_STALE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-z_]+\.(?:tmp|old)$")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(out_dir: Path) -> list[Path]:
    """Remove temporary siblings of ``out_dir`` (a file or a directory) left by writers
    of this machine that no longer run (a ``kill -9`` mid-write); returns them."""
    out_dir = Path(out_dir)
    removed: list[Path] = []
    if not out_dir.parent.is_dir():
        return removed
    for item in out_dir.parent.iterdir():
        m = _STALE.match(item.name)
        if m and m["name"] == out_dir.name and not _pid_alive(int(m["pid"])):
            if item.is_dir():
                shutil.rmtree(item, ignore_errors=True)
            else:
                item.unlink(missing_ok=True)
            removed.append(item)
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted write", len(removed))
    return removed


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where the
    platform or filesystem cannot, and nothing was changed."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV, errno.EPERM):
        return False
    raise OSError(err, f"cannot swap {a} and {b}: {os.strerror(err)}")


def write_dir_atomically(out_dir: Path, fill: Callable[[Path], None]) -> Path:
    """Call ``fill(tmp_dir)`` and move the result to ``out_dir`` (replacing an old one).

    If ``fill`` raises, nothing at ``out_dir`` changes and the temporary folder is removed.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir)
    tmp = out_dir.parent / _tmp_name(out_dir)
    _reaper.watch(tmp)  # removed by the watcher if this process is killed mid-write
    tmp.mkdir()
    old: Path | None = None
    try:
        fill(tmp)
        if out_dir.exists():
            # Keep files we did not write (logs, plots, other artifacts) beside the new ones.
            for item in out_dir.iterdir():
                if not (tmp / item.name).exists():
                    os.replace(item, tmp / item.name)
            if _exchange(tmp, out_dir):  # one atomic step: out_dir is never missing
                old = tmp
            else:
                # A name of this call's own: two writers never collide on the old copy.
                old = out_dir.parent / _tmp_name(out_dir, ".old")
                _reaper.watch(old)
                os.replace(out_dir, old)
                os.replace(tmp, out_dir)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        for name in (tmp, old):
            if name is not None:
                _reaper.unwatch(name)
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
) -> dict[str, str]:
    """Write the weights as ``path`` (one safetensors file) or, with ``max_shard_bytes``,
    as ``<stem>-NNNNN.safetensors`` shards plus ``<name>.index.json``.

    Shards keep weights easy to move (e.g. under a file-size limit); a tensor larger than
    a shard is cut into row blocks, which the index records and loading joins again.
    Returns ``{file name: sha256}`` of the files written, for ``config.json``
    (:data:`CHECKSUM_FIELD`), so that loading can tell weights changed after saving.
    """
    state = model_state_for_saving(model)
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION)}
    if not max_shard_bytes:
        save_file(state, str(path), metadata=meta)
        return {path.name: file_sha256(path)}
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
    digests = {}
    for i, shard in enumerate(shards):
        fname = f"{path.stem}-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(path.parent / fname), metadata=meta)
        digests[fname] = file_sha256(path.parent / fname)
        weight_map.update({k: fname for k in shard})
    index = {"format": FORMAT, "weight_map": weight_map, "splits": splits}
    index_path = path.parent / f"{path.name}.index.json"
    atomic_write_text(index_path, json.dumps(index, indent=1))
    digests[index_path.name] = file_sha256(index_path)
    return digests


def verify_checksums(folder: Path, checksums: Mapping[str, str] | None) -> None:
    """Check each file named in ``checksums`` (from config.json) against its SHA-256.

    Directories written before checksums were recorded have none: nothing to check.
    """
    for name, want in (checksums or {}).items():
        f = Path(folder) / name
        if not f.exists():
            raise CheckpointError(f"{f}: missing (config.json records its checksum)")
        got = file_sha256(f)
        if got != want:
            raise CheckpointError(
                f"{f}: the weights changed after they were saved (sha256 {got[:16]}..., "
                f"config.json records {want[:16]}...); the file is damaged or was edited"
            )


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


def load_weights(path: Path, model: nn.Module, checksums: Mapping[str, str] | None = None) -> None:
    """Load ``path`` into ``model``, checking names and shapes first; names every problem.

    ``checksums`` (``config.json``'s :data:`CHECKSUM_FIELD`) are verified first; a weight
    that is NaN or infinite is refused, since every prediction from it would be too.
    """
    verify_checksums(path.parent, checksums)
    try:
        state = _read_state(path)
    except CheckpointError:
        raise
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    bad = [k for k, t in state.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise CheckpointError(
            f"{path}: non-finite (NaN or infinite) values in {len(bad)} tensor(s): "
            f"{bad[:5]}{'...' if len(bad) > 5 else ''}"
        )
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
    digest = file_sha256(model_dir / TRAIN_STATE_FILE)
    atomic_write_text(
        model_dir / TRAIN_META_FILE,
        json.dumps({**meta, "optimizer": opt_meta, "state_sha256": digest}, indent=1),
    )


def load_training_state(model_dir: Path) -> tuple[dict[str, Any], dict[str, Tensor]] | None:
    """``(meta, tensors)`` of a saved training state, or None if the directory has none."""
    meta_path, tensor_path = model_dir / TRAIN_META_FILE, model_dir / TRAIN_STATE_FILE
    if not meta_path.exists() or not tensor_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except Exception as e:
        raise CheckpointError(f"{meta_path}: unreadable training state ({e})") from e
    want = meta.get("state_sha256") if isinstance(meta, dict) else None
    if want is not None and file_sha256(tensor_path) != want:
        raise CheckpointError(
            f"{tensor_path}: changed after it was saved (its sha256 differs from the one in "
            f"{TRAIN_META_FILE}); cannot resume from it"
        )
    try:
        tensors = load_file(str(tensor_path))
    except Exception as e:
        raise CheckpointError(f"{tensor_path}: unreadable training state ({e})") from e
    return meta, tensors
