"""A tiny classifier whose right answer is known: random filler words with one keyword
inside, and the label says which keyword. Trained in a few seconds, no LM needed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ulmfit.checkpoint import write_dir_atomically
from ulmfit.data.classification import ClassificationBatches, LabelEncoder, TaskKind
from ulmfit.models.awd_lstm import AWDLSTMConfig, AWDLSTMLanguageModel
from ulmfit.models.classifier import ClassifierConfig, TextClassifierModel
from ulmfit.models.io import write_lm_files
from ulmfit.tasks.classify import ClassifierTrainConfig, TextClassifier
from ulmfit.text.tokenize import SPECIAL_TOKENS, TokenizerConfig
from ulmfit.text.vocab import Vocab

FILLER = [
    *("the", "a", "movie", "film", "plot", "actor", "scene"),
    *("story", "it", "was", "and", "very", "really"),
]


def make_texts(n: int, seed: int) -> tuple[list[str], list[str]]:
    """Random filler with 'good' / 'bad' somewhere inside: the label is which one."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(n):
        label = "pos" if i % 2 else "neg"
        words = list(rng.choice(FILLER, size=int(rng.integers(2, 20))))
        words.insert(int(rng.integers(0, len(words) + 1)), "good" if label == "pos" else "bad")
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


def make_multilabel(n: int, seed: int) -> tuple[list[str], list[list[str]]]:
    """Random filler with any of 'good' and 'bad' inside (both, one or none): the labels
    are the keywords present."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(n):
        words = list(rng.choice(FILLER, size=int(rng.integers(2, 20))))
        present = [k for k, bit in (("good", 1), ("bad", 2)) if (i % 4) & bit]
        for k in present:
            words.insert(int(rng.integers(0, len(words) + 1)), k)
        texts.append(" ".join(words))
        labels.append(present)
    return texts, labels


def train_tiny(max_len: int = 24, epochs: int = 8, task: TaskKind = "multiclass") -> TextClassifier:
    """The good/bad classifier (AWD-LSTM 16/32x2); ``max_len`` small, so that ordinary
    test documents take the BPT3C prefix path. ``multilabel``: labels ``good`` / ``bad``
    for the keywords present."""
    torch.manual_seed(0)
    vocab = Vocab([*SPECIAL_TOKENS, *FILLER, "good", "bad"])
    enc = AWDLSTMConfig(vocab_size=len(vocab), emb_size=16, hidden_size=32, n_layers=2)
    enc = enc.replace(drop_mult=0.0)
    config = ClassifierConfig(n_classes=2, bptt=8, max_len=max_len, encoder=enc, task=task)
    model = TextClassifierModel(config)
    clf = TextClassifier(None, ClassifierTrainConfig(device="cpu", task=task))
    clf.model, clf.vocab, clf.tokenizer_config = model, vocab, TokenizerConfig()
    texts: list[str]
    labels: list[Any]
    if task == "multiclass":
        clf.labels = LabelEncoder.fit(["neg", "pos"], "multiclass")
        texts, labels = make_texts(256, seed=1)
        loss_fn: Any = nn.functional.cross_entropy
    else:
        clf.labels = LabelEncoder.fit([["bad"], ["good"]], "multilabel")
        texts, labels = make_multilabel(256, seed=1)
        loss_fn = nn.functional.binary_cross_entropy_with_logits
    batches = ClassificationBatches(
        clf.numericalize(texts), clf.labels.encode(labels), 32, train=True, seed=0
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for epoch in range(epochs):
        for b in batches.batches(epoch):
            assert b.y is not None
            loss = loss_fn(model(b.x, b.lengths).logits, b.y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return clf


def write_toy_lm(out: Path, words: Sequence[str]) -> Path:
    """An untrained 2-layer LM (16/24) over ``words``, written to ``out``: stage 3's
    mechanics from a language-model directory in about a second."""
    torch.manual_seed(0)
    vocab = Vocab([*SPECIAL_TOKENS, *words])
    lm = AWDLSTMLanguageModel(
        AWDLSTMConfig(vocab_size=len(vocab), emb_size=16, hidden_size=24, n_layers=2)
    )
    return write_dir_atomically(out, lambda d: write_lm_files(d, lm, vocab, TokenizerConfig()))
