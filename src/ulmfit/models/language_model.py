"""The language model over any backbone: a tied decoder to the vocabulary, and its losses."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ulmfit.models.backbone import EncoderConfig, State, build_backbone


class LMOutput(NamedTuple):
    logits: Tensor  # (B, T, V)
    output: Tensor  # (B, T, E) dropped last-layer output (for AR)
    raw_output: Tensor  # (B, T, E) last-layer output before dropout (for TAR)
    state: State


class LanguageModel(nn.Module):
    """A backbone plus a linear decoder to the vocabulary, its weight tied to the embedding."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = build_backbone(config)
        self.decoder = nn.Linear(config.emb_size, config.vocab_size)
        if config.tie_weights:
            # One tensor, two uses (Press & Wolf 2017): saved once, updated once.
            self.decoder.weight = self.encoder.embedding.weight
        nn.init.zeros_(self.decoder.bias)

    def forward(self, ids: Tensor, state: State | None = None) -> LMOutput:
        enc = self.encoder(ids, state)
        logits = self.decoder(enc.output)  # (B, T, V)
        return LMOutput(logits, enc.output, enc.raw_output, enc.state)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Parameter groups for discriminative learning rates, lowest first.

        One group per layer, then the embedding with the decoder. With tied weights the
        embedding *is* the decoder's weight, so it sits in the top group (as in fastai's
        LM split): new words from vocabulary transfer learn at the full rate.
        """
        embedding, *layers = self.encoder.layer_groups()
        seen = {id(p) for p in embedding}
        return [*layers, embedding + [p for p in self.decoder.parameters() if id(p) not in seen]]


#: The language model's name before it took any backbone.
AWDLSTMLanguageModel = LanguageModel


def ar_tar_penalty(output: Tensor, raw_output: Tensor, alpha: float, beta: float) -> Tensor:
    """Activation regularisation (AR) and temporal AR (TAR) on the last layer.

    AR: ``alpha * mean(dropped_output ** 2)``; TAR: ``beta * mean((h_t - h_{t-1}) ** 2)``
    on the raw output. Both computed in float32 for stability under autocast.
    """
    penalty = output.new_zeros((), dtype=torch.float32)
    if alpha:
        penalty = penalty + alpha * output.float().pow(2).mean()
    if beta and raw_output.size(1) > 1:
        penalty = penalty + beta * (raw_output[:, 1:] - raw_output[:, :-1]).float().pow(2).mean()
    return penalty


def lm_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy over all positions; logits ``(B, T, V)``, targets ``(B, T)``.

    Under autocast, cross-entropy runs in float32 by itself: no full-size upcast here.
    """
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten().long())
