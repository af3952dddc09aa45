"""Vocabulary transfer (ULMFiT stage 2): map pretrained rows onto a new vocabulary by string."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import Tensor

log = logging.getLogger(__name__)


def transfer_rows(
    old: Tensor, old_itos: Sequence[str], new_itos: Sequence[str]
) -> tuple[Tensor, int]:
    """Rows of ``old`` (indexed by ``old_itos``) rearranged for ``new_itos``.

    Works for a ``(V, E)`` embedding or a ``(V,)`` bias. A token the pretrained model
    knew keeps its row exactly; a new token starts at the mean row, a neutral point the
    fine-tuning moves from (as in ULMFiT). Returns the new tensor and the number of
    tokens found.
    """
    if old.size(0) != len(old_itos):
        raise ValueError(f"pretrained tensor has {old.size(0)} rows but vocab has {len(old_itos)}")
    old_index = {tok: i for i, tok in enumerate(old_itos)}
    src = torch.tensor([old_index.get(tok, -1) for tok in new_itos], dtype=torch.long)
    found = src >= 0
    mean = old.float().mean(0).to(old.dtype)
    new = mean.expand(len(new_itos), *old.shape[1:]).clone()
    new[found] = old[src[found]]
    return new, int(found.sum())


def transfer_lm_state(
    state: dict[str, Tensor],
    old_itos: Sequence[str],
    new_itos: Sequence[str],
    vocab_keys: Sequence[str] = ("encoder.embedding.weight", "decoder.bias", "decoder.weight"),
) -> dict[str, Tensor]:
    """A copy of an LM state dict whose vocabulary-indexed tensors follow ``new_itos``."""
    out = dict(state)
    n_found = 0
    for key in vocab_keys:
        if key in out:
            out[key], n_found = transfer_rows(out[key], old_itos, new_itos)
    coverage = n_found / max(len(new_itos), 1)
    log.info(
        "vocabulary transfer: %d of %d target tokens known to the pretrained model (%.1f%%)",
        n_found,
        len(new_itos),
        100 * coverage,
    )
    return out
