"""ULMFiT's classifier: a backbone reads the document, masked concat pooling, a small head.

The backbone owns the reading of a long document (``Backbone.read_windows``; for the
recurrent ones BPT3C, back-propagation through time for text classification): a
document is read in chunks of ``bptt`` tokens with the state carried across chunks.
Only the last ``max_len`` tokens of each document keep their outputs (for pooling) and
gradients; the tokens before them run under ``no_grad`` just to produce the state the
window starts from. Memory therefore stays bounded by ``batch x max_len`` for any
document length.

Batches are right-padded. Each row's prefix is read to its own length, so its state
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

from ulmfit.models.backbone import EncoderConfig, build_backbone
from ulmfit.models.dropout import one_weight_mask_per_read

TaskKind = Literal["multiclass", "multilabel", "hierarchical"]

#: Encoder dropouts of ULMFiT's classifier (fastai's ``awd_lstm_clas_config``), before drop_mult.
CLASSIFIER_DROPOUTS = {"input_p": 0.4, "embed_p": 0.05, "weight_p": 0.5, "hidden_p": 0.3}


@dataclass(frozen=True)
class ClassifierConfig:
    """The head and the BPT3C reading of the encoder."""

    n_classes: int = 2
    task: TaskKind = "multiclass"  # multiclass | multilabel | hierarchical (a column per node)
    head_hidden: int = 50  # size of the hidden linear block
    head_ps: tuple[float, float] = (0.4, 0.1)  # head dropouts, scaled by the encoder's drop_mult
    bptt: int = 70  # tokens per BPT3C chunk
    max_len: int = 1400  # last tokens of a document that are pooled and back-propagated (20 x bptt)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    # Each output's parent output (-1: a root): scores come from label embeddings propagated
    # over this graph (LabelGraphLinear) instead of an independent row per output. Empty: off.
    label_graph: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.n_classes < 1:
            raise ValueError(f"ClassifierConfig.n_classes must be >= 1, got {self.n_classes}")
        if self.task not in ("multiclass", "multilabel", "hierarchical"):
            raise ValueError(
                "ClassifierConfig.task must be multiclass|multilabel|hierarchical, "
                f"got {self.task!r}"
            )
        if self.label_graph and (
            len(self.label_graph) != self.n_classes
            or any(not -1 <= p < i for i, p in enumerate(self.label_graph))
        ):
            raise ValueError(
                "ClassifierConfig.label_graph: one parent index per output, each before it"
            )
        if self.bptt < 1 or self.max_len < 1:
            raise ValueError("ClassifierConfig.bptt and max_len must be >= 1")
        object.__setattr__(self, "head_ps", tuple(self.head_ps))
        object.__setattr__(self, "label_graph", tuple(self.label_graph))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClassifierConfig:
        d = dict(d)
        enc = EncoderConfig.from_dict(d.pop("encoder"))
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


class LabelGraphLinear(nn.Module):
    """Scores every label from a document vector and label embeddings propagated over the
    label tree by one graph convolution (structure-encoded, after HiAGM, Zhou et al. 2020).

    Each label's vector is its own embedding plus a ReLU of messages from itself, its
    parent (top-down) and its children (bottom-up, averaged), each with its own weights;
    a label's score is its vector's dot product with the document vector, plus a bias.
    The residual form starts out as a plain linear layer, so training starts where the
    flat head's does; related labels then share what they learn through the graph.
    """

    def __init__(self, n_in: int, parents: tuple[int, ...]) -> None:
        super().__init__()
        k = len(parents)
        self.label_emb = nn.Parameter(torch.empty(k, n_in))
        nn.init.kaiming_uniform_(self.label_emb, a=5**0.5)  # as nn.Linear's weight
        self.bias = nn.Parameter(torch.zeros(k))
        self.w_self = nn.Linear(n_in, n_in)
        self.w_down = nn.Linear(n_in, n_in, bias=False)
        self.w_up = nn.Linear(n_in, n_in, bias=False)
        for lin in (self.w_self, self.w_down, self.w_up):
            nn.init.normal_(lin.weight, std=0.02)
        nn.init.zeros_(self.w_self.bias)
        down = torch.zeros(k, k)  # down[child, parent] = 1: the parent's message
        for child, parent in enumerate(parents):
            if parent >= 0:
                down[child, parent] = 1.0
        n_children = down.sum(0).clamp(min=1)
        self.register_buffer("down", down, persistent=False)
        self.register_buffer("up", down.t() / n_children[:, None], persistent=False)

    def label_vectors(self) -> Tensor:
        h = self.label_emb
        msg = self.w_self(h) + self.down @ self.w_down(h) + self.up @ self.w_up(h)
        return h + torch.relu(msg)

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.label_vectors().t() + self.bias


class LabelBlock(nn.Sequential):
    """ULMFiT's head: pooled vector -> hidden block (ReLU) -> output block; with a
    ``label_graph`` the output block's linear layer is :class:`LabelGraphLinear`."""

    def __init__(
        self,
        n_in: int,
        hidden: int,
        n_out: int,
        ps: tuple[float, float],
        label_graph: tuple[int, ...] = (),
    ) -> None:
        first = LinearBlock(n_in, hidden, ps[0], relu=True)
        last = LinearBlock(hidden, n_out, ps[1], relu=False)
        if label_graph:  # the same block, its linear layer scored over the graph
            last[2] = LabelGraphLinear(hidden, label_graph)
        super().__init__(first, last)


class TextClassifierModel(nn.Module):
    """A backbone (the LM's encoder) + masked concat pooling + two linear blocks."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = build_backbone(config.encoder)
        emb = config.encoder.emb_size
        mult = config.encoder.drop_mult
        p0, p1 = (p * mult for p in config.head_ps)
        self.head = LabelBlock(
            3 * emb, config.head_hidden, config.n_classes, (p0, p1), config.label_graph
        )

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """The backbone's groups (embedding, each layer), then the head: lowest first."""
        return [*self.encoder.layer_groups(), list(self.head.parameters())]

    def encode(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """The backbone's reading of right-padded ``x (B, T)``: window outputs ``(B, W, E)``
        (each row's last ``min(len, max_len)`` tokens, left-aligned) and their lengths.

        A batch of documents is one sequence per row however many chunks the backbone
        reads it in: one DropConnect / embedding-dropout mask for the whole read.
        """
        with one_weight_mask_per_read(self.encoder):
            return self.encoder.read_windows(x, lengths, self.config.max_len, self.config.bptt)

    def forward(self, x: Tensor, lengths: Tensor) -> ClassifierOutput:
        """``x`` right-padded ``(B, T)`` token ids, ``lengths (B,)``; logits ``(B, C)``."""
        out, window = self.encode(x, lengths)
        pooled = masked_concat_pool(out, window)
        logits = self.head(pooled)
        mask = torch.arange(out.size(1), device=out.device)[None, :] < window[:, None]
        return ClassifierOutput(logits, pooled, out, out, mask)
