"""Files from the network, checked before use: datasets and pretrained models share this.

:func:`download` fetches through pooch (its HTTP, FTP, SFTP and DOI downloaders; a
``file://`` URL is read directly), checks the bytes against the published digest and
size, and only then renames them into place: a failed or refused download leaves
nothing behind. :func:`verify_file` checks a file already on disk and remembers the
answer in a stamp (size, mtime, sha256), so a large unchanged file is hashed once.

Digests are written ``"ALGO:HEX"``: ``sha256`` (also a bare 64-digit hex string),
``sha1`` and ``md5`` over the whole file, which is what most sources publish, and
``md5-first-mib``: the MD5 of the first MiB, which is what fastai 1 recorded (with the
size) for its model-zoo archives (``_check_file`` and ``_checks`` in fastai 1.0's
``fastai/datasets.py``); a size must come with it. ``git-sha1``: the SHA-1 of Git's blob
object (``"blob SIZE\0"`` then the bytes), which the Hugging Face hub shows for files
kept in Git rather than LFS.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import re
import shutil
import tempfile
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from ulmfit.text.corpus import default_cache_dir

log = logging.getLogger(__name__)

DIGEST_ALGORITHMS = ("sha256", "sha1", "md5", "md5-first-mib", "git-sha1")
_CHUNK = 1 << 20
_HASH_NOTICE_BYTES = 32 << 20  # files at least this big get a log line while being hashed


class ChecksumError(ValueError):
    """A file's digest (or size) differs from the expected one."""


def parse_digest(digest: str) -> tuple[str, str]:
    """``"ALGO:HEX"`` -> ``(algo, hex)``; a bare hex string is sha256."""
    algo, sep, value = digest.partition(":")
    if not sep:
        algo, value = "sha256", digest
    algo = algo.lower()
    if algo not in DIGEST_ALGORITHMS:
        raise ValueError(f"unknown digest algorithm {algo!r} in {digest!r}")
    value = value.strip().lower()
    if not value or any(c not in "0123456789abcdef" for c in value):
        raise ValueError(f"{digest!r}: the digest is not a hex string")
    return algo, value


def file_digest(path: str | Path, algo: str = "sha256") -> str:
    """Hex digest of a file's bytes (``md5-first-mib``: of its first MiB only)."""
    path = Path(path)
    if algo == "md5-first-mib":
        with open(path, "rb") as f:
            return hashlib.md5(f.read(_CHUNK)).hexdigest()
    size = path.stat().st_size
    h = hashlib.new("sha1" if algo == "git-sha1" else algo)
    if algo == "git-sha1":
        h.update(b"blob %d\0" % size)
    if size >= _HASH_NOTICE_BYTES:
        log.info("%s: computing %s of %.0f MiB", path, algo, size / 2**20)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _stamp_path(path: Path) -> Path:
    # Stamps live in the cache, not beside the data: a mirror is often read-only.
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]
    return default_cache_dir() / "verified" / f"{key}.json"


def read_stamp(path: Path) -> dict[str, Any] | None:
    """The stamp of ``path`` if it still describes the file (same size and mtime)."""
    try:
        stamp = json.loads(_stamp_path(path).read_text())
        st = path.stat()
    except (OSError, ValueError):
        return None
    if not isinstance(stamp, dict):
        return None
    same = (
        stamp.get("path") == str(path.resolve())
        and stamp.get("size") == st.st_size
        and stamp.get("mtime_ns") == st.st_mtime_ns
    )
    return stamp if same else None


def write_stamp(path: Path, sha256: str, **extra: str) -> None:
    """Record that ``path``, as it is now, has ``sha256`` (and was checked)."""
    st = path.stat()
    stamp = {
        "path": str(path.resolve()),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "sha256": sha256,
        **extra,
    }
    target = _stamp_path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".stamp.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(stamp, f)
        os.replace(tmp, target)
    except OSError as e:  # an unwritable cache only costs a re-hash next time
        log.debug("cannot record verification of %s: %s", path, e)


DAMAGED = "The file is damaged or not the published one; delete it and download again."


def mismatch(
    where: str | Path, algo: str, expected: str, actual: str, advice: str = DAMAGED
) -> ChecksumError:
    return ChecksumError(f"{where}: {algo} mismatch: expected {expected}, got {actual}. {advice}")


def _check_size(path: Path, size: int | None, advice: str = DAMAGED) -> None:
    if size is not None and (actual := path.stat().st_size) != size:
        raise ChecksumError(f"{path}: size mismatch: expected {size} bytes, got {actual}. {advice}")


def verify_file(
    path: str | Path, sha256: str | None, *, size: int | None = None, use_stamp: bool = True
) -> str:
    """Check a file's digest (and ``size`` if given); return its sha256, or the digest
    asked for where that is another algorithm.

    ``sha256`` may also be ``"sha1:HEX"``, ``"md5:HEX"`` or ``"md5-first-mib:HEX"``;
    None only records the digest (logged as unverified). A sha256 check is remembered
    in a stamp, so the next call on the unchanged file does not hash it again; for the
    other algorithms the stamp remembers that the file passed that check.
    Raises :class:`ChecksumError` on a mismatch.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    algo, expected = parse_digest(sha256) if sha256 else ("sha256", None)
    if algo == "md5-first-mib" and size is None:
        raise ValueError(f"{sha256!r}: an md5-first-mib digest needs the file's size too")
    _check_size(path, size)
    stamp = read_stamp(path) if use_stamp else None
    if algo != "sha256":
        if stamp is not None and stamp.get(algo) == expected:
            return expected or ""
        actual = file_digest(path, algo)
        if actual != expected:
            raise mismatch(path, algo, expected or "", actual)
        write_stamp(path, file_digest(path), **{algo: actual})
        return actual
    if stamp is not None and (expected is None or stamp.get("sha256") == expected):
        return str(stamp["sha256"])
    actual = file_digest(path)
    if expected is not None and actual != expected:
        raise mismatch(path, "sha256", expected, actual)
    if expected is None:
        log.warning("%s: no known checksum to compare with; its sha256 is %s", path, actual)
    write_stamp(path, actual)
    return actual


def sha256_of(path: str | Path) -> str:
    """The file's sha256: from its stamp while that still describes the file (every file
    :func:`download` or :func:`verify_file` passed has one), else hashed now."""
    stamp = read_stamp(Path(path))
    return str(stamp["sha256"]) if stamp is not None else file_digest(path)


def url_basename(url: str) -> str:
    name = posixpath.basename(urllib.parse.urlparse(url).path)
    return name or "download"


def _file_downloader(url: str, output_file: str, pooch: Any = None) -> None:
    """A pooch downloader for ``file://`` URLs (pooch has none): a plain copy."""
    path = urllib.request.url2pathname(urllib.parse.urlparse(url).path)
    with open(path, "rb") as src, open(output_file, "wb") as out:
        shutil.copyfileobj(src, out, _CHUNK)


def download(
    url: str,
    dest: str | Path,
    sha256: str | None,
    progress: bool = True,
    *,
    size: int | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest``, verified, atomically; return ``dest``.

    The bytes land in a hidden file beside ``dest`` (through :func:`pooch.retrieve`,
    which checks whole-file digests itself) and are renamed to ``dest`` only once the
    digest and ``size`` match. A mismatch deletes them and raises
    :class:`ChecksumError`; any other failure raises ``OSError`` naming the URL.
    ``sha256`` may be any digest :func:`parse_digest` reads, or None where none is
    published (the download is then logged as unverified). An existing ``dest`` that
    verifies is kept without downloading.
    """
    import pooch
    import requests

    dest = Path(dest)
    pooch.get_logger().setLevel(logging.WARNING)  # its per-file lines name our staging file
    algo, expected = parse_digest(sha256) if sha256 else ("sha256", None)
    if dest.is_file():
        if read_stamp(dest) is not None and expected is None:
            return dest  # downloaded before; nothing to check it against
        if expected is not None:
            try:
                verify_file(dest, sha256, size=size)
                log.info("%s: already downloaded and verified", dest)
                return dest
            except ChecksumError as e:
                log.warning("%s; downloading again", e)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:12]}.part"
    log.info("downloading %s -> %s", url, dest)
    refused = f"Download refused: nothing was written to {dest} (the partial file is deleted)."
    whole_file = algo in ("sha256", "sha1", "md5") and expected is not None
    if urllib.parse.urlparse(url).scheme == "file":
        downloader: Any = _file_downloader
    else:
        try:
            downloader = pooch.downloaders.choose_downloader(url, progressbar=progress)
        except ValueError as e:
            raise OSError(f"cannot download {url}: {e}") from e
        if isinstance(downloader, pooch.HTTPDownloader):
            downloader = pooch.HTTPDownloader(progressbar=progress, timeout=timeout)
    try:
        try:
            pooch.retrieve(
                url,
                known_hash=f"{algo}:{expected}" if whole_file else None,
                fname=staging.name,
                path=staging.parent,
                downloader=downloader,
                progressbar=progress,
            )
        except ValueError as e:
            if "hash" not in str(e).lower():
                raise OSError(f"cannot download {url}: {e}") from e
            actual = _digest_in(e)
            raise mismatch(url, algo, expected or "", actual, refused) from e
        except (OSError, requests.exceptions.RequestException) as e:
            raise OSError(f"cannot download {url}: {e}") from e
        _check_size(staging, size, refused)
        if expected is not None and not whole_file:
            actual = file_digest(staging, algo)
            if actual != expected:
                raise mismatch(url, algo, expected, actual, refused)
        digest = file_digest(staging)
        os.replace(staging, dest)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    if expected is None:
        log.warning("%s: no published checksum to verify it against; sha256 %s", url, digest)
    extra = {algo: expected} if expected is not None and algo != "sha256" else {}
    write_stamp(dest, digest, url=url, **extra)
    log.info("downloaded %s -> %s", url, dest)
    return dest


def _digest_in(error: ValueError) -> str:
    """The digest pooch reports for a refused download (it deletes the file itself)."""
    found = re.search(r"but got ([0-9a-fA-F]+)", str(error))
    return found.group(1).lower() if found else "?"
