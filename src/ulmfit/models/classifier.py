"""ULMFiT's classifier: the AWD-LSTM encoder read with BPT3C, masked concat pooling, a small head.

BPT3C (back-propagation through time for text classification): a document is read in
chunks of ``bptt`` tokens with the LSTM state carried across chunks. Only the last
``max_len`` tokens of each document keep their outputs (for pooling) and gradients;
the tokens before them run under ``no_grad`` (in chunks of ``max_len``) just to produce
the state the window starts from. Memory therefore stays bounded by ``batch x max_len``
for any document length.

Batches are right-padded. Each row's prefix is packed to its own length, so its state
is exact; in the window, padding comes after the real tokens, so real outputs never
see it; pooling masks it. A document's prediction therefore does not depend on the
batch it sits in or on how much padding that batch needs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from ulmfit.models.awd_lstm import AWDLSTMConfig, AWDLSTMEncoder, State

TaskKind = Literal["multiclass", "multilabel"]

#: Encoder dropouts of ULMFiT's classifier (fastai's ``awd_lstm_clas_config``), before drop_mult.
CLASSIFIER_DROPOUTS = {"input_p": 0.4, "embed_p": 0.05, "weight_p": 0.5, "hidden_p": 0.3}


@dataclass(frozen=True)
class ClassifierConfig:
    """The head and the BPT3C reading of the encoder."""

    n_classes: int = 2
    task: TaskKind = "multiclass"  # multiclass (softmax) | multilabel (sigmoid per label)
    head_hidden: int = 50  # size of the hidden linear block
    head_ps: tuple[float, float] = (0.4, 0.1)  # head dropouts, scaled by the encoder's drop_mult
    bptt: int = 70  # tokens per BPT3C chunk
    max_len: int = 1400  # last tokens of a document that are pooled and back-propagated (20 x bptt)
    encoder: AWDLSTMConfig = field(default_factory=AWDLSTMConfig)

    def __post_init__(self) -> None:
        if self.n_classes < 1:
            raise ValueError(f"ClassifierConfig.n_classes must be >= 1, got {self.n_classes}")
        if self.task not in ("multiclass", "multilabel"):
            raise ValueError(
                f"ClassifierConfig.task must be multiclass|multilabel, got {self.task!r}"
            )
        if self.bptt < 1 or self.max_len < 1:
            raise ValueError("ClassifierConfig.bptt and max_len must be >= 1")
        object.__setattr__(self, "head_ps", tuple(self.head_ps))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClassifierConfig:
        d = dict(d)
        enc = AWDLSTMConfig.from_dict(d.pop("encoder"))
        return cls(encoder=enc, **d)


class ClassifierOutput(NamedTuple):
    logits: Tensor  # (B, C)
    pooled: Tensor  # (B, 3E) [last, max, mean] document vectors
    output: Tensor  # (B, W, E) window outputs after the encoder (for AR)
    raw_output: Tensor  # (B, W, E) same (the classifier's encoder has no output dropout)
    mask: Tensor  # (B, W) True on real tokens of the window


def masked_concat_pool(output: Tensor, lengths: Tensor) -> Tensor:
    """``[h_last, max_t h_t, mean_t h_t]`` over each row's real steps; ``output`` is right-padded.

    ``output`` is ``(B, W, E)`` and ``lengths`` ``(B,)`` (>= 1) counts real steps per row.
    """
    B, W, _ = output.shape
    mask = torch.arange(W, device=output.device)[None, :] < lengths[:, None]  # (B, W)
    last = output[torch.arange(B, device=output.device), lengths - 1]  # (B, E)
    neg = torch.finfo(output.dtype).min
    maxp = output.masked_fill(~mask[..., None], neg).max(1).values  # (B, E)
    meanp = (output * mask[..., None]).sum(1) / lengths[:, None].to(output.dtype)  # (B, E)
    return torch.cat([last, maxp, meanp], 1)  # (B, 3E)


class LinearBlock(nn.Sequential):
    """BatchNorm -> Dropout -> Linear (-> ReLU), one block of ULMFiT's head."""

    def __init__(self, n_in: int, n_out: int, p: float, relu: bool) -> None:
        layers: list[nn.Module] = [nn.BatchNorm1d(n_in), nn.Dropout(p), nn.Linear(n_in, n_out)]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class TextClassifierModel(nn.Module):
    """AWD-LSTM encoder + masked concat pooling + two linear blocks."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = AWDLSTMEncoder(config.encoder)
        emb = config.encoder.emb_size
        mult = config.encoder.drop_mult
        p0, p1 = (p * mult for p in config.head_ps)
        self.head = nn.Sequential(
            LinearBlock(3 * emb, config.head_hidden, p0, relu=True),
            LinearBlock(config.head_hidden, config.n_classes, p1, relu=False),
        )

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Embedding, each LSTM layer, the head: lowest first (for discriminative LR)."""
        groups = [list(self.encoder.embedding.parameters())]
        groups += [list(rnn.parameters()) for rnn in self.encoder.rnns]
        groups.append(list(self.head.parameters()))
        return groups

    def encode(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """BPT3C over a right-padded batch ``x (B, T)``; returns window outputs and lengths.

        The window of row ``i`` is its last ``min(len_i, max_len)`` tokens, left-aligned
        in a ``(B, W, E)`` tensor (W = the longest window in the batch).
        """
        lengths = lengths.clamp(min=1)
        max_len = self.config.max_len
        prefix = (lengths - max_len).clamp(min=0)  # (B,) tokens read without gradient
        state: State | None = None
        # Shapes come from x, not from lengths: reading a GPU tensor's value would stall
        # the host once per batch. No row is longer than x, so W bounds every window; a
        # wider x than needed only adds pad steps after the real ones, which the causal
        # LSTM and the masked pooling ignore.
        if x.size(1) > max_len:
            state = self._read_prefix(x, prefix)
        window = lengths - prefix  # (B,) in [1, max_len]
        W = min(x.size(1), max_len)
        # Gather each row's window to the left: positions prefix_i + j, j < W (pad beyond).
        cols = prefix[:, None] + torch.arange(W, device=x.device)[None, :]  # (B, W)
        real = cols < lengths[:, None]
        gathered = x.gather(1, cols.clamp(max=x.size(1) - 1))
        win_ids = torch.where(real, gathered, torch.full_like(cols, self.config.encoder.pad_id))
        outs = []
        for start in range(0, W, self.config.bptt):
            enc = self.encoder(win_ids[:, start : start + self.config.bptt], state)
            state = enc.state
            outs.append(enc.raw_output)
        return torch.cat(outs, 1), window  # (B, W, E), (B,)

    @torch.no_grad()
    def _read_prefix(self, x: Tensor, prefix: Tensor) -> State:
        """The state after each row's first ``prefix_i`` tokens (exact per row, no gradient)."""
        state = self.encoder.init_state(x.size(0))
        # Without gradients nothing is kept between chunks, so read max_len at a time:
        # the same memory bound as the window, far fewer kernel launches than bptt.
        bptt = max(self.config.bptt, self.config.max_len)
        # Long documents only: one host read of the longest prefix, then no-grad chunks.
        for start in range(0, int(prefix.max()), bptt):
            n = (prefix - start).clamp(min=0, max=bptt)  # (B,) real tokens of each row here
            active = (n > 0).nonzero().squeeze(1)
            chunk = x[active, start : start + bptt]
            sub = tuple((h[:, active], c[:, active]) for h, c in state)
            new = self._run_packed(chunk, n[active], sub)
            state = tuple(
                (h.index_copy(1, active, nh), c.index_copy(1, active, nc))
                for (h, c), (nh, nc) in zip(state, new, strict=True)
            )
        return state

    def _run_packed(self, ids: Tensor, lengths: Tensor, state: State) -> State:
        enc = self.encoder
        x = enc.input_dp(enc.embedding(ids))
        new_state = []
        for i, rnn in enumerate(enc.rnns):
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, layer_state = rnn(packed, state[i])
            new_state.append(layer_state)
            x, _ = torch.nn.utils.rnn.pad_packed_sequence(
                out, batch_first=True, total_length=ids.size(1)
            )
            if i < len(enc.hidden_dps):
                x = enc.hidden_dps[i](x)
        return tuple(new_state)

    def forward(self, x: Tensor, lengths: Tensor) -> ClassifierOutput:
        """``x`` right-padded ``(B, T)`` token ids, ``lengths (B,)``; logits ``(B, C)``."""
        out, window = self.encode(x, lengths)
        pooled = masked_concat_pool(out, window)
        logits = self.head(pooled)
        mask = torch.arange(out.size(1), device=out.device)[None, :] < window[:, None]
        return ClassifierOutput(logits, pooled, out, out, mask)
