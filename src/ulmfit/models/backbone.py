"""What every language-model backbone implements, and the parts they share.

A backbone is the encoder of a language model and of a classifier: token ids in,
one vector per token out, with a state that a caller may carry from one batch to the
next. It is built from an :class:`EncoderConfig` whose ``kind`` names it, and it owns
its differences: its state, its layer groups, which of its modules dynamic int8 can
replace, and how it reads a document longer than one chunk (BPT3C for the recurrent
ones, written once in :class:`RecurrentBackbone` and used by training and inference).

State is passed in and returned, never kept on the module: one tuple per layer, each
of tensors whose dimension 1 is the batch (the layout ``nn.LSTM`` uses for ``(h, c)``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NamedTuple, get_args

import torch
from torch import Tensor, nn

from ulmfit.models.dropout import LockedDropout, WordEmbedding

#: One tuple of tensors per layer; dimension 1 of each tensor is the batch.
State = tuple[tuple[Tensor, ...], ...]

#: The backbones, by the name a config's ``kind`` gives them.
BackboneKind = Literal["awd_lstm", "qrnn", "transformer"]
KINDS: tuple[BackboneKind, ...] = get_args(BackboneKind)


@dataclass(frozen=True)
class EncoderConfig:
    """Sizes and dropouts of a backbone; ``kind`` names it. The defaults are ULMFiT's
    AWD-LSTM language model; each dropout is multiplied by ``drop_mult``."""

    kind: BackboneKind = "awd_lstm"  # the backbone: awd_lstm | qrnn | transformer
    vocab_size: int = 0  # 0: set from the vocabulary when the model is built
    emb_size: int = 400  # embedding size (also the last layer's, for tying)
    hidden_size: int = 1152  # hidden size of the other layers (transformer: of the MLP)
    n_layers: int = 3  # stacked layers (transformer: blocks)
    pad_id: int = 1  # id of xxpad
    tie_weights: bool = True  # decoder weight = embedding matrix (one tensor)
    input_p: float = 0.25  # locked dropout on the embedding output
    embed_p: float = 0.02  # whole-word dropout on the embedding matrix
    weight_p: float = 0.2  # DropConnect on recurrent (LSTM) or gate (QRNN) weights
    hidden_p: float = 0.15  # dropout between layers (transformer: on each residual branch)
    output_p: float = 0.1  # locked dropout on the last layer's output (LM head input)
    drop_mult: float = 1.0  # multiplies every dropout probability above
    window: int = 2  # QRNN: tokens each gate sees (1 or 2: the current and the previous)
    n_heads: int = 4  # transformer: attention heads (emb_size must divide by it)
    context: int = 512  # transformer: most tokens one window attends over (learned positions)
    rotary: bool = False  # transformer: rotary position embeddings instead of learned ones
    attn_p: float = 0.1  # transformer: dropout on attention weights
    norm_eps: float = 1e-5  # transformer: LayerNorm epsilon

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"model kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.vocab_size < 0:
            raise ValueError(f"EncoderConfig.vocab_size must be >= 0, got {self.vocab_size}")
        for name in ("emb_size", "hidden_size", "n_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"EncoderConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.drop_mult < 0:
            raise ValueError(f"EncoderConfig.drop_mult must be >= 0, got {self.drop_mult}")
        for name in ("input_p", "embed_p", "weight_p", "hidden_p", "output_p"):
            p = getattr(self, name) * self.drop_mult
            if not 0.0 <= p < 1.0:
                raise ValueError(f"EncoderConfig.{name} * drop_mult must be in [0, 1), got {p:.3f}")
        if self.window not in (1, 2):
            raise ValueError(f"EncoderConfig.window must be 1 or 2, got {self.window}")
        if self.kind == "transformer":
            if self.n_heads < 1 or self.emb_size % self.n_heads:
                raise ValueError(
                    f"EncoderConfig.emb_size ({self.emb_size}) must divide by n_heads "
                    f"({self.n_heads})"
                )
            if self.rotary and (self.emb_size // self.n_heads) % 2:
                raise ValueError("EncoderConfig: rotary positions need an even head size")
            if self.context < 1:
                raise ValueError(f"EncoderConfig.context must be >= 1, got {self.context}")
            if not 0.0 <= self.attn_p * self.drop_mult < 1.0:
                raise ValueError("EncoderConfig.attn_p * drop_mult must be in [0, 1)")

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
    def from_dict(cls, d: dict[str, Any]) -> EncoderConfig:
        """From ``config.json``; a config written before backbones had kinds is an AWD-LSTM."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"model config: unknown field(s) {sorted(unknown)}")
        return cls(**d)

    def replace(self, **changes: Any) -> EncoderConfig:
        return dataclasses.replace(self, **changes)

    #: Named sizes, chosen by ``--model.preset NAME`` or ``preset = "NAME"`` in a config
    #: file's ``[model]`` table; fields given beside the name win over the preset's.
    PRESETS: ClassVar[dict[str, EncoderConfig]]


EncoderConfig.PRESETS = {
    # ULMFiT's AWD-LSTM (Howard & Ruder 2018): the defaults.
    "awd_lstm": EncoderConfig(),
    # An AWD-LSTM a 2-core CPU trains in minutes.
    "awd_lstm-small": EncoderConfig(emb_size=64, hidden_size=256, n_layers=3),
    # MultiFiT's QRNN (Eisenschlos et al. 2019): 4 layers of 1550, 400-d embeddings; the
    # paper pairs it with a SentencePiece vocabulary of 15k pieces (--tokenizer.kind spm
    # --vocab.max-size 15000).
    "qrnn-multifit": EncoderConfig(kind="qrnn", emb_size=400, hidden_size=1550, n_layers=4),
    # A QRNN a 2-core CPU trains in minutes.
    "qrnn-small": EncoderConfig(kind="qrnn", emb_size=64, hidden_size=256, n_layers=3),
    # GPT-2 small's shape (Radford et al. 2019, 124M parameters with its 50,257 tokens) and
    # its dropouts; `ulmfit import-gpt2` reads the sizes from a checkpoint instead.
    "gpt2": EncoderConfig(
        kind="transformer",
        emb_size=768,
        hidden_size=3072,
        n_layers=12,
        n_heads=12,
        context=1024,
        input_p=0.1,
        embed_p=0.0,
        weight_p=0.0,
        hidden_p=0.1,
        output_p=0.0,
        attn_p=0.1,
    ),
    # A Transformer a 2-core CPU trains in minutes.
    "transformer-small": EncoderConfig(
        kind="transformer", emb_size=64, hidden_size=256, n_layers=3, n_heads=4, context=256
    ),
}


class EncoderOutput(NamedTuple):
    """What a backbone returns for a batch ``(B, T)``."""

    output: Tensor  # (B, T, E) last layer, after output dropout
    raw_output: Tensor  # (B, T, E) last layer, before output dropout (for TAR)
    state: State


# --- state helpers: every state is a tuple (per layer) of tuples of batch-dim-1 tensors ----


def map_state(state: State, fn: Callable[[Tensor], Tensor]) -> State:
    return tuple(tuple(fn(t) for t in layer) for layer in state)


def detach_state(state: State) -> State:
    """Cut the graph between batches (truncated BPTT) while keeping the values."""
    return map_state(state, Tensor.detach)


def state_to_tensors(state: State, names: tuple[str, ...]) -> dict[str, Tensor]:
    """``{"<layer>.<name>": tensor}`` for a checkpoint (names: the backbone's ``state_names``)."""
    return {
        f"{i}.{n}": t for i, layer in enumerate(state) for n, t in zip(names, layer, strict=True)
    }


def state_from_tensors(tensors: dict[str, Tensor], names: tuple[str, ...]) -> State:
    if not names:  # a backbone that carries nothing between batches
        return ()
    n_layers = len(tensors) // len(names)
    return tuple(tuple(tensors[f"{i}.{n}"] for n in names) for i in range(n_layers))


class Backbone(nn.Module):
    """The encoder interface. Subclasses register themselves in :data:`BACKBONES`."""

    kind: ClassVar[str]
    #: Names of the per-layer state tensors, as saved in a training checkpoint.
    state_names: ClassVar[tuple[str, ...]]
    #: Module types dynamic int8 quantisation replaces in this backbone (empty: no int8).
    int8_types: ClassVar[tuple[type[nn.Module], ...]] = ()
    #: Why this backbone cannot be exported to ONNX with dynamic lengths (None: it can).
    onnx_unsupported: ClassVar[str | None] = None

    config: EncoderConfig
    embedding: WordEmbedding

    def init_state(self, batch_size: int) -> State:
        """Zero state for ``batch_size`` sequences, on the backbone's device and dtype."""
        raise NotImplementedError

    def forward(self, ids: Tensor, state: State | None = None) -> EncoderOutput:
        """``ids (B, T)``; ``state`` defaults to zeros. Returns outputs and the new state."""
        raise NotImplementedError

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """The embedding's parameters, then each layer's: lowest first."""
        raise NotImplementedError

    def read_windows(
        self, x: Tensor, lengths: Tensor, max_len: int, bptt: int, shrink: bool = False
    ) -> tuple[Tensor, Tensor]:
        """Read right-padded documents ``x (B, T)``: the outputs of each row's last
        ``min(len, max_len)`` tokens, left-aligned in ``(B, W, E)``, and those lengths.

        ``shrink`` (inference): rows leave the batch once read, so a long document costs
        no padding to the short ones (a backbone may do so in training too where it is
        free, as the recurrent ones do on the CPU).
        """
        raise NotImplementedError


class RecurrentBackbone(Backbone):
    """What the recurrent backbones share: embedding -> [locked dropout -> layer] x n ->
    locked dropout, each layer ``(x, state_i) -> (out, new_state_i)``; and BPT3C.

    BPT3C: the prefix before the window is read without gradients (per-row exact, in
    chunks of ``max(bptt, max_len)``), the window in chunks of ``bptt`` with the state
    carried, so memory is bounded for any length.
    """

    rnns: nn.ModuleList

    def __init__(self, config: EncoderConfig, make_layer: Callable[[int, int], nn.Module]) -> None:
        super().__init__()
        if config.vocab_size < 1:
            raise ValueError("EncoderConfig.vocab_size must be set (>= 1) to build a model")
        self.config = config
        self.embedding = WordEmbedding(
            config.vocab_size, config.emb_size, config.pad_id, config.p("embed_p")
        )
        self.input_dp = LockedDropout(config.p("input_p"))
        self.rnns = nn.ModuleList(make_layer(n_in, n_out) for n_in, n_out in config.layer_sizes())
        # Dropout after every layer but the last: the last layer's is `output_dp`.
        self.hidden_dps = nn.ModuleList(
            LockedDropout(config.p("hidden_p")) for _ in range(config.n_layers - 1)
        )
        self.output_dp = LockedDropout(config.p("output_p"))

    def forward(self, ids: Tensor, state: State | None = None) -> EncoderOutput:
        x = self.input_dp(self.embedding(ids))  # (B, T, E)
        new_state = []
        for i, rnn in enumerate(self.rnns):
            x, new = rnn(x, None if state is None else state[i])  # (B, T, H_i)
            new_state.append(new)
            if i < len(self.hidden_dps):
                x = self.hidden_dps[i](x)
        return EncoderOutput(self.output_dp(x), x, tuple(new_state))

    def layer_groups(self) -> list[list[nn.Parameter]]:
        return [list(self.embedding.parameters())] + [list(r.parameters()) for r in self.rnns]

    def read_exact(self, ids: Tensor, lengths: Tensor, state: State) -> State:
        """The state after exactly ``lengths[i]`` tokens of row ``i`` of ``ids (B, T)``."""
        raise NotImplementedError

    @torch.no_grad()
    def read_prefix(self, x: Tensor, prefix: Tensor, chunk: int) -> State:
        """The state after each row's first ``prefix_i`` tokens (exact per row, no gradient)."""
        state = self.init_state(x.size(0))
        # Long documents only: one host read of the longest prefix, then no-grad chunks.
        for start in range(0, int(prefix.max()), chunk):
            n = (prefix - start).clamp(min=0, max=chunk)  # (B,) real tokens of each row here
            active = (n > 0).nonzero().squeeze(1)
            sub = tuple(tuple(t[:, active] for t in layer) for layer in state)
            new = self.read_exact(x[active, start : start + chunk], n[active], sub)
            state = tuple(
                tuple(t.index_copy(1, active, nt) for t, nt in zip(layer, new_layer, strict=True))
                for layer, new_layer in zip(state, new, strict=True)
            )
        return state

    def read_windows(
        self, x: Tensor, lengths: Tensor, max_len: int, bptt: int, shrink: bool = False
    ) -> tuple[Tensor, Tensor]:
        # Rows that have ended leave the batch wherever their lengths can be read on the
        # host without a stall: always at inference (``shrink``), and in training on the
        # CPU, where padded steps cost as much as real ones. In training on a GPU the
        # padded steps are cheaper than a host read of the lengths every batch.
        skip = shrink or host_reads_are_free(lengths)
        if skip:
            perm = _sorted_by_window(lengths, max_len)
            if perm is not None:
                got, window = self.read_windows(x[perm], lengths[perm], max_len, bptt, shrink)
                inv = torch.empty_like(perm)
                inv[perm] = torch.arange(perm.numel(), device=perm.device)
                return got[inv], window[inv]
        lengths = lengths.clamp(min=1)
        prefix = (lengths - max_len).clamp(min=0)  # (B,) tokens read only for the state
        state: State | None = None
        # Without gradients nothing is kept between chunks, so the prefix is read max_len
        # at a time: the same memory bound as the window, far fewer kernel launches.
        # Without host reads, whether there is a prefix comes from the shape of x.
        if (int(prefix.max()) > 0) if skip else (x.size(1) > max_len):
            state = self.read_prefix(x, prefix, max(bptt, max_len))
        window = lengths - prefix  # (B,) in [1, max_len]
        W = int(window[0]) if skip else min(x.size(1), max_len)
        win_ids = gather_windows(x, lengths, prefix, W, self.config.pad_id)
        starts = list(range(0, W, bptt))
        if not skip:
            outs = []
            for start in starts:
                enc = self(win_ids[:, start : start + bptt], state)
                state = enc.state
                outs.append(enc.raw_output)
            return torch.cat(outs, 1), window  # (B, W, E), (B,)
        # Rows are sorted by window, longest first: at each chunk only the first k still
        # read. One host sync for all chunks.
        active = (window[None, :] > torch.tensor(starts, device=x.device)[:, None]).sum(1).tolist()
        out: Tensor | None = None
        for start, k in zip(starts, active, strict=True):
            sub = None if state is None else tuple(tuple(t[:, :k] for t in lay) for lay in state)
            enc = self(win_ids[:k, start : start + bptt], sub)
            state = enc.state
            if out is None:  # dtype from the encoder (autocast may make it bf16)
                out = enc.raw_output.new_zeros(x.size(0), W, enc.raw_output.size(-1))
            out[:k, start : start + bptt] = enc.raw_output
        assert out is not None
        return out, window


def host_reads_are_free(t: Tensor) -> bool:
    """Whether reading ``t``'s values on the host costs nothing (a CPU tensor), rather than
    a stall of the device's queue."""
    return t.device.type == "cpu"


def gather_windows(x: Tensor, lengths: Tensor, prefix: Tensor, width: int, pad_id: int) -> Tensor:
    """Each row's window moved to the left, ``(B, width)``: tokens ``prefix_i + j`` of
    right-padded ``x``, padded with ``pad_id`` past the row's length."""
    cols = prefix[:, None] + torch.arange(width, device=x.device)[None, :]  # (B, W)
    real = cols < lengths[:, None]
    gathered = x.gather(1, cols.clamp(max=x.size(1) - 1))
    return torch.where(real, gathered, torch.full_like(cols, pad_id))


def _sorted_by_window(lengths: Tensor, max_len: int) -> Tensor | None:
    """The permutation that sorts rows longest window first, or None if they already are."""
    window = lengths.clamp(min=1, max=max_len)
    if bool((window[:-1] >= window[1:]).all()):
        return None
    return torch.argsort(window, descending=True, stable=True)


#: ``kind`` -> backbone class; each backbone's module registers its class.
BACKBONES: dict[str, type[Backbone]] = {}


def register(cls: type[Backbone]) -> type[Backbone]:
    BACKBONES[cls.kind] = cls
    return cls


def build_backbone(config: EncoderConfig) -> Backbone:
    """The backbone ``config.kind`` names."""
    from ulmfit.models import awd_lstm, qrnn, transformer  # noqa: F401  (they register)

    if config.vocab_size < 1:
        raise ValueError("EncoderConfig.vocab_size must be set (>= 1) to build a model")
    return BACKBONES[config.kind](config)
