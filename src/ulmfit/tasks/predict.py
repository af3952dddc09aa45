"""Prediction and evaluation from files: streaming in, streaming out."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ulmfit.data.classification import iter_texts, read_labelled
from ulmfit.inference import num_threads
from ulmfit.tasks import metrics as M
from ulmfit.tasks.classify import TextClassifier, ensemble_predict_proba, ensemble_thresholds
from ulmfit.text.readers import strip_compression

log = logging.getLogger(__name__)


# Inference also takes .json (as JSONL), and any other suffix as plain text.
_INPUT_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}


def _fmt(path: Path) -> str:
    return _INPUT_FORMATS.get(Path(strip_compression(path.name).lower()).suffix, "txt")


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
) -> int:
    """Stream ``input_path`` through the classifier(s) into ``output_path`` (CSV or JSONL).

    ``quantize="int8"``: dynamic int8 on the CPU; ``threads``: torch CPU threads;
    ``bs``: documents per batch (default: twice the training batch size).
    """
    with num_threads(threads):
        clfs = [TextClassifier.load(d, device=device, quantize=quantize) for d in model_dirs]
        return _predict_file(
            clfs, input_path, output_path, text_column, chunk, threshold, top_k, bs
        )


def _predict_file(
    clfs: Sequence[TextClassifier],
    input_path: Path,
    output_path: Path,
    text_column: Sequence[str],
    chunk: int,
    threshold: float | None,
    top_k: int | None,
    bs: int | None,
) -> int:
    from tqdm.auto import tqdm

    if chunk < 1:
        raise ValueError(f"predict: chunk must be >= 1, got {chunk}")
    main = clfs[0]
    assert main.labels is not None
    classes = main.labels.classes
    # Multilabel: the given threshold, else the members' mean (multiclass ignores both).
    thresholds = threshold if threshold is not None else ensemble_thresholds(clfs)
    out_fmt = "jsonl" if output_path.suffix.lower() in (".jsonl", ".json") else "csv"
    output_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_path.with_name(f".{output_path.name}.tmp")
    n = 0
    try:
        with (
            open(tmp, "w", encoding="utf-8", newline="") as f,
            # disable=None: a bar on a terminal, none in a log file or a pipe.
            tqdm(unit="doc", desc="predict", disable=None) as bar,
        ):
            writer = None
            if out_fmt == "csv":
                writer = csv.writer(f)
                writer.writerow(["row", "label", *[f"p_{c}" for c in classes]])
            for texts in _chunks(iter_input_texts(input_path, text_column), chunk):
                probs = (
                    ensemble_predict_proba(clfs, texts, bs)
                    if len(clfs) > 1
                    else main.predict_proba(texts, bs)
                )
                labels = main.decide(probs, thresholds, top_k)
                for i, (lab, p) in enumerate(zip(labels, probs, strict=True)):
                    row = n + i + 1
                    if writer is not None:
                        shown = lab if isinstance(lab, str) else "|".join(lab)
                        writer.writerow([row, shown, *[f"{v:.6f}" for v in p]])
                    else:
                        rec = {
                            "row": row,
                            "label": lab,
                            "probs": {
                                c: round(float(v), 6) for c, v in zip(classes, p, strict=True)
                            },
                        }
                        f.write(json.dumps(rec) + "\n")
                n += len(texts)
                bar.update(len(texts))
        tmp.replace(output_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return n


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
) -> tuple[dict[str, Any], str]:
    """Metrics of one classifier (or the average of several) on a labelled file.

    ``quantize``, ``threads`` and ``bs`` as in :func:`predict_file`.
    """
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
    classes = main.labels.classes
    if task == "multiclass":
        metrics = M.multiclass_metrics(y, probs, classes)
        if plot is not None:
            M.plot_confusion(metrics["confusion_matrix"], classes, plot)
    else:
        metrics = M.multilabel_metrics(y, probs, ensemble_thresholds(clfs), classes)
        if plot is not None:
            M.plot_per_label(metrics, plot)
    metrics["models"] = [str(d) for d in model_dirs]
    if quantize is not None:
        metrics["quantize"] = quantize
    return metrics, M.format_report(metrics, task)
