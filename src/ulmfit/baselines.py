"""What a user would pick instead of ULMFiT, trained and tuned on the same splits.

* :func:`tfidf_baseline`: TF-IDF word 1-2 grams + char 2-5 grams, logistic regression
  or a linear SVM, ``C`` chosen on the validation split.
* :func:`fasttext_baseline`: fastText supervised (bigrams), ``lr`` chosen on the validation
  split. Needs the optional ``fasttext-numpy2-wheel`` package (import name ``fasttext``).
* :func:`scratch_baseline`: the same AWD-LSTM classifier and recipe, started from a
  randomly initialised language model: what pretraining buys.

Each returns a :class:`BaselineResult`: predicted labels, the ``(N, C)`` scores behind
them, the chosen hyperparameters and the wall time. Multi-label thresholds are tuned on
the validation split with :func:`ulmfit.tasks.metrics.tune_thresholds` (probabilities)
or fixed at 0 (SVM decision values).
"""

from __future__ import annotations

import collections
import logging
import os
import re
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ulmfit.data.classification import LabelEncoder, TaskKind, stratified_split
from ulmfit.tasks import metrics as M

log = logging.getLogger(__name__)

Labels = Sequence[str] | Sequence[Sequence[str]]
Valid = tuple[Sequence[str], Labels]

LOGREG_C_GRID = (1.0, 4.0, 16.0, 64.0)
SVM_C_GRID = (0.1, 0.3, 1.0, 3.0)
FASTTEXT_LR_GRID = (0.1, 0.5, 1.0)
LONG_TEXT_TOKENS = 200  # mean tokens per document above which fastText gets 5 epochs, not 25


@dataclass
class BaselineResult:
    """Test-set output of one baseline system."""

    system: str
    task: TaskKind
    classes: list[str]  # column order of ``scores`` (the labels seen in training)
    predictions: list[Any]  # one label (multiclass) or a list of labels per test text
    scores: np.ndarray  # (N, C) probabilities, or SVM decision values
    thresholds: np.ndarray | None  # multilabel: per-label decision thresholds on ``scores``
    fit_s: float  # tuning and final fit, wall seconds
    predict_s: float  # test-set prediction, wall seconds
    params: dict[str, Any] = field(default_factory=dict)  # chosen hyperparameters
    model: Any = None  # the fitted model (vectoriser + estimator, fastText, TextClassifier)


# --------------------------------------------------------------------------- helpers


def restrict_labels(
    texts: Sequence[str], labels: Labels, known: Sequence[str], task: TaskKind
) -> tuple[list[str], list[Any]]:
    """Drop labels outside ``known`` (and multiclass documents carrying one).

    A validation split drawn from a subsampled training set can hold labels the model
    never saw; they cannot be scored during tuning, so they are removed (logged).
    """
    keep = set(known)
    out_t: list[str] = []
    out_l: list[Any] = []
    dropped = 0
    for t, y in zip(texts, labels, strict=True):
        if task == "multiclass":
            if y in keep:
                out_t.append(t)
                out_l.append(y)
            else:
                dropped += 1
        else:
            ys = [v for v in y if v in keep]
            dropped += len(y) - len(ys)
            out_t.append(t)
            out_l.append(ys)
    if dropped:
        log.info("validation: dropped %d label(s) not seen in training", dropped)
    return out_t, out_l


def align_columns(
    scores: np.ndarray,
    from_classes: Sequence[str],
    to_classes: Sequence[str],
    thresholds: np.ndarray | float | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Scores (and per-label thresholds) re-indexed to ``to_classes``.

    A class the model never saw gets a score below every real one and (multilabel) an
    infinite threshold: it is never predicted, so it counts as a miss, not an error.
    """
    index = {c: i for i, c in enumerate(from_classes)}
    target = set(to_classes)
    missing = [c for c in from_classes if c not in target]
    if missing:
        raise ValueError(f"align_columns: classes {missing[:5]} are not in the target list")
    low = float(np.min(scores)) - 1.0 if scores.size else -1.0
    out = np.full((scores.shape[0], len(to_classes)), low, dtype=np.float64)
    t_out = None if thresholds is None else np.full(len(to_classes), np.inf)
    t_in = None if thresholds is None else np.broadcast_to(thresholds, (len(from_classes),))
    for j, c in enumerate(to_classes):
        i = index.get(c)
        if i is None:
            continue
        out[:, j] = scores[:, i]
        if t_out is not None and t_in is not None:
            t_out[j] = t_in[i]
    return out, t_out


def _split_valid(
    texts: Sequence[str], labels: Labels, task: TaskKind, valid: Valid | None, seed: int
) -> tuple[list[str], list[Any], list[str], list[Any]]:
    """(train texts, train labels, valid texts, valid labels); valid carved if not given."""
    if valid is not None:
        return list(texts), list(labels), list(valid[0]), list(valid[1])
    tr, va = stratified_split(list(labels), 0.1, seed, task)
    return (
        [texts[i] for i in tr],
        [labels[i] for i in tr],
        [texts[i] for i in va],
        [labels[i] for i in va],
    )


def _valid_score(
    task: TaskKind, y: np.ndarray, scores: np.ndarray, prob: bool
) -> tuple[float, np.ndarray | None]:
    """Validation score to maximise (accuracy or micro-F1) and the tuned thresholds."""
    if task == "multiclass":
        return float((scores.argmax(1) == y).mean()), None
    if prob:
        thresholds, _ = M.tune_thresholds(y, scores)
    else:
        thresholds = np.zeros(scores.shape[1])
    pred = M.apply_thresholds(scores, thresholds)
    tp = float((pred & (y > 0)).sum())
    denom = float(pred.sum() + (y > 0).sum())
    return (2 * tp / denom if denom else 0.0), thresholds


def _decide(
    task: TaskKind, scores: np.ndarray, thresholds: np.ndarray | None, enc: LabelEncoder
) -> list[Any]:
    if task == "multiclass":
        return enc.decode(scores.argmax(1))
    assert thresholds is not None
    return enc.decode(M.apply_thresholds(scores, thresholds).astype(np.float32))


# --------------------------------------------------------------------------- TF-IDF


def _tfidf_features() -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion

    word = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    char = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2)
    return FeatureUnion([("word", word), ("char", char)])


def _linear_model(task: TaskKind, model: str, c: float) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.svm import LinearSVC

    if model == "svm":
        est: Any = LinearSVC(C=c)
    elif task == "multiclass":
        est = LogisticRegression(C=c, max_iter=2000)
    else:
        # One binary problem per label. liblinear's dual solver suits n-gram features
        # (far more features than documents): 2.5x faster than the primal on Reuters.
        est = LogisticRegression(C=c, max_iter=2000, solver="liblinear", dual=True)
    return OneVsRestClassifier(est) if task == "multilabel" else est


def _linear_scores(est: Any, x: Any, model: str) -> np.ndarray:
    if model == "svm":
        s = np.asarray(est.decision_function(x), dtype=np.float64)
        # Two classes: one signed margin for class 1; as two columns, argmax still works.
        return np.stack([-s, s], axis=1) if s.ndim == 1 else s
    return np.asarray(est.predict_proba(x), dtype=np.float64)


def _fit_quietly(est: Any, x: Any, y: np.ndarray) -> Any:
    from threadpoolctl import threadpool_limits

    # One BLAS thread: these sparse problems gain nothing from more, and on busy cores
    # OpenBLAS's spinning workers made lbfgs 5-7x slower (TREC-6: 13.6 s vs 1.8 s per C).
    with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings():
        # OneVsRest warns about labels absent from a (subsampled) training set, and
        # liblinear/LinearSVC about convergence at large C: neither changes the protocol.
        warnings.simplefilter("ignore", UserWarning)
        from sklearn.exceptions import ConvergenceWarning

        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(x, y)


def tfidf_baseline(
    train_texts: Sequence[str],
    train_labels: Labels,
    test_texts: Sequence[str],
    task: TaskKind,
    valid: Valid | None = None,
    model: Literal["logreg", "svm"] = "logreg",
    c_grid: Sequence[float] | None = None,
    refit: bool = True,
    seed: int = 0,
) -> BaselineResult:
    """TF-IDF (word 1-2 grams + char_wb 2-5 grams) with logistic regression or a linear SVM.

    ``C`` is chosen on ``valid`` (default: 10% of train, stratified) by accuracy or
    micro-F1; with ``refit`` the final model is trained on train + valid.
    """
    if model not in ("logreg", "svm"):
        raise ValueError(f"model must be 'logreg' or 'svm', got {model!r}")
    grid = tuple(c_grid or (SVM_C_GRID if model == "svm" else LOGREG_C_GRID))
    t0 = time.perf_counter()
    tr_x, tr_y, va_x, va_y = _split_valid(train_texts, train_labels, task, valid, seed)
    enc = LabelEncoder.fit(tr_y, task)
    va_x, va_y = restrict_labels(va_x, va_y, enc.classes, task)
    # Multi-label targets as the int indicator matrix scikit-learn expects.
    y_tr, y_va = (enc.encode(y).astype(np.int64) for y in (tr_y, va_y))
    feats = _tfidf_features()
    x_tr = feats.fit_transform(tr_x)
    x_va = feats.transform(va_x)
    best: tuple[float, float, np.ndarray | None] = (-1.0, grid[0], None)
    tried = {}
    for c in grid:
        est = _fit_quietly(_linear_model(task, model, c), x_tr, y_tr)
        score, thresholds = _valid_score(
            task, y_va, _linear_scores(est, x_va, model), model != "svm"
        )
        tried[c] = score
        log.info("tfidf-%s C=%g: validation %.4f", model, c, score)
        if score > best[0]:
            best = (score, c, thresholds)
    _, c_best, thresholds = best
    if refit:
        feats = _tfidf_features()
        x_all = feats.fit_transform(tr_x + va_x)
        est = _fit_quietly(_linear_model(task, model, c_best), x_all, np.concatenate([y_tr, y_va]))
    else:
        est = _fit_quietly(_linear_model(task, model, c_best), x_tr, y_tr)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores = _linear_scores(est, feats.transform(list(test_texts)), model)
    predictions = _decide(task, scores, thresholds, enc)
    predict_s = time.perf_counter() - t0
    return BaselineResult(
        system=f"tfidf-{model}",
        task=task,
        classes=list(enc.classes),
        predictions=predictions,
        scores=scores,
        thresholds=thresholds,
        fit_s=fit_s,
        predict_s=predict_s,
        params={"C": c_best, "valid": tried, "refit": refit},
        model=(feats, est),
    )


# --------------------------------------------------------------------------- fastText

_FT_TOKEN = re.compile(r"\w+|[^\w\s]")


def fasttext_tokens(text: str) -> str:
    """fastText's input line for ``text``: lowercased regex tokens joined by spaces."""
    return " ".join(_FT_TOKEN.findall(text.replace("<br />", " ").lower()))


def _import_fasttext() -> Any:
    try:
        import fasttext  # type: ignore[import-not-found,unused-ignore]
    except ImportError as e:
        raise ImportError(
            "fasttext_baseline needs the optional fastText package: "
            "pip install fasttext-numpy2-wheel (or: pip install 'ulmfit[baselines]')"
        ) from e
    return fasttext


def _ft_train(
    ft: Any,
    lines: list[str],
    lr: float,
    epochs: int,
    loss: str,
    word_ngrams: int,
    dim: int,
    threads: int,
    seed: int,
) -> Any:
    # fastText reads its input in file order and the dataset files are sorted by label:
    # unshuffled, it learns the last class best (IMDb: 28-39% error instead of ~10%).
    order = np.random.default_rng(seed).permutation(len(lines))
    fd, path = tempfile.mkstemp(prefix="ulmfit-fasttext-", suffix=".txt")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines(lines[i] + "\n" for i in order)
        return ft.train_supervised(
            input=path,
            lr=lr,
            epoch=epochs,
            wordNgrams=word_ngrams,
            dim=dim,
            loss=loss,
            thread=threads,
            seed=seed,
            verbose=0,
        )
    finally:
        Path(path).unlink(missing_ok=True)


def _ft_lines(texts: Sequence[str], labels: Sequence[Any], enc: LabelEncoder) -> list[str]:
    # Labels become their class index: class names may hold spaces or other characters
    # fastText would split on.
    index = {c: i for i, c in enumerate(enc.classes)}
    out = []
    for t, y in zip(texts, labels, strict=True):
        ys = [y] if isinstance(y, str) else list(y)
        tags = " ".join(f"__label__{index[v]}" for v in ys)
        out.append(f"{tags} {fasttext_tokens(t)}".strip())
    return out


def _ft_scores(model: Any, texts: Sequence[str], n_classes: int) -> np.ndarray:
    out = np.zeros((len(texts), n_classes), dtype=np.float64)
    if not texts:
        return out
    labels, probs = model.predict([fasttext_tokens(t) for t in texts], k=-1, threshold=0.0)
    for i, (labs, ps) in enumerate(zip(labels, probs, strict=True)):
        for lab, p in zip(labs, ps, strict=True):
            out[i, int(lab[len("__label__") :])] = p
    return out


def fasttext_baseline(
    train_texts: Sequence[str],
    train_labels: Labels,
    test_texts: Sequence[str],
    task: TaskKind,
    valid: Valid | None = None,
    lr_grid: Sequence[float] = FASTTEXT_LR_GRID,
    epochs: int | None = None,
    word_ngrams: int = 2,
    dim: int = 100,
    threads: int = 1,
    refit: bool = True,
    seed: int = 0,
) -> BaselineResult:
    """fastText supervised with bigrams; ``lr`` chosen on ``valid`` (default: 10% of train).

    ``epochs`` defaults to 25 for short texts and 5 for long ones (mean above
    ``LONG_TEXT_TOKENS`` tokens). Multi-label uses one-vs-all losses (``loss="ova"``) and
    per-label thresholds tuned on validation. One thread by default: with more, fastText's
    result changes from run to run.
    """
    ft = _import_fasttext()
    t0 = time.perf_counter()
    tr_x, tr_y, va_x, va_y = _split_valid(train_texts, train_labels, task, valid, seed)
    enc = LabelEncoder.fit(tr_y, task)
    va_x, va_y = restrict_labels(va_x, va_y, enc.classes, task)
    if epochs is None:
        sample = tr_x[:2000]
        mean_len = np.mean([len(_FT_TOKEN.findall(t)) for t in sample]) if sample else 0.0
        epochs = 5 if mean_len > LONG_TEXT_TOKENS else 25
    loss = "softmax" if task == "multiclass" else "ova"
    tr_lines = _ft_lines(tr_x, tr_y, enc)
    y_va = enc.encode(va_y)
    best: tuple[float, float, np.ndarray | None] = (-1.0, lr_grid[0], None)
    tried = {}
    for lr in lr_grid:
        m = _ft_train(ft, tr_lines, lr, epochs, loss, word_ngrams, dim, threads, seed)
        score, thresholds = _valid_score(task, y_va, _ft_scores(m, va_x, len(enc)), True)
        tried[lr] = score
        log.info("fasttext lr=%g: validation %.4f", lr, score)
        if score > best[0]:
            best = (score, lr, thresholds)
    _, lr_best, thresholds = best
    lines = tr_lines + _ft_lines(va_x, va_y, enc) if refit else tr_lines
    model = _ft_train(ft, lines, lr_best, epochs, loss, word_ngrams, dim, threads, seed)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores = _ft_scores(model, test_texts, len(enc))
    predictions = _decide(task, scores, thresholds, enc)
    predict_s = time.perf_counter() - t0
    return BaselineResult(
        system="fasttext",
        task=task,
        classes=list(enc.classes),
        predictions=predictions,
        scores=scores,
        thresholds=thresholds,
        fit_s=fit_s,
        predict_s=predict_s,
        params={"lr": lr_best, "epochs": epochs, "valid": tried, "refit": refit},
        model=model,
    )


# --------------------------------------------------------------------------- from scratch


def random_lm(
    out_dir: str | Path,
    texts: Sequence[str],
    like: str | Path | None = None,
    model_config: Any = None,
    max_vocab: int = 60000,
    min_freq: int = 2,
    seed: int = 42,
) -> Path:
    """Write an untrained AWD-LSTM language-model directory with a vocabulary from ``texts``.

    Sizes come from ``model_config`` (an ``AWDLSTMConfig``), else from the LM directory
    ``like``, else the defaults; the tokenizer is ``like``'s (else the default word one).
    """
    import torch

    from ulmfit.checkpoint import write_dir_atomically
    from ulmfit.models.awd_lstm import AWDLSTMConfig, AWDLSTMLanguageModel
    from ulmfit.models.io import load_lm, write_lm_files
    from ulmfit.text.tokenize import TokenizerConfig, get_tokenizer
    from ulmfit.text.vocab import Vocab

    tok_cfg, spm = TokenizerConfig(), None
    cfg = model_config
    if like is not None:
        ref = load_lm(like)
        tok_cfg, spm = ref.tokenizer, ref.spm_model
        cfg = cfg or ref.model.config
    cfg = cfg or AWDLSTMConfig()
    tok = get_tokenizer(tok_cfg, spm)
    if tok_cfg.kind in ("spm", "bytebpe"):
        vocab = Vocab(tok.itos())  # type: ignore[attr-defined]
    else:
        counts: collections.Counter[str] = collections.Counter()
        for tokens in tok.tokenize_many(texts):
            counts.update(tokens)
        vocab = Vocab.from_counts(counts, max_vocab, min_freq)
    torch.manual_seed(seed)
    model = AWDLSTMLanguageModel(cfg.replace(vocab_size=len(vocab), pad_id=vocab.pad_id))
    extra = {"stage": "random-init", "corpus_stats": {"vocab_docs": len(texts)}}
    return write_dir_atomically(
        Path(out_dir), lambda tmp: write_lm_files(tmp, model, vocab, tok_cfg, spm, extra)
    )


def scratch_baseline(
    train_texts: Sequence[str],
    train_labels: Labels,
    test_texts: Sequence[str],
    task: TaskKind,
    valid: Valid | None = None,
    like: str | Path | None = None,
    model_config: Any = None,
    classifier_config: Any = None,
    lm_dir: str | Path | None = None,
    max_vocab: int = 60000,
    min_freq: int = 2,
    log_dir: str | Path | None = None,
) -> BaselineResult:
    """The AWD-LSTM classifier trained from a random LM (no pretraining, no LM fine-tuning).

    The vocabulary comes from the training texts; sizes from ``model_config`` or the LM
    directory ``like``; the recipe is ``classifier_config`` (a ``ClassifierTrainConfig``,
    its ``task`` overridden by ``task``). ``lm_dir`` keeps the random LM (default: a
    temporary folder, removed after training).
    """
    from ulmfit.tasks.classify import ClassifierTrainConfig, TextClassifier

    clf_cfg = (classifier_config or ClassifierTrainConfig()).replace(task=task)
    t0 = time.perf_counter()
    if valid is not None:
        known = LabelEncoder.fit(list(train_labels), task).classes
        valid = restrict_labels(valid[0], valid[1], known, task)
    # The classifier copies the encoder out of the LM directory, so a temporary one will do.
    with tempfile.TemporaryDirectory(prefix="ulmfit-scratch-") as tmp:
        where = Path(lm_dir) if lm_dir is not None else Path(tmp) / "lm"
        seed = clf_cfg.train.seed
        random_lm(where, train_texts, like, model_config, max_vocab, min_freq, seed)
        clf = TextClassifier(where, clf_cfg).fit(train_texts, train_labels, valid, log_dir)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores = clf.predict_proba(test_texts).astype(np.float64)
    predictions = clf.decide(scores)
    predict_s = time.perf_counter() - t0
    assert clf.labels is not None
    return BaselineResult(
        system="scratch",
        task=task,
        classes=list(clf.labels.classes),
        predictions=predictions,
        scores=scores,
        thresholds=None if clf.thresholds is None else np.asarray(clf.thresholds),
        fit_s=fit_s,
        predict_s=predict_s,
        params={"vocab": len(clf.vocab or []), "encoder": clf.model.config.encoder.to_dict()}
        if clf.model is not None
        else {},
        model=clf,
    )


__all__ = [
    "FASTTEXT_LR_GRID",
    "LOGREG_C_GRID",
    "SVM_C_GRID",
    "BaselineResult",
    "align_columns",
    "fasttext_baseline",
    "fasttext_tokens",
    "random_lm",
    "restrict_labels",
    "scratch_baseline",
    "tfidf_baseline",
]
