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
    encoder: EncoderConfig = field(default_factory=EncoderConfig)

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


class TextClassifierModel(nn.Module):
    """A backbone (the LM's encoder) + masked concat pooling + two linear blocks."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = build_backbone(config.encoder)
        emb = config.encoder.emb_size
        mult = config.encoder.drop_mult
        p0, p1 = (p * mult for p in config.head_ps)
        self.head = nn.Sequential(
            LinearBlock(3 * emb, config.head_hidden, p0, relu=True),
            LinearBlock(config.head_hidden, config.n_classes, p1, relu=False),
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
