"""Reading documents from text corpora: plain text, CSV/TSV, JSONL, WikiText, WikiExtractor.

Compressed files (.gz, .xz, .bz2, .zip) are read transparently. Text must be UTF-8;
a bad byte raises :class:`CorpusError` naming the file and line, as does every other
problem with the input.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import json
import logging
import lzma
import sys
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol

from ulmfit.text.tokenize import FLD

log = logging.getLogger(__name__)

COMPRESSION_SUFFIXES = (".gz", ".xz", ".bz2", ".zip")
FORMATS = ("txt", "dir", "csv", "tsv", "jsonl", "wikitext", "wikiextractor")
_SUFFIX_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".tokens": "wikitext",
}
# Errors a decompressor raises on a damaged or mislabelled file.
_DECOMPRESS_ERRORS = (OSError, EOFError, lzma.LZMAError, zlib.error, zipfile.BadZipFile)


class CorpusError(ValueError):
    """Unusable input text; the message names the file (and line or field where known)."""


def _raise_csv_field_limit() -> None:
    # Long documents (whole articles) exceed csv's 128 KiB default field size. The
    # limit is a C long, which is 32-bit on some platforms: halve until accepted.
    limit = sys.maxsize
    while limit > 1 << 20:
        try:
            csv.field_size_limit(limit)
            return
        except OverflowError:
            limit //= 2


_raise_csv_field_limit()


def strip_compression(name: str) -> str:
    """``train.csv.xz`` -> ``train.csv``."""
    lower = name.lower()
    for suffix in COMPRESSION_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


class BinaryStream(Protocol):
    """What :class:`TextReader` needs from a (decompressing) binary file."""

    def read(self, size: int = -1, /) -> bytes: ...

    def readline(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


class TextReader:
    """Strict UTF-8 lines from a binary stream, with the line number in every error.

    Behaves like a text file opened with ``newline=""`` (what :mod:`csv` wants): lines
    keep their ``\\n`` / ``\\r\\n`` endings. A UTF-8 byte-order mark is dropped.
    """

    def __init__(self, raw: BinaryStream, name: str, closers: Sequence[Any] = ()) -> None:
        self.name = name
        self.line_no = 0  # lines returned so far
        self._raw = raw
        self._closers = [raw, *closers]
        self._offset = 0  # bytes consumed so far
        self._pending = ""  # text read ahead by read(size)

    def __enter__(self) -> TextReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        for c in self._closers:
            c.close()

    def __iter__(self) -> TextReader:
        return self

    def __next__(self) -> str:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def _read_raw(self, size: int = -1, line: bool = False) -> bytes:
        try:
            return self._raw.readline() if line else self._raw.read(size)
        except _DECOMPRESS_ERRORS as e:
            raise CorpusError(
                f"{self.name}: cannot read after line {self.line_no} "
                f"(damaged or not really compressed this way?): {e}"
            ) from e

    def _decode(self, data: bytes) -> str:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            bad_line = self.line_no + 1 + data.count(b"\n", 0, e.start)
            raise CorpusError(
                f"{self.name}: line {bad_line}: invalid UTF-8 at byte offset "
                f"{self._offset + e.start} ({e.reason}: {data[e.start : e.start + 4]!r}); "
                "convert the file to UTF-8"
            ) from None
        if self._offset == 0 and text.startswith("\ufeff"):
            text = text[1:]
        self._offset += len(data)
        return text

    def readline(self) -> str:
        if self._pending:
            head, sep, rest = self._pending.partition("\n")
            if sep:
                self._pending = rest
                self.line_no += 1
                return head + sep
            self._pending = ""
            return head + self.readline()
        text = self._decode(self._read_raw(line=True))
        if text:
            self.line_no += 1
        return text

    def read(self, size: int = -1) -> str:
        if size is None or size < 0:
            text = self._pending + self._decode(self._read_raw())
            self._pending = ""
        else:
            # Whole lines keep multi-byte characters intact; the surplus is kept back.
            parts = [self._pending]
            have = len(self._pending)
            while have < size:
                line = self._decode(self._read_raw(line=True))
                if not line:
                    break
                parts.append(line)
                have += len(line)
            joined = "".join(parts)
            text, self._pending = joined[:size], joined[size:]
        self.line_no += text.count("\n")
        return text


def _zip_member(zf: zipfile.ZipFile, path: Path, member: str | None) -> str:
    names = [i.filename for i in zf.infolist() if not i.is_dir()]
    if member is not None:
        if member not in names:
            raise CorpusError(f"{path}: no member {member!r} in the zip (has {names})")
        return member
    if len(names) != 1:
        what = "is empty" if not names else f"has {len(names)} members ({names[:10]})"
        raise CorpusError(f"{path}: the zip {what}; say which member to read")
    return names[0]


def open_text(path: Path | str, member: str | None = None) -> TextReader:
    """Open a (possibly .gz/.xz/.bz2/.zip-compressed) UTF-8 text file for reading.

    Use as ``with open_text(path) as f: for line in f: ...``. A zip must hold one
    file unless ``member`` names one.
    """
    path = Path(path)
    name = str(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".gz":
            return TextReader(gzip.open(path, "rb"), name)
        if suffix == ".xz":
            return TextReader(lzma.open(path, "rb"), name)
        if suffix == ".bz2":
            return TextReader(bz2.open(path, "rb"), name)
        if suffix == ".zip":
            zf = zipfile.ZipFile(path)
            try:
                inner = _zip_member(zf, path, member)
                return TextReader(zf.open(inner), f"{name}:{inner}", [zf])
            except BaseException:
                zf.close()
                raise
        return TextReader(open(path, "rb"), name)
    except FileNotFoundError as e:
        raise CorpusError(f"{path}: no such file") from e
    except IsADirectoryError as e:
        raise CorpusError(f"{path}: is a folder, not a file") from e
    except (zipfile.BadZipFile, lzma.LZMAError) as e:
        raise CorpusError(f"{path}: not a valid {suffix} file ({e})") from e


def _first_line(path: Path) -> str:
    with open_text(path) as f:
        for line in f:
            if line.strip():
                return line
    return ""


def detect_format(path: Path | str) -> str:
    """The format of ``path`` from its suffix (after any compression suffix) or content."""
    path = Path(path)
    if path.is_dir():
        return "dir"
    name = strip_compression(path.name).lower()
    fmt = _SUFFIX_FORMATS.get(Path(name).suffix)
    if fmt is not None:
        return fmt
    # .txt or anything else: WikiExtractor output is plain text starting with <doc ...>.
    return "wikiextractor" if _first_line(path).startswith("<doc ") else "txt"


def join_fields(values: Sequence[str]) -> str:
    """One text from several fields, fastai style: ``xxfld 1 a xxfld 2 b``."""
    if len(values) == 1:
        return values[0]
    return " ".join(f"{FLD} {i} {v}" for i, v in enumerate(values, 1))


def _columns(text_column: str | Sequence[str] | None) -> list[str]:
    if text_column is None:
        return ["text"]
    cols = [text_column] if isinstance(text_column, str) else list(text_column)
    if not cols:
        raise ValueError("text_column must name at least one column")
    return cols


def _as_text(value: Any, where: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float, bool)):
        return str(value)
    raise CorpusError(f"{where}: expected text, got a JSON {type(value).__name__}")


def _iter_csv(path: Path, columns: list[str], delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, values of ``columns``) for each data row."""
    with open_text(path) as f:
        reader = csv.reader(f, delimiter=delimiter)
        try:
            header = next(reader, None)
            if header is None:
                return
            header = [h.strip() for h in header]
            missing = [c for c in columns if c not in header]
            if missing:
                raise CorpusError(f"{path}: no column {missing[0]!r}; the columns are {header}")
            idx = [header.index(c) for c in columns]
            need = max(idx) + 1
            for row in reader:
                if not row:
                    continue  # blank line
                if len(row) < need:
                    raise CorpusError(
                        f"{path}: line {reader.line_num}: {len(row)} fields, but column "
                        f"{header[need - 1]!r} is number {need} (header has {len(header)})"
                    )
                yield reader.line_num, [row[i] for i in idx]
        except csv.Error as e:
            raise CorpusError(f"{path}: line {reader.line_num}: bad CSV ({e})") from e


def _iter_jsonl(path: Path, columns: list[str]) -> Iterator[tuple[int, list[Any]]]:
    with open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise CorpusError(
                    f"{path}: line {lineno}: invalid JSON ({e.msg} at column {e.colno})"
                ) from e
            if not isinstance(rec, dict):
                raise CorpusError(
                    f"{path}: line {lineno}: expected a JSON object, got {type(rec).__name__}"
                )
            for c in columns:
                if c not in rec:
                    raise CorpusError(
                        f"{path}: line {lineno}: no field {c!r}; the fields are {sorted(rec)}"
                    )
            yield lineno, [rec[c] for c in columns]


def _iter_fields(path: Path, fmt: str, columns: list[str]) -> Iterator[tuple[int, list[Any]]]:
    if fmt == "jsonl":
        return _iter_jsonl(path, columns)
    return _iter_csv(path, columns, "\t" if fmt == "tsv" else ",")


def _table_texts(path: Path, fmt: str, columns: list[str]) -> Iterator[str]:
    for lineno, values in _iter_fields(path, fmt, columns):
        texts = [
            _as_text(v, f"{path}: line {lineno}: field {c!r}")
            for c, v in zip(columns, values, strict=True)
        ]
        if not any(t.strip() for t in texts):
            yield ""  # counted as empty by the caller
        else:
            yield join_fields(texts)


def _txt_texts(path: Path, one_doc_per: str) -> Iterator[str]:
    with open_text(path) as f:
        if one_doc_per == "file":
            yield f.read()
        else:
            yield from f


def _dir_files(root: Path) -> list[Path]:
    files = [
        p
        for p in root.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
        and strip_compression(p.name).lower().endswith(".txt")
    ]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _dir_texts(root: Path) -> Iterator[str]:
    for p in _dir_files(root):
        with open_text(p) as f:
            yield f.read()


def is_wikitext_title(line: str) -> bool:
    """A top-level WikiText heading: `` = Title = `` (one ``=`` each side)."""
    s = line.strip()
    return (
        len(s) > 4
        and s.startswith("= ")
        and s.endswith(" =")
        and not s.startswith("= =")
        and not s.endswith("= =")
    )


def _wikitext_texts(path: Path) -> Iterator[str]:
    """One article per top-level heading, heading included; lines joined by newlines."""
    lines: list[str] = []
    with open_text(path) as f:
        for line in f:
            if is_wikitext_title(line) and lines:
                yield "\n".join(lines)
                lines = []
            s = line.strip()
            if s:
                lines.append(s)
    if lines:
        yield "\n".join(lines)


def _wikiextractor_texts(path: Path) -> Iterator[str]:
    """The text (title line first) of each ``<doc ...>`` ... ``</doc>`` block."""
    lines: list[str] = []
    in_doc = False
    outside = 0
    with open_text(path) as f:
        for line in f:
            if line.startswith("<doc ") or line.startswith("<doc>"):
                if in_doc:
                    raise CorpusError(f"{path}: line {f.line_no}: <doc> inside another <doc>")
                in_doc, lines = True, []
            elif line.startswith("</doc>"):
                if not in_doc:
                    raise CorpusError(f"{path}: line {f.line_no}: </doc> without <doc>")
                in_doc = False
                yield "\n".join(lines)
            elif in_doc:
                s = line.strip()
                if s:
                    lines.append(s)
            elif line.strip():
                outside += 1
    if outside:
        log.warning("%s: ignored %d lines outside <doc> ... </doc>", path, outside)
    if in_doc:
        log.warning("%s: the last <doc> has no </doc> (truncated file?); kept it", path)
        yield "\n".join(lines)


def read_texts(
    path: Path | str,
    *,
    fmt: str | None = None,
    text_column: str | Sequence[str] | None = None,
    one_doc_per: Literal["line", "file"] = "line",
) -> Iterator[str]:
    """The documents of a corpus, one string each, in file order.

    ``fmt`` is one of :data:`FORMATS` (default: from the suffix or the content; a
    folder reads every ``*.txt`` below it, one document per file). ``text_column``
    names the CSV column(s) / JSON field(s) holding the text (default ``"text"``);
    several are joined as ``xxfld 1 a xxfld 2 b``. Blank documents are skipped (and
    logged); a corpus with no documents at all raises :class:`CorpusError`.
    """
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"{path}: no such file or folder")
    if one_doc_per not in ("line", "file"):
        raise ValueError(f"one_doc_per must be 'line' or 'file', got {one_doc_per!r}")
    if fmt is None:
        fmt = detect_format(path)
    if fmt not in FORMATS:
        raise ValueError(f"unknown corpus format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if path.is_dir() != (fmt == "dir"):
        raise CorpusError(f"{path}: format {fmt!r} needs a {'folder' if fmt == 'dir' else 'file'}")
    if fmt == "dir":
        docs = _dir_texts(path)
    elif fmt in ("csv", "tsv", "jsonl"):
        docs = _table_texts(path, fmt, _columns(text_column))
    elif fmt == "wikitext":
        docs = _wikitext_texts(path)
    elif fmt == "wikiextractor":
        docs = _wikiextractor_texts(path)
    else:
        docs = _txt_texts(path, one_doc_per)
    return _non_empty(docs, path)


def _non_empty(docs: Iterator[str], path: Path) -> Iterator[str]:
    n_docs = n_empty = 0
    for doc in docs:
        doc = doc.strip()
        if doc:
            n_docs += 1
            yield doc
        else:
            n_empty += 1
    if n_empty:
        log.info("%s: skipped %d empty documents", path, n_empty)
    if n_docs == 0:
        raise CorpusError(f"{path}: no documents (empty corpus or only whitespace)")


def read_table(
    path: Path | str,
    text_column: str | Sequence[str] = "text",
    label_column: str | None = None,
    *,
    fmt: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Rows of a CSV/TSV/JSONL file as ``{"text": ..., "label": ..., "line": n}``.

    ``label`` is only present when ``label_column`` is given (and may be any JSON value
    for JSONL). Rows are not skipped, blank text included.
    """
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"{path}: no such file")
    fmt = fmt or detect_format(path)
    if fmt not in ("csv", "tsv", "jsonl"):
        raise CorpusError(f"{path}: read_table reads csv, tsv or jsonl, not {fmt!r}")
    columns = _columns(text_column)
    wanted = columns + ([label_column] if label_column is not None else [])

    def rows() -> Iterator[dict[str, Any]]:
        for lineno, values in _iter_fields(path, fmt, wanted):
            texts = [
                _as_text(v, f"{path}: line {lineno}: field {c!r}")
                for c, v in zip(columns, values[: len(columns)], strict=True)
            ]
            row: dict[str, Any] = {"text": join_fields(texts), "line": lineno}
            if label_column is not None:
                row["label"] = values[-1]
            yield row

    return rows()


__all__ = [
    "COMPRESSION_SUFFIXES",
    "FORMATS",
    "CorpusError",
    "TextReader",
    "detect_format",
    "is_wikitext_title",
    "join_fields",
    "open_text",
    "read_table",
    "read_texts",
    "strip_compression",
]
