"""The AWD-LSTM regularisers: embedding dropout, locked dropout and DropConnect.

Each is identity in eval mode. Random masks come from torch's global generator, so
a seeded run (and a resumed one, which restores the generator state) is reproducible.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def dropout_mask(like: Tensor, shape: tuple[int, ...], p: float) -> Tensor:
    """A Bernoulli(1 - p) mask scaled by 1/(1 - p), so expectations are unchanged.

    Drawn as ``uniform >= p``: on a CPU about twice as fast as ``bernoulli_`` (and
    ``F.dropout``), which matters for DropConnect's weight-sized masks, drawn every chunk.
    """
    keep = torch.rand(shape, device=like.device) >= p
    return keep.to(like.dtype).mul_(1.0 / (1.0 - p))


class WeightMask:
    """Where a module's dropped weight comes from: a fresh mask every call, or, while
    :func:`one_weight_mask_per_read` holds it, one mask for every call in the block.

    The dropped weight is kept once per grad mode, so a prefix read without gradients
    does not cut the gradient of the window read after it with the same mask.
    """

    def __init__(self) -> None:
        self.holding = False
        self._mask: Tensor | None = None
        self._dropped: dict[bool, Tensor] = {}

    def apply(self, weight: Tensor, shape: tuple[int, ...], p: float) -> Tensor:
        """``weight * mask``, the mask of ``shape`` broadcast over ``weight``."""
        if not self.holding:
            return weight * dropout_mask(weight, shape, p)
        grad = torch.is_grad_enabled()
        if grad not in self._dropped:
            if self._mask is None:
                self._mask = dropout_mask(weight, shape, p)
            self._dropped[grad] = weight * self._mask
        return self._dropped[grad]

    def release(self) -> None:
        self.holding, self._mask = False, None
        self._dropped.clear()


@contextmanager
def one_weight_mask_per_read(module: nn.Module) -> Iterator[None]:
    """Within the block, every DropConnect and embedding-dropout mask under ``module`` is
    drawn once and shared by all its calls.

    A document read in chunks (BPT3C) is one sequence: AWD-LSTM's DropConnect keeps its
    mask for a whole sequence (Merity et al. 2017), and embedding dropout drops a word in
    every place it occurs. It is also cheaper: those masks are weight-sized, and the
    dropped weight (vocabulary x embedding for the embedding) is computed once, not once
    per chunk. Nested blocks are fine: the outermost one releases the masks.
    """
    found = (getattr(m, "weight_mask", None) for m in module.modules())
    masks = [w for w in found if isinstance(w, WeightMask) and not w.holding]
    for mask in masks:
        mask.holding = True
    try:
        yield
    finally:
        for mask in masks:
            mask.release()


class LockedDropout(nn.Module):
    """Variational dropout: one mask per sequence, shared over all time steps.

    Input is batch-first ``(B, T, F)``; the mask is ``(B, 1, F)``.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        mask = dropout_mask(x, (x.size(0), 1, x.size(2)), self.p)  # (B, 1, F)
        return x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"


def embedding_dropout(
    weight: Tensor, p: float, training: bool, mask: WeightMask | None = None
) -> Tensor:
    """Drop whole words: zero entire rows of the embedding matrix (Gal & Ghahramani 2016).

    Every occurrence of a dropped word in the batch is dropped together.
    """
    if not training or p == 0.0:
        return weight
    return (mask or WeightMask()).apply(weight, (weight.size(0), 1), p)  # mask (V, 1)


class WordEmbedding(nn.Module):
    """An embedding table with whole-word dropout applied to its rows in training."""

    def __init__(self, vocab_size: int, emb_size: int, pad_id: int, embed_p: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(vocab_size, emb_size))
        self.pad_id = pad_id
        self.embed_p = embed_p
        self.weight_mask = WeightMask()
        nn.init.uniform_(self.weight, -0.1, 0.1)

    def forward(self, ids: Tensor) -> Tensor:
        weight = embedding_dropout(self.weight, self.embed_p, self.training, self.weight_mask)
        return F.embedding(ids, weight, self.pad_id)  # (B, T, E)

    def extra_repr(self) -> str:
        return f"{self.weight.size(0)}, {self.weight.size(1)}, embed_p={self.embed_p}"


class WeightDropLSTM(nn.Module):
    """A one-layer batch-first ``nn.LSTM`` with DropConnect on its hidden-to-hidden weights.

    The dropped weight is handed to the LSTM through ``torch.func.functional_call`` for
    this call only: the raw parameter stays the module's parameter (so the gradient
    reaches it through the dropout), nothing in PyTorch is patched, and on GPU the fused
    cuDNN kernel still runs because the LSTM sees an ordinary dense weight.
    """

    def __init__(self, input_size: int, hidden_size: int, weight_p: float) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers=1, batch_first=True)
        self.weight_p = weight_p
        self.weight_mask = WeightMask()

    @property
    def hidden_size(self) -> int:
        return self.lstm.hidden_size

    def forward(
        self, x: Tensor, state: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        if self.training and self.weight_p > 0.0:
            raw: Tensor = self.lstm.weight_hh_l0  # type: ignore[assignment]
            w_hh = self.weight_mask.apply(raw, tuple(raw.shape), self.weight_p)
            out, new_state = torch.func.functional_call(
                self.lstm, {"weight_hh_l0": w_hh}, (x, state)
            )
        else:
            out, new_state = self.lstm(x, state)
        return out, new_state

    def extra_repr(self) -> str:
        return f"weight_p={self.weight_p}"
