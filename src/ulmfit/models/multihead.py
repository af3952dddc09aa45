"""Several named heads on one encoder: the backbone reads each document once, masked concat
pooling gives one document vector, and every head scores it (ULMFiT's two linear blocks
each, or the label-graph layer for a hierarchical head). N heads cost one encoder pass."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ulmfit.models.backbone import EncoderConfig, build_backbone
from ulmfit.models.classifier import LabelBlock, masked_concat_pool
from ulmfit.models.dropout import one_weight_mask_per_read


@dataclass(frozen=True)
class HeadShape:
    """One head's outputs: how many, and (hierarchical graph head) their parents."""

    name: str
    n_outputs: int
    label_graph: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.name or "." in self.name or "/" in self.name:
            raise ValueError(f"head name {self.name!r}: non-empty, without '.' or '/'")
        if self.n_outputs < 1:
            raise ValueError(f"head {self.name!r}: n_outputs must be >= 1")
        object.__setattr__(self, "label_graph", tuple(self.label_graph))


@dataclass(frozen=True)
class MultiHeadConfig:
    heads: tuple[HeadShape, ...] = ()
    head_hidden: int = 50
    head_ps: tuple[float, float] = (0.4, 0.1)
    bptt: int = 70
    max_len: int = 1400
    encoder: EncoderConfig = field(default_factory=EncoderConfig)

    def __post_init__(self) -> None:
        names = [h.name for h in self.heads]
        if not names:
            raise ValueError("MultiHeadConfig: at least one head")
        if len(set(names)) != len(names):
            raise ValueError(f"MultiHeadConfig: repeated head names {names}")
        object.__setattr__(self, "heads", tuple(self.heads))
        object.__setattr__(self, "head_ps", tuple(self.head_ps))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MultiHeadConfig:
        d = dict(d)
        enc = EncoderConfig.from_dict(d.pop("encoder"))
        heads = tuple(HeadShape(**h) for h in d.pop("heads"))
        return cls(heads=heads, encoder=enc, **d)


class MultiHeadModel(nn.Module):
    """The backbone, masked concat pooling, and a head per task (``heads[name]``)."""

    def __init__(self, config: MultiHeadConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = build_backbone(config.encoder)
        emb, mult = config.encoder.emb_size, config.encoder.drop_mult
        p0, p1 = (p * mult for p in config.head_ps)
        self.heads = nn.ModuleDict(
            {
                h.name: LabelBlock(
                    3 * emb, config.head_hidden, h.n_outputs, (p0, p1), h.label_graph
                )
                for h in config.heads
            }
        )

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """The backbone's groups, then every head together: lowest first."""
        return [*self.encoder.layer_groups(), list(self.heads.parameters())]

    def encode(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        with one_weight_mask_per_read(self.encoder):
            return self.encoder.read_windows(x, lengths, self.config.max_len, self.config.bptt)

    def score(self, pooled: Tensor) -> dict[str, Tensor]:
        return {name: head(pooled) for name, head in self.heads.items()}

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """Each head's logits, the window outputs ``(B, W, E)`` (for AR/TAR) and its mask."""
        out, window = self.encode(x, lengths)
        logits = self.score(masked_concat_pool(out, window))
        mask = torch.arange(out.size(1), device=out.device)[None, :] < window[:, None]
        return logits, out, mask
