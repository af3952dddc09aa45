"""Labelled text for classification: reading, label encoding, splitting and batching.

Files: CSV, TSV, JSONL (optionally .gz/.xz/.bz2/.zip) or a folder per class
(``root/<label>/*.txt``). Several text columns are joined as
``xxfld 1 <a> xxfld 2 <b>``. Every record keeps the line it came from, so a bad
label is reported as ``file: line N`` however late it is noticed.

Batches are right-padded and sorted by length ("sortish" in training), so a batch
holds documents of similar length and wastes little compute on padding::

    train:     shuffle -> chunks of bs*50 -> sort each chunk by length -> batches
               -> shuffle batches -> the batch with the longest document first
    inference: sort all by length (longest first) -> batches; ``index`` maps back
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections import Counter
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

from ulmfit.text.readers import CorpusError, join_fields, open_text, strip_compression

log = logging.getLogger(__name__)

TaskKind = Literal["multiclass", "multilabel", "hierarchical"]
# How a file's labels are read: the task kinds, and numbers (a regression target).
TASKS: tuple[str, ...] = ("multiclass", "multilabel", "hierarchical", "regression")

FORMATS = ("csv", "tsv", "jsonl", "folder")
_SUFFIX_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
# Characters that commonly separate labels; used only to explain an unknown label.
_OTHER_SEPARATORS = (",", ";", "|", " ", "\t")
_SHOWN_CLASSES = 8  # how many known classes an error message lists


@dataclass
class LabelledTexts:
    """Texts and labels read from one source; ``rows`` are 1-based line numbers there."""

    texts: list[str]
    labels: list[str] | list[list[str]] | None  # None: the source has no labels
    source: str
    rows: list[int]

    def __len__(self) -> int:
        return len(self.texts)


def _check_flat_task(task: str) -> None:
    if task not in ("multiclass", "multilabel"):
        raise ValueError(
            f"LabelEncoder is for multiclass or multilabel labels, got {task!r} "
            "(hierarchical labels: ulmfit.data.taxonomy.HierarchicalLabels)"
        )


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")


def detect_format(path: Path) -> str:
    """``csv``/``tsv``/``jsonl`` from the suffix (after a compression suffix), or ``folder``."""
    if path.is_dir():
        return "folder"
    fmt = _SUFFIX_FORMATS.get(Path(strip_compression(path.name).lower()).suffix)
    if fmt is None:
        raise CorpusError(
            f"{path}: cannot tell the format from the file name; "
            f"pass fmt= one of {', '.join(FORMATS[:3])} (or give a folder per class)"
        )
    return fmt


def _shown(classes: Sequence[str]) -> str:
    head = ", ".join(repr(c) for c in classes[:_SHOWN_CLASSES])
    more = f", ... ({len(classes)} in all)" if len(classes) > _SHOWN_CLASSES else ""
    return head + more


def _where(source: str, row: int | None) -> str:
    parts = [p for p in (source, f"line {row}" if row is not None else "") if p]
    return ": ".join(parts)


def _other_separator(label: str, label_sep: str | None, whitespace: bool) -> str | None:
    """A common label separator other than ``label_sep`` that occurs inside ``label``."""
    for sep in _OTHER_SEPARATORS if whitespace else _OTHER_SEPARATORS[:3]:
        if sep != label_sep and sep in label.strip():
            return sep
    return None


class _Reader:
    """Shared state of one ``read_labelled`` call: options plus the records so far."""

    def __init__(
        self,
        path: Path,
        text_columns: list[str],
        label_column: str | None,
        task: str,
        label_sep: str | None,
        require_labels: bool,
    ) -> None:
        self.path = path
        self.source = str(path)
        self.text_columns = text_columns
        self.label_column = label_column
        self.task = task
        self.label_sep = label_sep
        self.require_labels = require_labels
        self.texts: list[str] = []
        self.labels: list[Any] = []
        self.rows: list[int] = []
        self.n_empty = 0
        self.from_cells = False  # labels come from CSV/TSV cells (split on label_sep)
        self.sep_seen = False  # some cell contained label_sep
        self.label_key_seen = False  # JSONL: some record had the label field

    def error(self, row: int, msg: str) -> CorpusError:
        return CorpusError(f"{self.source}: line {row}: {msg}")

    def add(self, row: int, fields: list[str], label: Any) -> None:
        if not any(f.strip() for f in fields):
            self.n_empty += 1
        self.texts.append(join_fields(fields))
        self.labels.append(label)
        self.rows.append(row)

    def parse_label(self, row: int, value: Any, from_cell: bool) -> str | list[str]:
        """One record's label: a string (multiclass) or a list of strings (multilabel); a
        hierarchical label as given (a path string, a list of names, or a list of paths),
        split into paths by :class:`~ulmfit.data.taxonomy.HierarchicalLabels`."""
        col = self.label_column
        if self.task == "hierarchical":
            return self.parse_path_label(row, value)
        if self.task == "regression":  # a number, checked by RegressionLabels.encode
            if isinstance(value, float) and not isinstance(value, bool):
                return repr(value)
            number = _scalar_label(value)
            if number is None:
                raise self.error(row, f"label field {col!r} holds {value!r}, not a number")
            if not number.strip() and self.require_labels:
                raise self.error(row, f"no value (field {col!r} is empty)")
            return number.strip()
        if self.task == "multiclass":
            if isinstance(value, list):
                raise self.error(
                    row, f"label field {col!r} holds a list {value!r}; use task='multilabel'"
                )
            label = _scalar_label(value)
            if label is None:
                raise self.error(row, f"label field {col!r} holds {value!r}, not a string")
            label = label.strip()
            if not label and self.require_labels:
                raise self.error(row, f"no label (field {col!r} is empty)")
            return label
        if isinstance(value, list):  # JSONL: an explicit list; [] means "no labels"
            labels = []
            for v in value:
                one = _scalar_label(v)
                if one is None or not one.strip():
                    raise self.error(row, f"label field {col!r}: bad label {v!r} in {value!r}")
                labels.append(one.strip())
            return labels  # as given; a repeated label is harmless (multi-hot is a set)
        cell = _scalar_label(value)
        if cell is None:
            raise self.error(row, f"label field {col!r} holds {value!r}, not a list or string")
        if from_cell and self.label_sep is None:
            raise self.error(
                row,
                f"multilabel labels in a {self.path.name} cell need label_sep "
                f"(the character between labels, e.g. '|'), or use JSONL with a list",
            )
        parts = cell.split(self.label_sep) if self.label_sep is not None else [cell]
        labels = [p.strip() for p in parts if p.strip()]
        if not labels and self.require_labels:
            raise self.error(
                row, f"no label (field {col!r} is empty; in JSONL, [] marks a document with none)"
            )
        return labels

    def parse_path_label(self, row: int, value: Any) -> Any:
        col = self.label_column

        def names(v: Any) -> bool:
            return isinstance(v, list) and bool(v) and all(_scalar_label(x) for x in v)

        if isinstance(value, list):
            if value and (names(value) or all(names(v) for v in value)):
                return [
                    [str(x).strip() for x in v] if isinstance(v, list) else str(v).strip()
                    for v in value
                ]
            raise self.error(
                row,
                f"label field {col!r}: a label path is a string, a list of names or a list "
                f"of paths, got {value!r}",
            )
        label = _scalar_label(value)
        if label is None or (not label.strip() and self.require_labels):
            raise self.error(row, f"label field {col!r} holds {value!r}, not a label path")
        return label.strip()


def _label_names(label: Any, task: str) -> list[str]:
    """A record's labels as strings, for the checks: a hierarchical path is one name."""
    if isinstance(label, str):
        return [label]
    if task == "hierarchical":
        paths = label if label and not isinstance(label[0], str) else [label]
        return ["/".join(p) if isinstance(p, list) else str(p) for p in paths]
    return list(label)


def _scalar_label(value: Any) -> str | None:
    # Integer class ids in JSON are fine; floats, dicts and the like are not labels.
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def read_labelled(
    path: str | Path,
    *,
    text_column: str | Sequence[str] = "text",
    label_column: str | None = "label",
    task: TaskKind | Literal["regression"] = "multiclass",
    label_sep: str | None = None,
    fmt: str | None = None,
    require_labels: bool = True,
    known_labels: Sequence[str] | None = None,
) -> LabelledTexts:
    """Read a labelled (or, with ``label_column=None``, unlabelled) classification file.

    ``fmt``: csv | tsv | jsonl | folder (default: from the suffix; a directory is a
    folder per class). Multilabel labels are a JSON list, or a CSV/TSV cell split on
    ``label_sep``. With ``require_labels=False`` a missing label column gives
    ``labels=None`` and an empty label cell gives ``""`` / ``[]``. With
    ``known_labels`` any other label is an error. Raises :class:`CorpusError` naming
    the file, line and field of the first bad record.
    """
    _check_task(task)
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"{path}: no such file or directory")
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise CorpusError(f"{path}: unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    columns = [text_column] if isinstance(text_column, str) else list(text_column)
    if not columns:
        raise ValueError("read_labelled: text_column must name at least one column")
    if label_sep == "":
        raise ValueError("read_labelled: label_sep must not be empty")

    reader = _Reader(path, columns, label_column, task, label_sep, require_labels)
    if fmt == "folder":
        if task != "multiclass":
            raise CorpusError(f"{path}: the folder-per-class layout is multiclass only")
        _read_folder(reader)
    else:
        for row, fields, label in _iter_records(reader, fmt):
            reader.add(row, fields, label)

    labels: list[Any] | None = reader.labels if reader.label_column is not None else None
    if labels is not None:
        _check_labels(reader, labels, known_labels)
    if not reader.texts:
        log.warning("%s: no records", path)
    if reader.n_empty:
        log.warning(
            "%s: %d of %d texts are empty; they are classified from xxbos alone",
            path,
            reader.n_empty,
            len(reader.texts),
        )
    return LabelledTexts(reader.texts, labels, reader.source, reader.rows)


TEXT_FORMATS = ("csv", "tsv", "jsonl", "txt")


def iter_texts(
    path: str | Path, *, text_column: str | Sequence[str] = "text", fmt: str | None = None
) -> Iterator[tuple[int, str]]:
    """``(line, text)`` of every record of an unlabelled file, streaming, in file order.

    CSV/TSV/JSONL records follow :func:`read_labelled`'s rules exactly (what a model
    is trained on is what it predicts on): TSV is unquoted, a record whose field count
    differs from the header's is an error, a JSON text must be a string (or null), and
    several columns are joined with ``xxfld``. A label column, if any, is ignored.
    ``txt``: one document per line. Empty texts are kept. ``fmt`` defaults to the
    suffix (``.txt``: txt). Raises :class:`CorpusError` naming the file and line.
    """
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"{path}: no such file or directory")
    if path.is_dir():
        raise CorpusError(f"{path}: a folder; expected a {'/'.join(TEXT_FORMATS)} file")
    if fmt is None:
        is_txt = Path(strip_compression(path.name).lower()).suffix == ".txt"
        fmt = "txt" if is_txt else detect_format(path)
    if fmt not in TEXT_FORMATS:
        raise CorpusError(f"{path}: unknown format {fmt!r}; expected one of {TEXT_FORMATS}")
    if fmt == "txt":
        with open_text(path) as f:
            for lineno, line in enumerate(f, 1):
                yield lineno, line.rstrip("\r\n")
        return
    columns = [text_column] if isinstance(text_column, str) else list(text_column)
    if not columns:
        raise ValueError("iter_texts: text_column must name at least one column")
    reader = _Reader(path, columns, None, "multiclass", None, require_labels=False)
    for row, fields, _ in _iter_records(reader, fmt):
        yield row, join_fields(fields)


def _check_labels(reader: _Reader, labels: list[Any], known: Sequence[str] | None) -> None:
    """Unknown labels (given ``known``) and a label separator that the file never uses."""
    sep = reader.label_sep
    multilabel = reader.task == "multilabel"
    if known is not None:
        known_set = set(known)
        for row, lab in zip(reader.rows, labels, strict=True):
            for one in lab if multilabel else [lab]:
                if one and one not in known_set:
                    other = _other_separator(one, sep, whitespace=True) if multilabel else None
                    hint = (
                        f" (it has no separator {sep!r}: did you mean label_sep={other!r}?)"
                        if other
                        else ""
                    )
                    raise reader.error(
                        row, f"unknown label {one!r}{hint}; known: {_shown(sorted(known_set))}"
                    )
    if multilabel and reader.from_cells and not reader.sep_seen:
        # No cell used the separator. If cells hold another separator character, the
        # file was almost surely written with that one. (Whitespace is not taken as a
        # sign: label names often contain spaces.)
        for row, labs in zip(reader.rows, labels, strict=True):
            for one in labs:
                other = _other_separator(one, sep, whitespace=False)
                if other:
                    raise reader.error(
                        row,
                        f"label {one!r} has no separator {sep!r}, nor has any other row: "
                        f"did you mean label_sep={other!r}?",
                    )


def _iter_records(reader: _Reader, fmt: str) -> Iterator[tuple[int, list[str], Any]]:
    """``(line, text fields, label)`` of each record of a CSV/TSV/JSONL file, streaming."""
    if fmt == "jsonl":
        return _iter_jsonl(reader)
    return _iter_delimited(reader, "\t" if fmt == "tsv" else ",")


def _iter_jsonl(reader: _Reader) -> Iterator[tuple[int, list[str], Any]]:
    label_col = reader.label_column
    with open_text(reader.path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise reader.error(lineno, f"not valid JSON ({e.msg} at column {e.colno})") from e
            if not isinstance(rec, dict):
                raise reader.error(lineno, f"expected a JSON object, got {type(rec).__name__}")
            fields = []
            for col in reader.text_columns:
                if col not in rec:
                    raise reader.error(
                        lineno, f"no text field {col!r}; the record has {_keys(rec)}"
                    )
                value = rec[col]
                if value is None:
                    value = ""
                if not isinstance(value, str):
                    raise reader.error(lineno, f"text field {col!r} is not a string: {value!r}")
                fields.append(value)
            label: Any = None
            if label_col is not None:
                if label_col in rec:
                    reader.label_key_seen = True
                elif reader.require_labels:
                    raise reader.error(
                        lineno, f"no label field {label_col!r}; the record has {_keys(rec)}"
                    )
                label = reader.parse_label(lineno, rec.get(label_col), from_cell=False)
            yield lineno, fields, label
    if not reader.require_labels and not reader.label_key_seen:
        reader.label_column = None  # optional labels, and none given: an unlabelled file


def _keys(rec: dict[str, Any]) -> str:
    return ", ".join(repr(k) for k in rec) or "no fields"


def _iter_delimited(reader: _Reader, delimiter: str) -> Iterator[tuple[int, list[str], Any]]:
    # (ulmfit.text.readers lifts the csv module's 128 KiB field cap on import.)
    # TSV is taken literally (no quoting), so a stray '"' in a text stays a character.
    tsv = delimiter == "\t"
    sep = reader.label_sep
    reader.from_cells = reader.task == "multilabel" and reader.label_column is not None
    with open_text(reader.path) as f:
        rows = (
            csv.reader(f, delimiter=delimiter, quoting=csv.QUOTE_NONE)
            if tsv
            else csv.reader(f, delimiter=delimiter)
        )
        try:
            header = next(rows, None)
        except csv.Error as e:
            raise reader.error(1, f"bad header ({e})") from e
        if header is None:
            raise CorpusError(f"{reader.source}: empty file (no header row)")
        if header:
            header[0] = header[0].lstrip("\ufeff")  # a byte-order mark, if the reader kept it
        header = [h.strip() for h in header]
        available = ", ".join(repr(h) for h in header)
        text_idx = []
        for col in reader.text_columns:
            if col not in header:
                raise CorpusError(
                    f"{reader.source}: line 1: no text column {col!r}; the header has {available}"
                )
            text_idx.append(header.index(col))
        label_idx = None
        if reader.label_column is not None:
            if reader.label_column in header:
                label_idx = header.index(reader.label_column)
            elif reader.require_labels:
                raise CorpusError(
                    f"{reader.source}: line 1: no label column {reader.label_column!r}; "
                    f"the header has {available}"
                )
            else:
                reader.label_column = None  # unlabelled file
        start = rows.line_num + 1
        while True:
            try:
                record = next(rows)
            except StopIteration:
                break
            except csv.Error as e:
                raise reader.error(start, f"malformed {reader.path.name} record ({e})") from e
            row, start = start, rows.line_num + 1
            if not record:  # a blank line
                continue
            if len(record) != len(header):
                raise reader.error(
                    row,
                    f"{len(record)} fields but the header has {len(header)} "
                    f"(an unquoted delimiter or line break in a text?)",
                )
            label: Any = None
            if label_idx is not None:
                cell = record[label_idx]
                if sep is not None and sep in cell:
                    reader.sep_seen = True
                label = reader.parse_label(row, cell, from_cell=True)
            yield row, [record[i] for i in text_idx], label


def _read_folder(reader: _Reader) -> None:
    """``root/<label>/*.txt``: one document per file, the folder name is the label."""
    root = reader.path
    stray = [p.name for p in root.iterdir() if p.is_file()]
    if stray:
        log.warning("%s: ignoring %d file(s) outside the class folders", root, len(stray))
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise CorpusError(f"{root}: no class folders (expected {root}/<label>/*.txt)")
    n = 0
    for d in class_dirs:
        files = sorted(p for p in d.iterdir() if p.is_file() and p.suffix == ".txt")
        if not files:
            log.warning("%s: no .txt files; class %r has no documents", d, d.name)
        for p in files:
            n += 1
            with open_text(p) as f:
                text = f.read()
            # For a folder the record number is the file's place in sorted order;
            # log it with the path so errors can still be traced to a file.
            reader.add(n, [text], d.name if reader.label_column is not None else None)


#: Label values that usually mean "no label" in an exported table (compared lowercased).
MISSING_LIKE = frozenset({"", "nan", "none", "null", "na", "n/a", "nil", "undefined"})
#: A class with fewer training examples than this is reported.
MIN_CLASS_EXAMPLES = 5


def audit_labelled(
    texts: Sequence[str],
    labels: Sequence[Any],
    task: TaskKind,
    source: str = "training data",
    rows: Sequence[int] | None = None,
    valid_texts: Sequence[str] | None = None,
    valid_source: str = "validation data",
) -> list[str]:
    """What looks wrong in labelled data, one sentence each (empty: nothing).

    Labels that look like missing values (``nan``, ``None``, ``null``, empty ...), exact
    duplicate texts (and those with conflicting labels), classes with fewer than
    :data:`MIN_CLASS_EXAMPLES` examples, and training texts that are also in
    ``valid_texts``.
    """

    def line(i: int) -> str:
        return f"line {rows[i]}" if rows is not None else f"row {i + 1}"

    problems = []
    per_doc = [_label_names(lab, task) for lab in labels]
    missing: Counter[str] = Counter()
    first_missing = None
    for i, labs in enumerate(per_doc):
        for lab in labs:
            if str(lab).strip().lower() in MISSING_LIKE:
                missing[str(lab)] += 1
                first_missing = i if first_missing is None else first_missing
    if first_missing is not None:
        shown = ", ".join(f"{v!r} x{n}" for v, n in missing.most_common(5))
        problems.append(
            f"{source}: {sum(missing.values())} label(s) look like missing values ({shown}; "
            f"first at {line(first_missing)}); they would be learned as a class"
        )
    seen: dict[str, int] = {}
    n_dup = n_conflict = 0
    first_pair = None
    for i, text in enumerate(texts):
        j = seen.setdefault(text, i)
        if j != i:
            n_dup += 1
            first_pair = first_pair or (j, i)
            if sorted(per_doc[i]) != sorted(per_doc[j]):
                n_conflict += 1
    if first_pair is not None:
        conflict = f", {n_conflict} with a different label," if n_conflict else ""
        problems.append(
            f"{source}: {n_dup} exact duplicate text(s){conflict} (first: {line(first_pair[1])} "
            f"repeats {line(first_pair[0])}); copies are kept on one side of the "
            "train/validation split"
        )
    counts = Counter(lab for labs in per_doc for lab in labs)
    small = sorted((n, c) for c, n in counts.items() if n < MIN_CLASS_EXAMPLES)
    if small:
        shown = ", ".join(f"{c!r} ({n})" for n, c in small[:8])
        more = f" and {len(small) - 8} more" if len(small) > 8 else ""
        problems.append(
            f"{source}: {len(small)} class(es) with fewer than {MIN_CLASS_EXAMPLES} examples: "
            f"{shown}{more}"
        )
    if valid_texts:
        held_out = set(valid_texts)
        both = sum(1 for t in seen if t in held_out)
        if both:
            problems.append(
                f"{source}: {both} text(s) also appear in {valid_source}; validation scores "
                "on them are inflated"
            )
    return problems


def report_problems(problems: Sequence[str], strict: bool) -> None:
    """Warn about each problem, or with ``strict`` refuse the data (naming them all)."""
    if problems and strict:
        raise CorpusError("suspicious data (strict mode refuses it): " + "; ".join(problems))
    for p in problems:
        log.warning("%s", p)


class LabelEncoder:
    """Label strings <-> indices (multiclass) or multi-hot rows (multilabel)."""

    def __init__(self, classes: Sequence[str], task: TaskKind) -> None:
        _check_flat_task(task)
        classes = [str(c) for c in classes]
        if not classes:
            raise ValueError("LabelEncoder needs at least one class")
        if len(set(classes)) != len(classes):
            dup = sorted({c for c in classes if classes.count(c) > 1})
            raise ValueError(f"LabelEncoder: repeated class names {dup}")
        self.classes: list[str] = classes
        self.task: TaskKind = task
        self._index = {c: i for i, c in enumerate(classes)}

    @classmethod
    def fit(cls, labels: Sequence[Any], task: TaskKind) -> LabelEncoder:
        """The sorted set of labels seen in ``labels``."""
        _check_flat_task(task)
        seen: set[str] = set()
        for i, lab in enumerate(labels):
            if task == "multiclass":
                if not isinstance(lab, str):
                    raise ValueError(f"row {i + 1}: multiclass label must be a string, got {lab!r}")
                seen.add(lab)
            else:
                if isinstance(lab, str):
                    raise ValueError(f"row {i + 1}: multilabel labels must be a list, got {lab!r}")
                seen.update(lab)
        if not seen:
            raise ValueError("LabelEncoder.fit: no labels at all")
        return cls(sorted(seen), task)

    def __len__(self) -> int:
        return len(self.classes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LabelEncoder):
            return NotImplemented
        return self.classes == other.classes and self.task == other.task

    __hash__ = None  # type: ignore[assignment]  # mutable-looking value object

    def __repr__(self) -> str:
        return f"LabelEncoder({self.task}, {len(self)} classes: {_shown(self.classes)})"

    def _unknown(self, label: Any, i: int, rows: Sequence[int] | None, source: str) -> CorpusError:
        where = _where(source, rows[i]) if rows is not None else _where(source, None)
        where = f"{where}: " if where else ""
        if rows is None:
            where += f"row {i + 1}: "
        return CorpusError(
            f"{where}label {label!r} was not among the training labels "
            f"(known: {_shown(self.classes)})"
        )

    def encode(
        self, labels: Sequence[Any], rows: Sequence[int] | None = None, source: str = ""
    ) -> np.ndarray:
        """int64 ``(N,)`` class indices, or float32 ``(N, C)`` multi-hot rows.

        ``rows`` (line numbers) and ``source`` only make error messages point at the file.
        """
        if rows is not None and len(rows) != len(labels):
            raise ValueError(f"encode: {len(labels)} labels but {len(rows)} row numbers")
        index = self._index
        if self.task == "multiclass":
            out = np.empty(len(labels), dtype=np.int64)
            for i, lab in enumerate(labels):
                j = index.get(lab) if isinstance(lab, str) else None
                if j is None:
                    raise self._unknown(lab, i, rows, source)
                out[i] = j
            return out
        hot = np.zeros((len(labels), len(self.classes)), dtype=np.float32)
        for i, labs in enumerate(labels):
            if isinstance(labs, str):
                raise self._unknown(labs, i, rows, source)
            for lab in labs:
                j = index.get(lab)
                if j is None:
                    raise self._unknown(lab, i, rows, source)
                hot[i, j] = 1.0
        return hot

    def decode(self, encoded: np.ndarray | Sequence[Any]) -> list[Any]:
        """Class names from indices ``(N,)``, or lists of names from multi-hot ``(N, C)``."""
        arr = np.asarray(encoded)
        if self.task == "multiclass":
            if arr.ndim != 1:
                raise ValueError(f"decode: multiclass expects (N,) indices, got shape {arr.shape}")
            return [self.classes[int(i)] for i in arr]
        if arr.ndim != 2 or arr.shape[1] != len(self.classes):
            raise ValueError(
                f"decode: multilabel expects (N, {len(self.classes)}) rows, got shape {arr.shape}"
            )
        return [[self.classes[j] for j in np.flatnonzero(row)] for row in arr]

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "classes": list(self.classes)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelEncoder:
        return cls(list(d["classes"]), d["task"])


def stratified_split(
    labels: Sequence[Any],
    valid_frac: float,
    seed: int,
    task: TaskKind,
    groups: Sequence[Hashable] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, valid) index arrays, each sorted; stratified by class if multiclass.

    Falls back to a plain random split (logged) when stratifying is impossible: a
    class with one member, or fewer validation rows than classes. Rows with equal
    ``groups`` (e.g. the same text) land on the same side, so that a duplicate in
    validation never scores a document the model was trained on.
    """
    _check_flat_task(task)
    if groups is not None:
        if len(groups) != len(labels):
            raise ValueError(f"stratified_split: {len(labels)} labels but {len(groups)} groups")
        first: dict[Hashable, int] = {}
        owner = np.array([first.setdefault(g, i) for i, g in enumerate(groups)])
        reps = np.flatnonzero(owner == np.arange(len(owner)))
        if len(reps) < len(owner):
            _, va = stratified_split([labels[int(i)] for i in reps], valid_frac, seed, task)
            in_valid = np.zeros(len(owner), dtype=bool)
            in_valid[reps[va]] = True
            in_valid = in_valid[owner]  # each row follows its group's first row
            return np.flatnonzero(~in_valid), np.flatnonzero(in_valid)
    return _split(labels, valid_frac, seed, task)


def _split(
    labels: Sequence[Any], valid_frac: float, seed: int, task: TaskKind
) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    if not 0.0 < valid_frac < 1.0:
        raise ValueError(f"valid_frac must be in (0, 1), got {valid_frac}")
    n = len(labels)
    if n < 2:
        raise ValueError(f"cannot split {n} document(s) into train and validation")
    idx = np.arange(n)
    state = seed % 2**32
    if task == "multiclass":
        _, counts = np.unique(np.asarray(labels, dtype=object).astype(str), return_counts=True)
        if counts.min() >= 2:
            try:
                tr, va = train_test_split(
                    idx, test_size=valid_frac, random_state=state, stratify=list(labels)
                )
                return np.sort(tr), np.sort(va)
            except ValueError as e:  # e.g. the validation set is smaller than the class count
                log.warning("stratified split impossible (%s); splitting at random", e)
        else:
            log.warning("a class has a single document: splitting at random, not stratified")
    tr, va = train_test_split(idx, test_size=valid_frac, random_state=state)
    return np.sort(tr), np.sort(va)


class ClsBatch(NamedTuple):
    x: Tensor  # (B, T) int64 ids, right-padded with pad_id
    lengths: Tensor  # (B,) real tokens per row, >= 1
    y: Tensor | None  # (B,) int64 classes or (B, C) float32 multi-hot; None if unlabelled
    # (B,) positions of these documents in the input. The name shadows tuple.index,
    # which mypy flags; it is kept because callers read ``batch.index``.
    index: np.ndarray  # type: ignore[assignment]


class ClassificationBatches:
    """Length-sorted, right-padded batches of numericalised documents.

    ``batches(epoch)`` is a pure function of ``(seed, epoch)``. In training, a lone
    leftover document joins the previous batch: the head's BatchNorm cannot train on
    a batch of one. Documents are never truncated (the model reads long ones in
    BPTT-sized chunks).
    """

    chunk_batches = 50  # sortish: sort within chunks of bs * 50 documents

    def __init__(
        self,
        docs: Sequence[np.ndarray],
        targets: np.ndarray | None,
        bs: int,
        train: bool,
        seed: int = 0,
        pad_id: int = 1,
        device: torch.device | str | None = None,
    ) -> None:
        if bs < 1:
            raise ValueError(f"ClassificationBatches: bs must be >= 1, got {bs}")
        if targets is not None and len(targets) != len(docs):
            raise ValueError(f"ClassificationBatches: {len(docs)} docs but {len(targets)} targets")
        self.docs = docs
        self.targets = targets
        self.bs = bs
        self.train = train
        self.seed = seed
        self.pad_id = pad_id
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch that ``iter(self)`` uses (``batches(epoch)`` takes it directly)."""
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.docs)
        n_batches = math.ceil(n / self.bs)
        if self.train and n > 1 and n % self.bs == 1:
            n_batches -= 1  # the lone leftover is merged
        return n_batches

    def __iter__(self) -> Iterator[ClsBatch]:
        return self.batches(self.epoch)

    def order(self, epoch: int = 0) -> list[np.ndarray]:
        """The document indices of each batch, in the order they are served."""
        n = len(self.docs)
        if n == 0:
            return []
        lengths = self.lengths
        if not self.train:
            srt = np.argsort(-lengths, kind="stable")
            return [srt[i : i + self.bs] for i in range(0, n, self.bs)]
        rng = np.random.default_rng([self.seed % 2**63, epoch])
        perm = rng.permutation(n)
        chunk = self.bs * self.chunk_batches
        groups: list[np.ndarray] = []
        for c in range(0, n, chunk):
            part = perm[c : c + chunk]
            part = part[np.argsort(-lengths[part], kind="stable")]
            groups.extend(part[i : i + self.bs] for i in range(0, len(part), self.bs))
        if len(groups) > 1 and len(groups[-1]) == 1:
            groups[-2:] = [np.concatenate(groups[-2:])]
        picks = rng.permutation(len(groups))
        groups = [groups[i] for i in picks]
        # The longest batch first: if it does not fit in memory, fail in the first step.
        first = int(np.argmax([lengths[g].max() for g in groups]))
        groups.insert(0, groups.pop(first))
        return groups

    def batches(self, epoch: int = 0) -> Iterator[ClsBatch]:
        """The batches of one epoch (training: sortish-shuffled; else longest first)."""
        for idx in self.order(epoch):
            yield self.collate(idx)

    def collate(self, idx: np.ndarray) -> ClsBatch:
        """Right-pad documents ``idx`` into one batch."""
        lens = np.maximum(self.lengths[idx], 1)  # an empty doc reads as one pad token
        x = np.full((len(idx), int(lens.max())), self.pad_id, dtype=np.int64)
        for row, i in enumerate(idx):
            doc = self.docs[i]
            x[row, : len(doc)] = doc
        y = None
        if self.targets is not None:
            y = self._to_device(torch.from_numpy(np.ascontiguousarray(self.targets[idx])))
        return ClsBatch(
            self._to_device(torch.from_numpy(x)),
            self._to_device(torch.from_numpy(lens)),
            y,
            np.asarray(idx, dtype=np.int64),
        )

    def _to_device(self, t: Tensor) -> Tensor:
        # A copy from pageable memory waits for the GPU to finish its queue first; from
        # pinned memory it is queued, so the next batch is built while this one trains.
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)


__all__ = [
    "ClassificationBatches",
    "ClsBatch",
    "CorpusError",
    "LabelEncoder",
    "LabelledTexts",
    "TaskKind",
    "detect_format",
    "iter_texts",
    "read_labelled",
    "stratified_split",
]
