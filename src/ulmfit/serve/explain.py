"""Why a label was chosen: each token's importance by integrated gradients.

Integrated gradients (Sundararajan et al. 2017) through Captum's ``IntegratedGradients``
over the token embeddings: the gradient of the label's logit with respect to them,
averaged along the straight line from a baseline document (the same length, every token
``xxpad``) to the real one, times the difference of the embeddings, summed over the
embedding dimensions. The importances add up to the logit's change from the baseline to
the document (completeness): Captum reports the gap as ``delta``, and the tests check it.

The backbone reads a document in chunks (and sorts, shrinks and windows its batches), so
the embeddings cannot simply be swapped in at one call. Instead each position gets its
own row: for the interpolated documents, the ids are ``0 .. steps * T`` (past the
specials) and the embedding weight, for that call only (``torch.func.functional_call``),
is those documents' embeddings stacked. Any reading then looks up exactly the
interpolated embedding of each position.

Tokens before the classifier's window (documents longer than ``max_len``) are read only
for the recurrent state, without gradients: their importance is 0 by construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from ulmfit.tasks.classify import TextClassifier


@dataclass(frozen=True)
class Explanation:
    """One document's tokens (in reading order) and their importance for ``label``."""

    label: str
    score: float  # the label's probability for the document
    tokens: list[str]
    importance: list[float]  # per token; positive: pushes towards the label
    delta: float  # completeness gap: sum(importance) - (logit(doc) - logit(baseline))

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "score": self.score,
            "tokens": [
                {"token": t, "importance": v}
                for t, v in zip(self.tokens, self.importance, strict=True)
            ],
            "method": "integrated gradients on the token embeddings (Captum), baseline xxpad",
            "convergence_delta": self.delta,
        }


def explain(
    clf: TextClassifier, text: str, label: str | None = None, steps: int = 32
) -> Explanation:
    """Token importances of ``text`` for ``label`` (default: the top label)."""
    from captum.attr import IntegratedGradients

    model = clf.model
    if model is None or clf.labels is None or clf.vocab is None:
        raise RuntimeError("this TextClassifier is not fitted: call fit() or load() first")
    if clf.quantized:
        raise ValueError("explain needs the float model: load the classifier without int8")
    classes = list(clf.labels.classes)
    probs = clf.predict_proba([text])[0]
    target = int(np.argmax(probs)) if label is None else _index(classes, label)
    tokens = list(clf._tok()(text))
    ids = clf.numericalize([text])[0]  # reversed for a backward model
    device = clf.device
    x = torch.as_tensor(ids, dtype=torch.long, device=device)
    T = x.numel()
    table = model.encoder.embedding.weight.detach()
    emb = table[x][None]  # (1, T, E): the document
    baseline = table[torch.full_like(x, model.config.encoder.pad_id)][None]
    first = model.config.encoder.pad_id + 1  # rows below are never looked up

    def logits(e: torch.Tensor) -> torch.Tensor:
        """Logits of documents given as embeddings ``(S, T, E)``."""
        S = e.size(0)
        weight = torch.cat([table[:first], e.reshape(S * T, -1)])
        pos = first + torch.arange(S * T, device=device).view(S, T)
        lengths = torch.full((S,), T, device=device)
        out = torch.func.functional_call(
            model, {"encoder.embedding.weight": weight}, (pos, lengths)
        )
        return out.logits

    was_training = model.training
    model.eval()
    try:
        # cuDNN's RNN backward runs only in training mode; the native kernel has no such rule.
        with torch.enable_grad(), torch.backends.cudnn.flags(enabled=False):
            attr, delta = IntegratedGradients(logits).attribute(
                emb,
                baselines=baseline,
                target=target,
                n_steps=steps,
                internal_batch_size=steps,
                return_convergence_delta=True,
            )
    finally:
        model.train(was_training)
    per_token = attr.sum(-1)[0].detach().float().cpu().numpy()
    if clf.config.backwards:
        per_token = per_token[::-1]
    return Explanation(
        label=classes[target],
        score=float(probs[target]),
        tokens=tokens,
        importance=[float(v) for v in per_token],
        delta=float(delta.abs().max()),
    )


def _index(classes: list[str], label: str) -> int:
    try:
        return classes.index(label)
    except ValueError:
        raise KeyError(f"unknown label {label!r}; the model's labels: {classes}") from None
