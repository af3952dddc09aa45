"""A GPT-style Transformer decoder (Radford et al. 2018; GPT-2's layout) as a backbone.

Pre-LayerNorm blocks, causal self-attention through
``torch.nn.functional.scaled_dot_product_attention`` (a fused kernel where the device
has one), learned positions (rotary as an option), a final LayerNorm; the language
model ties the decoder to the token embedding. Dropouts: whole-word on the embedding
(``embed_p``), on the embedded input (``input_p``), on attention weights (``attn_p``),
on each residual branch (``hidden_p``) and on the output (``output_p``).

Nothing is carried between batches (the state is empty): each LM batch is read on its
own, positions from 0. A long document is read as GPT-style windows: its last
``max_len`` tokens, cut into consecutive windows of ``context`` tokens, each window read
on its own (positions from 0). Memory is bounded by ``batch x max_len`` and one window's
attention, whatever the length; padding comes after a row's real tokens, so causal
attention never lets a real token see it, and pooling masks it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ulmfit.models.backbone import (
    Backbone,
    EncoderConfig,
    EncoderOutput,
    State,
    gather_windows,
    register,
)
from ulmfit.models.dropout import WordEmbedding


def rotary_tables(length: int, head_dim: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """cos and sin ``(length, head_dim / 2)`` of RoPE (Su et al. 2021), base 10000."""
    inv = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim))
    angles = torch.arange(length, device=device).float()[:, None] * inv[None, :]
    return angles.cos(), angles.sin()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate pairs (first half, second half) of ``x (B, H, T, D)`` by position."""
    a, b = x.float().chunk(2, -1)
    return torch.cat([a * cos - b * sin, a * sin + b * cos], -1).to(x.dtype)


class Block(nn.Module):
    """LayerNorm -> causal self-attention -> residual; LayerNorm -> MLP (GELU) -> residual."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        d = config.emb_size
        self.n_heads = config.n_heads
        self.attn_p = config.p("attn_p")
        self.ln_1 = nn.LayerNorm(d, eps=config.norm_eps)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln_2 = nn.LayerNorm(d, eps=config.norm_eps)
        self.fc = nn.Linear(d, config.hidden_size)
        self.fc_proj = nn.Linear(config.hidden_size, d)
        self.resid_dp = nn.Dropout(config.p("hidden_p"))

    def forward(self, x: Tensor, rotary: tuple[Tensor, Tensor] | None = None) -> Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(self.ln_1(x)).split(D, -1)
        q, k, v = (t.view(B, T, self.n_heads, D // self.n_heads).transpose(1, 2) for t in (q, k, v))
        if rotary is not None:
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        p = self.attn_p if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        x = x + self.resid_dp(self.proj(y.transpose(1, 2).reshape(B, T, D)))
        # GPT-2's GELU is the tanh approximation ("gelu_new").
        h = self.fc_proj(F.gelu(self.fc(self.ln_2(x)), approximate="tanh"))
        return x + self.resid_dp(h)


@register
class TransformerEncoder(Backbone):
    """Token (+ position) embedding -> blocks -> final LayerNorm."""

    kind = "transformer"
    state_names = ()
    int8_types = (nn.Linear,)

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        d = config.emb_size
        self.embedding = WordEmbedding(config.vocab_size, d, config.pad_id, config.p("embed_p"))
        # GPT-2 initialises embeddings at N(0, 0.02); ours (uniform +-0.1) suits the LSTMs.
        nn.init.normal_(self.embedding.weight, std=0.02)
        self.positions = None if config.rotary else nn.Embedding(config.context, d)
        if self.positions is not None:
            nn.init.normal_(self.positions.weight, std=0.01)
        self.input_dp = nn.Dropout(config.p("input_p"))
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(d, eps=config.norm_eps)
        self.output_dp = nn.Dropout(config.p("output_p"))

    def init_state(self, batch_size: int) -> State:
        return ()

    def forward(self, ids: Tensor, state: State | None = None) -> EncoderOutput:
        T = ids.size(1)
        if self.config.context < T:
            raise ValueError(
                f"the transformer reads at most context={self.config.context} tokens at once, "
                f"got {T} (lower bptt, or raise [model] context)"
            )
        x = self.embedding(ids)
        rotary = None
        if self.positions is not None:
            x = x + self.positions(torch.arange(T, device=ids.device))
        else:
            rotary = rotary_tables(T, self.config.emb_size // self.config.n_heads, ids.device)
        x = self.input_dp(x)
        for block in self.blocks:
            x = block(x, rotary)
        x = self.ln_f(x)
        return EncoderOutput(self.output_dp(x), x, ())

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """The embeddings, then one group per block (the final LayerNorm with the last)."""
        first = list(self.embedding.parameters())
        if self.positions is not None:
            first += list(self.positions.parameters())
        groups = [first] + [list(b.parameters()) for b in self.blocks]
        groups[-1] += list(self.ln_f.parameters())
        return groups

    def read_windows(
        self, x: Tensor, lengths: Tensor, max_len: int, bptt: int, shrink: bool = False
    ) -> tuple[Tensor, Tensor]:
        """Each row's last ``min(len, max_len)`` tokens, left-aligned, read in windows of
        ``context`` tokens (``bptt`` is the recurrent backbones' chunk; unused here)."""
        lengths = lengths.clamp(min=1)
        prefix = (lengths - max_len).clamp(min=0)
        window = lengths - prefix
        W = min(x.size(1), max_len)  # from shapes: no host read of a tensor value
        pad = self.config.pad_id
        win_ids = gather_windows(x, lengths, prefix, W, pad)
        C = min(self.config.context, W)
        n = -(-W // C)
        if n * C > W:
            win_ids = F.pad(win_ids, (0, n * C - W), value=pad)
        B = x.size(0)
        out = self(win_ids.reshape(B * n, C)).raw_output
        return out.reshape(B, n * C, -1)[:, :W], window
