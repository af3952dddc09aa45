"""CUDA only: mixed precision through the real loop, DropConnect on cuDNN, fused AdamW,
classifier batches copied from pinned memory and a classifier forward without host syncs.

Selected with ``pytest -m gpu`` (the default run deselects them) and skipped where no
CUDA device is visible.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pytest
import torch

from ulmfit.data.lm import LMDataConfig, LMStream
from ulmfit.models.awd_lstm import AWDLSTMConfig, AWDLSTMLanguageModel
from ulmfit.models.dropout import WeightDropLSTM
from ulmfit.tasks.lm import LMTask
from ulmfit.training import loop
from ulmfit.training.config import TrainConfig

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

CFG = AWDLSTMConfig(vocab_size=30, emb_size=16, hidden_size=24, n_layers=2, drop_mult=0.5)


def cuda_task() -> LMTask:
    """A tiny LM on a learnable stream (2, 3, ..., 29 repeated), all on the GPU."""
    torch.manual_seed(0)
    ids = np.tile(np.arange(2, 30, dtype=np.int32), 100)
    offsets = np.arange(0, len(ids) + 1, 280, dtype=np.int64)
    cuda = torch.device("cuda")
    stream = LMStream(ids, offsets, LMDataConfig(bs=4, bptt=12), train=True, seed=0, device=cuda)
    return LMTask(AWDLSTMLanguageModel(CFG).to(cuda), stream, None)


def spy_on_optimizers(monkeypatch: pytest.MonkeyPatch) -> list[torch.optim.Optimizer]:
    """The optimizers ``fit`` builds, recorded as it builds them."""
    made: list[torch.optim.Optimizer] = []
    real = loop.build_optimizer

    def build(*args: Any) -> torch.optim.Optimizer:
        made.append(real(*args))
        return made[-1]

    monkeypatch.setattr(loop, "build_optimizer", build)
    return made


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_training_through_the_loop(
    precision: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    scalers: list[torch.amp.GradScaler] = []

    class SpyScaler(torch.amp.GradScaler):  # defined before the patch: the real base class
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            scalers.append(self)

    monkeypatch.setattr(torch.amp, "GradScaler", SpyScaler)
    t = cuda_task()
    before = {k: v.detach().clone() for k, v in t.model.state_dict().items()}
    cfg = TrainConfig(precision=precision, lr=1e-2, max_steps=8, log_every=1, progress=False)
    state = loop.fit(t, cfg, None)

    assert state.global_step == 8
    losses = [r["train_loss"] for r in state.history]
    assert len(losses) == 8 and all(math.isfinite(x) for x in losses), losses
    after = t.model.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values())
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # Autocast lowers precision per op: the parameters themselves stay float32.
    assert all(p.dtype == torch.float32 for p in t.model.parameters())
    if precision == "fp16":  # fp16 gradients underflow without loss scaling; bf16 needs none
        assert len(scalers) == 1 and scalers[0].is_enabled()
        assert 0 < scalers[0].get_scale() <= 2.0**16
    else:
        assert scalers == []


def test_weight_drop_lstm_on_cuda() -> None:
    torch.manual_seed(0)
    layer = WeightDropLSTM(8, 16, weight_p=0.5).to("cuda")
    raw = layer.lstm.weight_hh_l0
    raw_before = raw.detach().clone()
    x = torch.randn(3, 7, 8, device="cuda")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        layer.train()
        y_train, _ = layer(x)
        y_train.sum().backward()
        layer.eval()
        with torch.no_grad():
            y_eval, _ = layer(x)
            y_eval_again, _ = layer(x)
    assert not torch.allclose(y_train.detach(), y_eval)  # DropConnect acts in training only
    assert torch.allclose(y_eval, y_eval_again)  # no dropout mask in eval
    # The raw weight is still the module's parameter, unchanged, and the gradient reached
    # it through the dropout: zero exactly where the mask dropped an entry.
    assert layer.lstm.weight_hh_l0 is raw and torch.equal(raw.detach(), raw_before)
    g = raw.grad
    assert g is not None and torch.isfinite(g).all()
    assert (g != 0).any() and (g == 0).any()
    assert layer.lstm.weight_ih_l0.grad is not None
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "contiguous" in m or "flatten_parameters" in m], messages


def test_fit_uses_fused_adamw_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    made = spy_on_optimizers(monkeypatch)
    t = cuda_task()
    before = [p.detach().clone() for p in t.model.parameters()]
    loop.fit(t, TrainConfig(precision="fp32", max_steps=3, progress=False), None)
    assert len(made) == 1 and isinstance(made[0], torch.optim.AdamW)
    assert all(g["fused"] for g in made[0].param_groups)
    after = list(t.model.parameters())
    assert any(not torch.equal(b, a) for b, a in zip(before, after, strict=True))


def test_classifier_batches_on_cuda_match_the_host_and_forward_never_syncs() -> None:
    """Pinned, queued copies give the same batches; the classifier forward (documents up
    to max_len) leaves no host synchronisation in the step."""
    from ulmfit.data.classification import ClassificationBatches
    from ulmfit.models.classifier import ClassifierConfig, TextClassifierModel

    rng = np.random.default_rng(0)
    docs = [rng.integers(2, 30, n) for n in rng.integers(1, 60, 50)]
    y = rng.integers(0, 3, 50)
    cpu = list(ClassificationBatches(docs, y, 8, train=True, seed=3).batches(1))
    cuda = torch.device("cuda")
    gpu = list(ClassificationBatches(docs, y, 8, train=True, seed=3, device=cuda).batches(1))
    for a, b in zip(cpu, gpu, strict=True):
        assert b.x.is_cuda and b.lengths.is_cuda and b.y is not None and b.y.is_cuda
        assert torch.equal(a.x, b.x.cpu()) and torch.equal(a.lengths, b.lengths.cpu())
        assert a.y is not None and torch.equal(a.y, b.y.cpu())
    model = TextClassifierModel(ClassifierConfig(n_classes=3, bptt=16, max_len=64, encoder=CFG)).to(
        cuda
    )
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = model(gpu[0].x, gpu[0].lengths)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.logits.shape == (len(gpu[0].x), 3)
