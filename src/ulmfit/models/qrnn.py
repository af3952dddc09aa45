"""QRNN (Bradbury et al. 2017) as MultiFiT (Eisenschlos et al. 2019) used it: pure PyTorch.

Each layer computes its three gates for every position at once, from the current token
and (window 2) the previous one: a masked causal convolution over time, written as one
matrix product over ``[x_{t-1}, x_t]``. Only the element-wise recurrence

    c_t = f_t * c_{t-1} + (1 - f_t) * z_t,    h_t = o_t * c_t       (fo-pooling)

runs step by step, so a layer costs one large matmul plus ``T`` cheap updates, where an
LSTM runs a matmul at every step. DropConnect drops gate weights; the embedding, locked
and hidden dropouts are the AWD-LSTM's. The state a layer carries to the next batch is
its last input (for the window) and its last ``c``.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ulmfit.models.backbone import (
    EncoderConfig,
    RecurrentBackbone,
    State,
    register,
)
from ulmfit.models.dropout import WeightMask


class _ForgetMult(torch.autograd.Function):
    """fo-pooling with its backward written out: two loops over time of in-place fused
    updates on contiguous ``(B, H)`` slices, where autograd would record (and later walk)
    three nodes per step."""

    @staticmethod
    def forward(ctx: Any, f: Tensor, z: Tensor, c0: Tensor) -> Tensor:
        ft = f.transpose(0, 1).contiguous()  # (T, B, H): each step a contiguous slice
        c = ((1 - f) * z).transpose(0, 1).contiguous()  # (1 - f_t) z_t, overwritten by c_t
        prev = c0
        for t in range(c.size(0)):
            torch.addcmul(c[t], ft[t], prev, out=c[t])
            prev = c[t]
        ctx.save_for_backward(ft, z, c, c0)
        return c.transpose(0, 1)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        ft, z, c, c0 = ctx.saved_tensors
        dc = grad.transpose(0, 1).contiguous()  # becomes dL/dc_t, through later steps too
        for t in range(dc.size(0) - 2, -1, -1):
            torch.addcmul(dc[t], ft[t + 1], dc[t + 1], out=dc[t])
        c_prev = torch.cat([c0[None], c[:-1]])
        df = (dc * (c_prev - z.transpose(0, 1))).transpose(0, 1)
        dz = (dc * (1 - ft)).transpose(0, 1)
        return df, dz, dc[0] * ft[0]


def _forget_mult_loop(f: Tensor, z: Tensor, c0: Tensor) -> Tensor:
    """fo-pooling as a loop TorchScript can compile: scripted, inside a trace (ONNX
    export), it stays a loop over however many steps the input has, where the Python loop
    would be unrolled for one length (see :func:`_scripted_loop`)."""
    c = c0
    steps: list[Tensor] = []
    for t in range(f.size(1)):
        c = f[:, t] * c + (1 - f[:, t]) * z[:, t]
        steps.append(c)
    return torch.stack(steps, 1)


@functools.cache
def _scripted_loop() -> Any:
    """:func:`_forget_mult_loop` scripted, once, when an export first needs it (scripting
    warns that TorchScript is deprecated; the TorchScript ONNX exporter is what keeps an
    ``nn.LSTM`` and this loop dynamic in length, see ``ulmfit.export_onnx``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(_forget_mult_loop)


def forget_mult(f: Tensor, z: Tensor, c0: Tensor) -> Tensor:
    """``c_t = f_t * c_{t-1} + (1 - f_t) * z_t`` over ``T``: ``f, z (B, T, H)``, ``c0 (B, H)``.

    A loop over time of fused element-wise updates, exact (a closed-form scan divides by
    running products that underflow: ``benchmarks/backbones.py`` times one), with its
    gradient written out by hand (:class:`_ForgetMult`).
    """
    if torch.jit.is_tracing():  # ONNX export: a loop the graph keeps, for any length
        out_: Tensor = _scripted_loop()(f, z, c0)
        return out_
    if not (f.requires_grad or z.requires_grad or c0.requires_grad):
        return _ForgetMult.forward(_NoCtx(), f, z, c0)
    out: Tensor = _ForgetMult.apply(f, z, c0)
    return out


class _NoCtx:
    """Stands in for autograd's context when nothing needs a gradient."""

    def save_for_backward(self, *tensors: Tensor) -> None:
        pass


def forget_mult_autograd(f: Tensor, z: Tensor, c0: Tensor) -> Tensor:
    """The same recurrence left to autograd: the reference the hand-written one is tested
    against (and timed against in ``benchmarks/backbones.py``)."""
    fz = (1 - f) * z
    c = c0
    out = []
    for t in range(f.size(1)):
        c = torch.addcmul(fz[:, t], f[:, t], c)
        out.append(c)
    return torch.stack(out, 1)


class QRNNLayer(nn.Module):
    """One QRNN layer: gates from a window of ``window`` tokens, then fo-pooling."""

    def __init__(self, n_in: int, n_out: int, window: int, weight_p: float) -> None:
        super().__init__()
        self.n_in, self.n_out, self.window, self.weight_p = n_in, n_out, window, weight_p
        self.linear = nn.Linear(window * n_in, 3 * n_out)
        self.weight_mask = WeightMask()

    def run(self, x: Tensor, state: tuple[Tensor, ...] | None) -> tuple[Tensor, Tensor]:
        """Outputs ``h (B, T, H)`` and every step's ``c (B, T, H)``."""
        B = x.size(0)
        if self.window == 2:
            prev = x.new_zeros(B, 1, self.n_in) if state is None else state[0].transpose(0, 1)
            x = torch.cat([torch.cat([prev.to(x.dtype), x[:, :-1]], 1), x], -1)
        if self.training and self.weight_p > 0.0:
            raw = self.linear.weight
            w = self.weight_mask.apply(raw, tuple(raw.shape), self.weight_p)
            gates = F.linear(x, w, self.linear.bias)
        else:
            gates = self.linear(x)  # a module call: dynamic int8 can swap it
        z, f, o = gates.chunk(3, -1)
        z, f, o = torch.tanh(z), torch.sigmoid(f), torch.sigmoid(o)
        c0 = z.new_zeros(B, self.n_out) if state is None else state[1][0].to(z.dtype)
        c = forget_mult(f, z, c0)
        return o * c, c

    def forward(
        self, x: Tensor, state: tuple[Tensor, ...] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        h, c = self.run(x, state)
        return h, (x[:, -1:].transpose(0, 1), c[:, -1].unsqueeze(0))

    def extra_repr(self) -> str:
        return f"{self.n_in}, {self.n_out}, window={self.window}, weight_p={self.weight_p}"


@register
class QRNNEncoder(RecurrentBackbone):
    """Embedding -> [locked dropout -> QRNN layer] x n_layers -> locked dropout."""

    kind = "qrnn"
    state_names = ("x", "c")
    int8_types = (nn.Linear,)

    def __init__(self, config: EncoderConfig) -> None:
        weight_p, window = config.p("weight_p"), config.window
        super().__init__(config, lambda n_in, n_out: QRNNLayer(n_in, n_out, window, weight_p))

    def init_state(self, batch_size: int) -> State:
        w = self.embedding.weight
        return tuple(
            (w.new_zeros(1, batch_size, n_in), w.new_zeros(1, batch_size, n_out))
            for n_in, n_out in self.config.layer_sizes()
        )

    def read_exact(self, ids: Tensor, lengths: Tensor, state: State) -> State:
        # Causal: positions before a row's length never see the padding after it, so the
        # state is read at position length - 1 of each row.
        rows = torch.arange(ids.size(0), device=ids.device)
        last = lengths.to(ids.device) - 1
        x = self.input_dp(self.embedding(ids))
        new_state = []
        for i, layer in enumerate(self.rnns):
            assert isinstance(layer, QRNNLayer)
            h, c = layer.run(x, state[i])
            new_state.append((x[rows, last].unsqueeze(0), c[rows, last].unsqueeze(0)))
            x = self.hidden_dps[i](h) if i < len(self.hidden_dps) else h
        return tuple(new_state)


#: MultiFiT's QRNN and a small one (``EncoderConfig.PRESETS``, where their sources are).
MULTIFIT = EncoderConfig.PRESETS["qrnn-multifit"]
SMALL = EncoderConfig.PRESETS["qrnn-small"]
