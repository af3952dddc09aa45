"""Prediction and evaluation from files: streaming in, streaming out."""

from __future__ import annotations

import csv
import itertools
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ulmfit.checkpoint import atomic_output, refuse_existing
from ulmfit.data.classification import iter_texts, read_labelled
from ulmfit.inference import num_threads
from ulmfit.tasks import metrics as M
from ulmfit.tasks.classify import TextClassifier, ensemble_predict_proba, ensemble_thresholds
from ulmfit.tasks.multitask import MultiTaskClassifier, is_multitask_dir
from ulmfit.text.readers import strip_compression

log = logging.getLogger(__name__)


# Formats by suffix, for the texts read and the predictions written. Inference also takes
# .json (as JSONL), and reads any other suffix as plain text; any other output suffix is
# refused.
FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}


def _fmt(path: Path) -> str:
    return FORMATS.get(Path(strip_compression(path.name).lower()).suffix, "txt")


def output_format(path: Path) -> str:
    """The format an output file's suffix asks for; any other suffix is refused by name."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"{path}: cannot write predictions as {path.suffix or 'a file without a suffix'!r}; "
            f"use one of {', '.join(FORMATS)}"
        )
    return fmt


def same_file(a: Path, b: Path) -> bool:
    """True if ``a`` and ``b`` name one file (links and relative paths included)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist yet
        return Path(a).resolve() == Path(b).resolve()


def check_outputs(inputs: Sequence[Path], outputs: Sequence[Path | None], overwrite: bool) -> None:
    """Refuse, before anything is read, an output that is one of the inputs, and an
    existing output unless ``overwrite``."""
    for out in outputs:
        if out is None:
            continue
        for src in inputs:
            if same_file(src, out):
                raise ValueError(
                    f"{out}: is also an input ({src}); writing it would destroy the input. "
                    "Choose another output file"
                )
        refuse_existing(out, overwrite)


def iter_input_texts(path: Path, text_column: Sequence[str]) -> Iterator[str]:
    """Every record's text in file order, empty ones included (they are predicted too).

    Records are read by the training reader's rules (:func:`iter_texts`); a bad one is a
    :class:`CorpusError` naming the file and line.
    """
    for _, text in iter_texts(path, text_column=list(text_column), fmt=_fmt(path)):
        yield text


def _chunks(it: Iterator[str], n: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for x in it:
        chunk.append(x)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def predict_file(
    model_dirs: Sequence[Path],
    input_path: Path,
    output_path: Path,
    text_column: Sequence[str] = ("text",),
    chunk: int = 2048,
    threshold: float | None = None,
    top_k: int | None = None,
    device: str = "auto",
    quantize: str | None = None,
    threads: int | None = None,
    bs: int | None = None,
    overwrite: bool = False,
    onnx: Path | None = None,
) -> int:
    """Stream ``input_path`` through the classifier(s) into ``output_path`` (CSV, TSV or
    JSONL, by suffix); return the number of documents.

    ``onnx``: the probabilities come from this graph (``export-onnx``) in ONNX Runtime;
    one model directory (its tokenizer, vocabulary and labels).

    ``quantize="int8"``: dynamic int8 on the CPU; ``threads``: torch CPU threads;
    ``bs``: documents per batch (default: twice the training batch size). The output
    appears whole when every document is predicted, never in part; an existing output
    is refused unless ``overwrite``, and an output that is the input always is.

    Under torchrun (``WORLD_SIZE`` > 1) the ranks share the work: rank r predicts chunks
    r, r + world_size, ... into a part file beside the output (a shared folder across
    machines), and rank 0 merges the parts in input order into the same output one
    process would write.
    """
    from ulmfit.training import distributed

    if chunk < 1:
        raise ValueError(f"predict: chunk must be >= 1, got {chunk}")
    output_format(output_path)
    if onnx is not None and (len(model_dirs) != 1 or quantize is not None):
        raise ValueError(
            "predict --onnx takes one model directory and no --int8 (export the "
            "graph with export-onnx --int8 instead)"
        )
    check_outputs([Path(input_path), *map(Path, model_dirs)], [output_path], overwrite)
    if is_multitask_dir(model_dirs[0]):
        if len(model_dirs) != 1 or onnx is not None or quantize is not None:
            raise ValueError(
                f"{model_dirs[0]}: a multi-task model predicts alone, in float32 "
                "(no ensemble, --int8 or --onnx yet)"
            )
        if threshold is not None or top_k is not None:
            raise ValueError(
                f"{model_dirs[0]}: --threshold and --top-k are for single-head models; a "
                "multi-task model decides with each head's own (tuned) rule"
            )
        with num_threads(threads):
            mt = MultiTaskClassifier.load(model_dirs[0], device=device)
            chunks = _chunks(iter_input_texts(input_path, text_column), chunk)
            n = _write_multitask(mt, chunks, output_path, overwrite, bs)
        if n == 0:
            log.warning("%s: no documents; %s has no predictions", input_path, output_path)
        return n
    info = distributed.init_from_env(device)
    device = distributed.device_for(info, device)
    with num_threads(threads):
        clfs: list[TextClassifier]
        if onnx is not None:
            from ulmfit.export_onnx import OnnxClassifier

            clfs = [OnnxClassifier.load_onnx(model_dirs[0], onnx, threads)]
        else:
            clfs = [TextClassifier.load(d, device=device, quantize=quantize) for d in model_dirs]
        chunks = _chunks(iter_input_texts(input_path, text_column), chunk)
        if info.world_size == 1:
            records = _predictions(clfs, enumerate(chunks), chunk, threshold, top_k, bs)
            n = _write(clfs[0], records, output_path, overwrite)
        else:
            n = _predict_sharded(clfs, chunks, output_path, chunk, threshold, top_k, bs, overwrite)
    if n == 0:
        log.warning("%s: no documents to predict; %s has no predictions", input_path, output_path)
    return n


Record = tuple[int, Any, list[float]]  # (row, label or labels, probabilities)


def _predictions(
    clfs: Sequence[TextClassifier],
    chunks: Iterator[tuple[int, list[str]]],
    chunk: int,
    threshold: float | None,
    top_k: int | None,
    bs: int | None,
) -> Iterator[Record]:
    """Each document's record, for the numbered chunks given (rows count from 1)."""
    from tqdm.auto import tqdm

    main = clfs[0]
    # Multilabel: the given threshold, else the members' mean (multiclass ignores both).
    thresholds = threshold if threshold is not None else ensemble_thresholds(clfs)
    # disable=None: a bar on a terminal, none in a log file or a pipe.
    with tqdm(unit="doc", desc="predict", disable=None) as bar:
        for c, texts in chunks:
            probs = (
                ensemble_predict_proba(clfs, texts, bs)
                if len(clfs) > 1
                else main.predict_proba(texts, bs)
            )
            labels = main.decide(probs, thresholds, top_k)
            for i, (lab, p) in enumerate(zip(labels, probs, strict=True)):
                yield c * chunk + i + 1, lab, [float(v) for v in p]
            bar.update(len(texts))


def _write(
    clf: TextClassifier, records: Iterator[Record], output_path: Path, overwrite: bool
) -> int:
    """Write ``records`` to ``output_path`` in its format, atomically; their number."""
    assert clf.labels is not None
    classes = clf.labels.classes
    out_fmt = output_format(output_path)
    n = 0
    with atomic_output(output_path, "w", overwrite=overwrite, newline="") as f:
        writer = None
        if out_fmt != "jsonl":
            writer = csv.writer(f, delimiter="\t" if out_fmt == "tsv" else ",")
            writer.writerow(["row", "label", *[f"p_{c}" for c in classes]])
        for row, lab, p in records:
            if writer is not None:
                shown = lab if isinstance(lab, str) else "|".join(lab)
                writer.writerow([row, shown, *[f"{v:.6f}" for v in p]])
            else:
                rec = {
                    "row": row,
                    "label": lab,
                    "probs": {c: round(v, 6) for c, v in zip(classes, p, strict=True)},
                }
                f.write(json.dumps(rec) + "\n")
            n += 1
    return n


def _write_multitask(
    mt: MultiTaskClassifier,
    chunks: Iterator[list[str]],
    output_path: Path,
    overwrite: bool,
    bs: int | None,
) -> int:
    """One column group per head: ``<head>`` (its decision) and ``<head>.p_<class>``
    (CSV/TSV), or ``{"row", "<head>": {"label", "probs"}}`` (JSONL); atomically."""
    out_fmt = output_format(output_path)
    names = mt.head_names
    n = 0
    with atomic_output(output_path, "w", overwrite=overwrite, newline="") as f:
        writer = None
        if out_fmt != "jsonl":
            writer = csv.writer(f, delimiter="\t" if out_fmt == "tsv" else ",")
            header = ["row"]
            for name in names:
                header += [name, *[f"{name}.p_{c}" for c in mt.labels[name].classes]]
            writer.writerow(header)
        for texts in chunks:
            probs = mt.predict_proba(texts, bs)
            decided = mt.decide(probs)
            for i in range(len(texts)):
                n += 1
                if writer is not None:
                    row: list[Any] = [n]
                    for name in names:
                        lab = decided[name][i]
                        row.append(lab if not isinstance(lab, list) else "|".join(lab))
                        row += [f"{v:.6f}" for v in probs[name][i]]
                    writer.writerow(row)
                else:
                    rec: dict[str, Any] = {"row": n}
                    for name in names:
                        classes = mt.labels[name].classes
                        rec[name] = {
                            "label": decided[name][i],
                            "probs": {
                                c: round(float(v), 6)
                                for c, v in zip(classes, probs[name][i], strict=True)
                            },
                        }
                    f.write(json.dumps(rec) + "\n")
    return n


def _part_path(output_path: Path, rank: int, world: int) -> Path:
    return output_path.parent / f".{output_path.name}.part{rank}of{world}.jsonl"


def _predict_sharded(
    clfs: Sequence[TextClassifier],
    chunks: Iterator[list[str]],
    output_path: Path,
    chunk: int,
    threshold: float | None,
    top_k: int | None,
    bs: int | None,
    overwrite: bool,
) -> int:
    """This rank's share into its part file; then rank 0 merges the parts in input order."""
    import torch.distributed as dist

    from ulmfit.training import distributed

    info = distributed.current()
    rank, world = info.rank, info.world_size
    mine = ((c, t) for c, t in enumerate(chunks) if c % world == rank)
    part = _part_path(output_path, rank, world)
    with atomic_output(part, "w", overwrite=True) as f:  # whole or absent
        for rec in _predictions(clfs, mine, chunk, threshold, top_k, bs):
            f.write(json.dumps(rec) + "\n")
    dist.barrier()  # every part is written
    n = 0
    if rank == 0:
        parts = [_part_path(output_path, r, world) for r in range(world)]
        try:
            n = _write(clfs[0], _merged(parts, chunk), output_path, overwrite)
        finally:
            for p in parts:
                p.unlink(missing_ok=True)
    dist.barrier()  # the output is complete before any rank returns
    return n


def _merged(parts: Sequence[Path], chunk: int) -> Iterator[Record]:
    """The parts' records in input order: chunk c is the next ``chunk`` lines of part
    ``c % len(parts)``. Row numbers are checked as they come."""
    files = [p.open(encoding="utf-8") for p in parts]
    try:
        expected = 1
        for c in itertools.count():
            got = 0
            for line in itertools.islice(files[c % len(files)], chunk):
                row, lab, probs = json.loads(line)
                if row != expected:
                    raise RuntimeError(f"{parts[c % len(parts)]}: row {row}, expected {expected}")
                yield row, lab, probs
                expected += 1
                got += 1
            if got < chunk:  # the last chunk: every other part is exhausted too
                leftover = [str(p) for p, f in zip(parts, files, strict=True) if f.readline()]
                if leftover:
                    raise RuntimeError(f"records left over in {leftover} after row {expected - 1}")
                return
    finally:
        for f in files:
            f.close()


def _evaluate_multitask(
    model_dirs: Sequence[Path],
    data: Path,
    text_column: Sequence[str],
    label_column: str,
    label_sep: str | None,
    plot: Path | None,
    device: str,
    heads: Sequence[str],
    threads: int | None,
) -> tuple[dict[str, Any], str]:
    """Each named head (``NAME`` reads ``label_column``, ``NAME=COLUMN`` its own column)
    scored on the file's texts from one encoder pass; a table per head."""
    if len(model_dirs) != 1:
        raise ValueError(f"{model_dirs[0]}: a multi-task model is evaluated alone")
    mt = MultiTaskClassifier.load(model_dirs[0], device=device)
    columns = {h.partition("=")[0]: h.partition("=")[2] or label_column for h in heads}
    unknown = [h for h in columns if h not in mt.heads]
    if not columns or unknown:
        raise ValueError(
            f"{model_dirs[0]}: say which head(s) the file's labels are for: --head NAME or "
            f"NAME=COLUMN, NAME one of {' | '.join(mt.head_names)}"
            + (f" (unknown: {', '.join(unknown)})" if unknown else "")
        )
    labels: dict[str, list[Any]] = {}
    texts: list[str] = []
    lines: list[int] = []
    for name, column in columns.items():
        kind = mt.heads[name].task
        rows = read_labelled(
            data,
            text_column=list(text_column),
            label_column=column,
            task=kind,  # type: ignore[arg-type]
            label_sep=label_sep,
            require_labels=False,  # a row without this head's label is left out of it
        )
        texts, lines = rows.texts, rows.rows
        labels[name] = [None if y in ("", []) else y for y in rows.labels or []]
    with num_threads(threads):  # a bad label fails before the model runs, naming its line
        metrics = mt.evaluate(texts, labels, source=str(data), lines=lines)
    tables = []
    for name, m in metrics.items():
        kind = mt.heads[name].task
        if plot is not None and len(metrics) == 1:
            mt.heads[name].plot(m, plot)
        elif plot is not None:
            mt.heads[name].plot(m, plot.with_name(f"{plot.stem}_{name}{plot.suffix}"))
        table = M.format_report(m, kind) if kind != "regression" else _regression_table(m)
        tables.append(f"head: {name}\n{table}")
    out: dict[str, Any] = {"heads": metrics, "models": [str(model_dirs[0])]}
    return out, "\n\n".join(tables)


def _regression_table(m: dict[str, Any]) -> str:
    return "\n".join(
        [f"documents: {m['n']}"]
        + [f"{k + ':':10s}{m[k]:.4f}" for k in ("mae", "rmse", "r2", "pearson", "spearman")]
    )


def evaluate_file(
    model_dirs: Sequence[Path],
    data: Path,
    text_column: Sequence[str] = ("text",),
    label_column: str = "label",
    label_sep: str | None = None,
    plot: Path | None = None,
    device: str = "auto",
    quantize: str | None = None,
    threads: int | None = None,
    bs: int | None = None,
    heads: Sequence[str] = (),
) -> tuple[dict[str, Any], str]:
    """Metrics of one classifier (or the average of several) on a labelled file.

    ``quantize``, ``threads`` and ``bs`` as in :func:`predict_file`; ``head``: which
    heads of a multi-task model the file's labels are for (``NAME`` or ``NAME=COLUMN``).
    """
    if is_multitask_dir(model_dirs[0]):
        if quantize is not None:
            raise ValueError(f"{model_dirs[0]}: a multi-task model is evaluated in float32")
        return _evaluate_multitask(
            model_dirs, data, text_column, label_column, label_sep, plot, device, heads, threads
        )
    if heads:
        raise ValueError(f"{model_dirs[0]}: --head is for multi-task models; this one has one")
    clfs = [TextClassifier.load(d, device=device, quantize=quantize) for d in model_dirs]
    main = clfs[0]
    assert main.labels is not None
    task = main.config.task
    rows = read_labelled(
        data,
        text_column=list(text_column),
        label_column=label_column,
        task=task,
        label_sep=label_sep,
    )
    y = main.labels.encode(rows.labels or [], rows=rows.rows, source=str(data))
    with num_threads(threads):
        probs = ensemble_predict_proba(clfs, rows.texts, bs)
    metrics = main.head.metrics(y, probs, ensemble_thresholds(clfs) if main.head.tuned else None)
    if plot is not None:
        main.head.plot(metrics, plot)
    metrics["models"] = [str(d) for d in model_dirs]
    if quantize is not None:
        metrics["quantize"] = quantize
    return metrics, M.format_report(metrics, task)
