"""Pretrained language models by name: ``model_dir("wt103-fwd")`` is a model directory.

Each :class:`PretrainedLM` names its canonical public source, the archive's size and
checksum (and where that checksum is published), and how to turn the archive into a
ulmfit model directory. :func:`model_dir` does that once and reuses the result:

* the converted directory lives in ``$ULMFIT_HOME/models/NAME`` (``$ULMFIT_HOME``
  defaults to ``$ULMFIT_CACHE``, itself ``~/.cache/ulmfit``); the downloaded archive
  beside it in ``models/downloads``;
* with ``$ULMFIT_MODELS`` set to a folder holding the same archives (by their file
  names, ``wt103-fwd.tgz``), an offline machine reads them there, checked the same way,
  and nothing is downloaded;
* an archive is checked (size and checksum) before anything is read from it, and a
  directory is written atomically, so an interrupted ``get`` leaves nothing half-made.

Any option that takes a language-model directory (``--pretrained``, ``evaluate-lm``)
also takes a name: :func:`resolve` is called where such a directory is loaded.
"""

from __future__ import annotations

import logging
import os
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ulmfit.downloads import download, sha256_of, verify_file
from ulmfit.text.corpus import default_cache_dir

log = logging.getLogger(__name__)

_FASTAI_MODELZOO = "https://s3.amazonaws.com/fast-ai-modelzoo/"
# fastai 1.0's fastai/datasets.py, `_checks` (checked there by `_check_file`: the size and
# the MD5 of the first MiB). fastai 2.8 downloads these archives without any check.
_FASTAI_CHECKS_SOURCE = "fastai 1.0 fastai/datasets.py `_checks` (size, MD5 of the first MiB)"


@dataclass(frozen=True)
class RemoteFile:
    """One published file: where it is, its size and checksum (``ALGO:HEX``)."""

    path: str  # where it lives in the mirror and the download cache, e.g. "gpt2/config.json"
    url: str
    size: int
    checksum: str


@dataclass(frozen=True)
class PretrainedLM:
    """One named pretrained language model and how to get it."""

    name: str
    description: str
    files: tuple[RemoteFile, ...]  # an archive, or a model's files
    checksum_source: str  # where the checksums are published
    fmt: str  # how the files become a model directory: a key of CONVERTERS
    direction: str  # "forward" or "backward": the text order it was trained on
    license: str

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


def _fastai(name: str, direction: str, size: int, first_mib_md5: str, what: str) -> PretrainedLM:
    """One of fastai's model-zoo archives, with the size and first-MiB MD5 fastai 1 used."""
    url = f"{_FASTAI_MODELZOO}{name}.tgz"
    return PretrainedLM(
        name=name,
        description=what,
        files=(RemoteFile(f"{name}.tgz", url, size, f"md5-first-mib:{first_mib_md5}"),),
        checksum_source=_FASTAI_CHECKS_SOURCE,
        fmt="fastai",
        direction=direction,
        license="Apache-2.0 (fastai); WikiText-103 text CC BY-SA 3.0",
    )


# GPT-2 small at a pinned revision of the Hugging Face hub: the checksums are the hub's own
# (its LFS sha256 for the weights, the Git blob SHA-1 of the small files).
_GPT2_REVISION = "607a30d783dfa663caf39e06633721c8d4cfcd7e"
_GPT2_FILES = (
    ("config.json", 665, "git-sha1:10c66461e4c109db5a2196bff4bb59be30396ed8"),
    ("tokenizer.json", 1355256, "git-sha1:4b988bccc9dc5adacd403c00b4704976196548f8"),
    (
        "model.safetensors",
        548105171,
        "sha256:248dfc3911869ec493c76e65bf2fcf7f615828b0254c12b473182f0f81d3a707",
    ),
)


def _registry() -> dict[str, PretrainedLM]:
    hub = f"https://huggingface.co/openai-community/gpt2/resolve/{_GPT2_REVISION}/"
    entries = [
        _fastai(
            "wt103-fwd",
            "forward",
            105067061,
            "7d1114cd9684bf9d1ca3c9f6a54da6f9",
            "fastai's AWD-LSTM (400/1152x3, 60k vocabulary) pretrained on WikiText-103, "
            "forward; fastai tokenisation (needs the 'fastai' extra)",
        ),
        _fastai(
            "wt103-bwd",
            "backward",
            105205312,
            "20b06f5830fd5a891d21044c28d3097f",
            "fastai's AWD-LSTM pretrained on WikiText-103, backward (reads text last token "
            "first): the second half of a forward + backward ensemble",
        ),
        PretrainedLM(
            name="gpt2",
            description="OpenAI's GPT-2 small (124M: 12 blocks of 768) as a ulmfit "
            "Transformer backbone, with its byte-level BPE tokenizer",
            files=tuple(
                RemoteFile(f"gpt2/{f}", hub + f, size, checksum)
                for f, size, checksum in _GPT2_FILES
            ),
            checksum_source=f"Hugging Face hub, openai-community/gpt2 at {_GPT2_REVISION[:12]} "
            "(LFS sha256, Git blob SHA-1)",
            fmt="hf-gpt2",
            direction="forward",
            license="MIT (OpenAI GPT-2)",
        ),
    ]
    return {e.name: e for e in entries}


#: name -> entry. Tests and users may add entries (a private model server, say).
REGISTRY: dict[str, PretrainedLM] = _registry()


def list_pretrained() -> list[PretrainedLM]:
    return list(REGISTRY.values())


def entry(name: str) -> PretrainedLM:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown pretrained model {name!r}; known: {', '.join(sorted(REGISTRY))}"
        ) from None


def home() -> Path:
    """``$ULMFIT_HOME``, else the cache directory (``$ULMFIT_CACHE``, ``~/.cache/ulmfit``)."""
    given = os.environ.get("ULMFIT_HOME")
    return Path(given).expanduser() if given else default_cache_dir()


def mirror() -> Path | None:
    """``$ULMFIT_MODELS``: a folder holding the archives, for machines without network."""
    given = os.environ.get("ULMFIT_MODELS")
    return Path(given).expanduser() if given else None


def model_dir(name: str, *, progress: bool = True, force: bool = False) -> Path:
    """The model directory of pretrained model ``name``: converted once, then reused
    (``force`` converts it again)."""
    from ulmfit.models.io import read_config

    spec = entry(name)
    out = home() / "models" / spec.name
    if out.is_dir() and not force:
        try:
            read_config(out, "language_model")
            return out
        except (OSError, ValueError) as e:  # e.g. a directory from an older format
            log.warning("%s: cannot be read (%s); converting %s again", out, e, name)
    files = [_fetch(f, progress) for f in spec.files]
    out.parent.mkdir(parents=True, exist_ok=True)
    CONVERTERS[spec.fmt](spec, files, out)
    log.info("pretrained model %s ready in %s", name, out)
    return out


def _fetch(f: RemoteFile, progress: bool) -> Path:
    """The verified file: from the mirror if it holds it, else downloaded once."""
    where = mirror()
    if where is not None:
        local = where / f.path
        if local.is_file():
            verify_file(local, f.checksum, size=f.size)
            return local
        log.warning("%s: not in the mirror $ULMFIT_MODELS; downloading %s", local, f.url)
    dest = home() / "models" / "downloads" / f.path
    try:
        return download(f.url, dest, f.checksum, progress, size=f.size)
    except OSError as e:
        hint = (
            f"put {f.path} into $ULMFIT_MODELS ({where})"
            if where is not None
            else f"set $ULMFIT_MODELS to a folder holding {f.path}"
        )
        raise OSError(f"{e}\n(on a machine without network: {hint})") from e


def resolve(name_or_dir: str | Path, *, progress: bool = True) -> Path:
    """A language-model directory: ``name_or_dir`` itself if it exists (or is a path with
    folders, which its loader checks), else the directory of the pretrained model of that
    name. A bare word that is neither is an error listing the names."""
    path = Path(name_or_dir)
    if path.exists() or len(path.parts) > 1:  # a path: its loader names what is missing
        return path
    if str(name_or_dir) in REGISTRY:
        return model_dir(str(name_or_dir), progress=progress)
    from ulmfit.checkpoint import CheckpointError

    raise CheckpointError(
        f"{name_or_dir}: no such model directory, and not a pretrained model name "
        f"(known: {', '.join(sorted(REGISTRY))}; see `ulmfit lm list`)"
    )


# --------------------------------------------------------------------------- converters


def _fastai_members(archive: Path) -> dict[str, tarfile.TarInfo]:
    """The archive's weights (``*.pth``) and vocabulary (``*.pkl``): fastai's own
    ``language_model_learner`` takes the one file of each kind it finds there."""
    with tarfile.open(archive, "r:*") as tar:
        found: dict[str, list[tarfile.TarInfo]] = {".pth": [], ".pkl": []}
        for m in tar.getmembers():
            suffix = Path(m.name).suffix
            if m.isfile() and suffix in found:
                found[suffix].append(m)
    for suffix, what in ((".pth", "weights"), (".pkl", "vocabulary")):
        if len(found[suffix]) != 1:
            names = [m.name for m in found[suffix]]
            raise ValueError(
                f"{archive}: expected one {what} file (*{suffix}) in the archive, found "
                f"{len(names)} {names}"
            )
    return {"weights": found[".pth"][0], "vocab": found[".pkl"][0]}


def _convert_fastai(spec: PretrainedLM, files: list[Path], out: Path) -> None:
    from ulmfit.models.fastai_import import import_fastai

    (archive,) = files
    members = _fastai_members(archive)
    with tempfile.TemporaryDirectory(prefix=".ulmfit-unpack-", dir=out.parent) as tmp:
        paths = {}
        with tarfile.open(archive, "r:*") as tar:
            for role, member in members.items():
                src = tar.extractfile(member)
                assert src is not None  # a regular file
                path = Path(tmp) / f"{role}{Path(member.name).suffix}"
                with src, open(path, "wb") as f:
                    while chunk := src.read(1 << 20):
                        f.write(chunk)
                paths[role] = path
        source = {
            "pretrained": spec.name,
            "url": spec.files[0].url,
            "checksum": spec.files[0].checksum,
            "archive_sha256": sha256_of(archive),  # the whole file, for the record
            "weights": members["weights"].name,
            "vocab": members["vocab"].name,
        }
        import_fastai(
            paths["weights"],
            paths["vocab"],
            out,
            overwrite=True,
            direction=spec.direction,
            source=source,
        )


def _convert_hf_gpt2(spec: PretrainedLM, files: list[Path], out: Path) -> None:
    """The files side by side in one folder, then ``import_gpt2``."""
    from ulmfit.models.gpt2 import import_gpt2

    with tempfile.TemporaryDirectory(prefix=".ulmfit-hf-", dir=out.parent) as tmp:
        for f in files:  # some may come from the mirror, some from the download cache
            (Path(tmp) / f.name).symlink_to(f.resolve())
        import_gpt2(tmp, out, overwrite=True)


#: ``PretrainedLM.fmt`` -> how its files become a model directory.
CONVERTERS: dict[str, Callable[[PretrainedLM, list[Path], Path], None]] = {
    "fastai": _convert_fastai,
    "hf-gpt2": _convert_hf_gpt2,
}
