"""AWD-LSTM (Merity et al. 2017) as used by ULMFiT: encoder and tied language model.

Recurrent state is passed in and returned, never kept on the module: a caller that
carries it across batches (BPTT over a stream, BPT3C over a long document) owns it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ulmfit.models.dropout import LockedDropout, WeightDropLSTM, WordEmbedding

#: One ``(h, c)`` pair per layer, each ``(1, B, H_l)``.
State = tuple[tuple[Tensor, Tensor], ...]


@dataclass(frozen=True)
class AWDLSTMConfig:
    """Sizes and dropouts of an AWD-LSTM. The defaults are ULMFiT's language model.

    Each dropout probability is multiplied by ``drop_mult`` (ULMFiT's one knob).
    """

    vocab_size: int = 0  # 0: set from the vocabulary when the model is built
    emb_size: int = 400  # embedding size (also the last LSTM layer's, for tying)
    hidden_size: int = 1152  # hidden size of the other LSTM layers
    n_layers: int = 3  # stacked LSTM layers
    pad_id: int = 1  # id of xxpad
    tie_weights: bool = True  # decoder weight = embedding matrix (one tensor)
    input_p: float = 0.25  # locked dropout on the embedding output
    embed_p: float = 0.02  # whole-word dropout on the embedding matrix
    weight_p: float = 0.2  # DropConnect on each layer's hidden-to-hidden weights
    hidden_p: float = 0.15  # locked dropout between LSTM layers
    output_p: float = 0.1  # locked dropout on the last layer's output (LM head input)
    drop_mult: float = 1.0  # multiplies every dropout probability above

    def __post_init__(self) -> None:
        if self.vocab_size < 0:
            raise ValueError(f"AWDLSTMConfig.vocab_size must be >= 0, got {self.vocab_size}")
        for name in ("emb_size", "hidden_size", "n_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"AWDLSTMConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("input_p", "embed_p", "weight_p", "hidden_p", "output_p"):
            p = getattr(self, name) * self.drop_mult
            if not 0.0 <= p < 1.0:
                raise ValueError(f"AWDLSTMConfig.{name} * drop_mult must be in [0, 1), got {p:.3f}")
        if self.drop_mult < 0:
            raise ValueError(f"AWDLSTMConfig.drop_mult must be >= 0, got {self.drop_mult}")

    def p(self, name: str) -> float:
        """The effective probability of dropout ``name`` after ``drop_mult``."""
        return float(getattr(self, name)) * self.drop_mult

    def layer_sizes(self) -> list[tuple[int, int]]:
        """``(input, hidden)`` per layer; the last layer returns to ``emb_size`` (for tying)."""
        sizes = []
        for i in range(self.n_layers):
            n_in = self.emb_size if i == 0 else self.hidden_size
            n_out = self.emb_size if i == self.n_layers - 1 else self.hidden_size
            sizes.append((n_in, n_out))
        return sizes

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AWDLSTMConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"AWDLSTMConfig: unknown field(s) {sorted(unknown)}")
        return cls(**d)

    def replace(self, **changes: Any) -> AWDLSTMConfig:
        return dataclasses.replace(self, **changes)


class EncoderOutput(NamedTuple):
    """What the encoder returns for a batch ``(B, T)``."""

    output: Tensor  # (B, T, E) last layer, after output dropout
    raw_output: Tensor  # (B, T, E) last layer, before output dropout (for TAR)
    state: State


class AWDLSTMEncoder(nn.Module):
    """Embedding -> [locked dropout -> weight-dropped LSTM] x n_layers -> locked dropout."""

    def __init__(self, config: AWDLSTMConfig) -> None:
        super().__init__()
        if config.vocab_size < 1:
            raise ValueError("AWDLSTMConfig.vocab_size must be set (>= 1) to build a model")
        self.config = config
        self.embedding = WordEmbedding(
            config.vocab_size, config.emb_size, config.pad_id, config.p("embed_p")
        )
        self.input_dp = LockedDropout(config.p("input_p"))
        self.rnns = nn.ModuleList(
            WeightDropLSTM(n_in, n_out, config.p("weight_p"))
            for n_in, n_out in config.layer_sizes()
        )
        # Dropout after every layer but the last: the last layer's is `output_dp`.
        self.hidden_dps = nn.ModuleList(
            LockedDropout(config.p("hidden_p")) for _ in range(config.n_layers - 1)
        )
        self.output_dp = LockedDropout(config.p("output_p"))

    def init_state(self, batch_size: int) -> State:
        """Zero state for ``batch_size`` sequences, on the encoder's device and dtype."""
        w = self.embedding.weight
        sizes = [n_out for _, n_out in self.config.layer_sizes()]
        return tuple((w.new_zeros(1, batch_size, n), w.new_zeros(1, batch_size, n)) for n in sizes)

    def forward(self, ids: Tensor, state: State | None = None) -> EncoderOutput:
        """``ids`` is ``(B, T)``; ``state`` defaults to zeros. Returns outputs and new state."""
        x = self.input_dp(self.embedding(ids))  # (B, T, E)
        new_state = []
        for i, rnn in enumerate(self.rnns):
            x, layer_state = rnn(x, None if state is None else state[i])  # (B, T, H_i)
            new_state.append(layer_state)
            if i < len(self.hidden_dps):
                x = self.hidden_dps[i](x)
        return EncoderOutput(self.output_dp(x), x, tuple(new_state))


def detach_state(state: State) -> State:
    """Cut the graph between batches (truncated BPTT) while keeping the values."""
    return tuple((h.detach(), c.detach()) for h, c in state)


class LMOutput(NamedTuple):
    logits: Tensor  # (B, T, V)
    output: Tensor  # (B, T, E) dropped last-layer output (for AR)
    raw_output: Tensor  # (B, T, E) last-layer output before dropout (for TAR)
    state: State


class AWDLSTMLanguageModel(nn.Module):
    """The encoder plus a linear decoder to the vocabulary, its weight tied to the embedding."""

    def __init__(self, config: AWDLSTMConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = AWDLSTMEncoder(config)
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

        One group per LSTM layer, then the embedding with the decoder. With tied weights
        the embedding *is* the decoder's weight, so it sits in the top group (as in
        fastai's LM split): new words from vocabulary transfer learn at the full rate.
        """
        groups: list[list[nn.Parameter]] = [list(rnn.parameters()) for rnn in self.encoder.rnns]
        top = list(self.encoder.embedding.parameters())
        seen = {id(p) for p in top}
        top += [p for p in self.decoder.parameters() if id(p) not in seen]
        groups.append(top)
        return groups


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
