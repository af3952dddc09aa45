"""Fast classifier inference: a shrinking-batch BPT3C reader, int8 quantisation, threads.

Training reads a batch in ``bptt`` chunks with every row to the end of the longest
one; rows that have ended then run on padding. In inference there is no gradient and
nothing to keep, so :func:`classify_logits` drops a row from the batch as soon as its
window has been read. On a length-sorted batch that leaves almost no padding work,
which lets inference use large batches (efficient matrix products) even when the
documents in a batch differ a lot in length.

:func:`quantize_int8` swaps every ``nn.LSTM`` and ``nn.Linear`` for PyTorch's dynamic
int8 versions (weights int8, activations quantised on the fly), CPU only.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from ulmfit.models.classifier import TextClassifierModel, masked_concat_pool

QUANTIZE_DTYPES = ("int8",)
# Default inference batch under int8: its kernels slow down on larger batches (on a
# 2-core EPYC, paper-size model, IMDb reviews: 20.5 docs/s at 16, 19 at 32, 16 at 128),
# while float32 keeps gaining up to 64-128.
INT8_BATCH_SIZE = 32

# torch.ao.quantization is deprecated in favour of torchao (a separate package) but still
# works; only these two messages, raised while converting, are silenced.
_DEPRECATION_MESSAGES = (
    r"(?s).*torch\.ao\.quantization is deprecated",
    r"(?s).*torch\.quantize_per_tensor, torch\.quantize_per_channel .* are deprecated",
)


@contextlib.contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)`` (None: leave it), then restore."""
    if n is None:
        yield
        return
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def is_quantized(model: nn.Module) -> bool:
    """True if any submodule is a dynamically quantised one."""
    return any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in model.modules())


def quantize_int8(model: TextClassifierModel) -> TextClassifierModel:
    """A copy of ``model`` with dynamic int8 LSTM and Linear layers, for CPU inference.

    The encoder's ``WeightDropLSTM`` runs its inner ``lstm`` directly in eval mode, so
    swapping that submodule is enough; the check below makes sure it was swapped.
    """
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError("int8 quantisation is for CPU inference: move the model to the CPU")
    if torch.backends.quantized.engine == "none":
        raise RuntimeError(
            "this PyTorch build has no quantised CPU engine (fbgemm/x86/qnnpack): "
            "int8 inference is not available"
        )
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError as e:  # removed in a future PyTorch (it moves to torchao)
        raise RuntimeError(
            f"int8 quantisation needs torch.ao.quantization.quantize_dynamic ({e})"
        ) from e
    types = set(model.encoder.int8_types)
    if not types:
        raise ValueError(f"int8 inference is not available for the {model.encoder.kind} backbone")
    with warnings.catch_warnings():
        for message in _DEPRECATION_MESSAGES:
            warnings.filterwarnings("ignore", message=message)
        # quantize_dynamic swaps modules by exact type (nn.LSTM, nn.Linear).
        q = quantize_dynamic(model.eval(), types | {nn.Linear}, dtype=torch.qint8, inplace=False)
    left = sorted({type(m).__name__ for m in q.modules() if type(m) in types | {nn.Linear}})
    if left:
        raise RuntimeError(f"quantize_dynamic left {left} unquantised")
    assert isinstance(q, TextClassifierModel)
    return q


def encode_windows(model: TextClassifierModel, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """``model.encode`` for inference: the same outputs, without running finished rows.

    ``x (B, T)`` is right-padded; returns the window outputs ``(B, W, E)`` (zeros after
    each row's window) and the window lengths ``(B,)``, in the input's row order.
    """
    cfg = model.config
    return model.encoder.read_windows(x, lengths, cfg.max_len, cfg.bptt, shrink=True)


def classify_logits(model: TextClassifierModel, x: Tensor, lengths: Tensor) -> Tensor:
    """Logits ``(B, C)`` of ``model`` (in eval mode) with :func:`encode_windows`."""
    out, window = encode_windows(model, x, lengths)
    return model.head(masked_concat_pool(out, window))


__all__ = [
    "INT8_BATCH_SIZE",
    "QUANTIZE_DTYPES",
    "classify_logits",
    "encode_windows",
    "is_quantized",
    "num_threads",
    "quantize_int8",
]
