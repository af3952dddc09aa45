"""The shared loop: LR finder, gradient accumulation, logging, checkpoints written atomically."""

from __future__ import annotations

import collections
import itertools
import json
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ulmfit.data.classification import ClassificationBatches
from ulmfit.data.lm import LMDataConfig, LMStream
from ulmfit.models import backbone
from ulmfit.models.awd_lstm import AWDLSTMConfig, AWDLSTMLanguageModel
from ulmfit.models.classifier import ClassifierConfig, TextClassifierModel
from ulmfit.tasks.classify import ClassifierTask
from ulmfit.tasks.lm import LMTask
from ulmfit.training.config import TrainConfig
from ulmfit.training.loop import build_optimizer, fit, resolve_precision
from ulmfit.training.lr_finder import lr_find

CFG = AWDLSTMConfig(vocab_size=30, emb_size=8, hidden_size=12, n_layers=2, drop_mult=0.0)


def task(bs: int = 8, seed: int = 0) -> LMTask:
    torch.manual_seed(seed)
    rng = np.random.default_rng(0)
    # A learnable stream: mostly the sequence 2, 3, 4, ... 29 repeated, with some noise.
    base = np.tile(np.arange(2, 30), 200)
    noise = rng.random(len(base)) < 0.05
    ids = np.where(noise, rng.integers(2, 30, len(base)), base).astype(np.int32)
    offsets = np.arange(0, len(ids) + 1, 280, dtype=np.int64)
    stream = LMStream(ids, offsets, LMDataConfig(bs=bs, bptt=12), train=True, seed=1)
    return LMTask(AWDLSTMLanguageModel(CFG), stream, None)


def test_lr_finder_restores_weights_and_suggests_a_rate(tmp_path: Path) -> None:
    t = task()
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    result = lr_find(t, TrainConfig(), num_steps=60)
    after = t.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert len(result.lrs) == len(result.losses) >= 10
    assert result.lrs == sorted(result.lrs)  # exponentially increasing
    assert 1e-7 <= result.suggestion <= 10 and 1e-7 <= result.steepest <= 10
    # The loss falls somewhere before it blows up, and the suggestion is below the minimum.
    i_min = int(np.argmin(result.losses))
    assert result.losses[i_min] < result.losses[0]
    assert result.suggestion == pytest.approx(result.lrs[i_min] / 10)
    png = result.plot(tmp_path / "lr.png")
    assert png is not None and png.stat().st_size > 1000


def test_gradient_accumulation_equals_one_big_batch() -> None:
    """Two micro-batches, one optimizer step: the same update as summing their losses by hand."""
    t = task(bs=4)
    cfg = TrainConfig(
        lr=1e-2, grad_accum=2, max_steps=2, progress=False, clip=0.0, weight_decay=0, disc_factor=1
    )
    model = t.model
    batches = list(t.train.batches(0))[:2]
    ref = AWDLSTMLanguageModel(CFG)
    ref.load_state_dict(model.state_dict())
    opt = torch.optim.AdamW(
        ref.parameters(), lr=1e-2 / 32, betas=(0.8, 0.99), eps=1e-6, weight_decay=0
    )
    ref.train()
    carry = None
    for b in batches:
        out = t.train_step(ref, b, carry)
        (out.loss / 2).backward()
        carry = out.carry
    # STLR at step 1 of 2 (the lr of the optimizer step) with lr_scale of the last batch.
    from ulmfit.training.schedules import slanted_triangular

    for g in opt.param_groups:
        g["lr"] = 1e-2 * slanted_triangular(1, t.n_batches(0)) * batches[1].lr_scale
    opt.step()
    fit(t, cfg, None)
    for (name, p), q in zip(model.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, msg=name, rtol=1e-5, atol=1e-6)


def test_training_writes_logs_plot_and_resumable_checkpoint(tmp_path: Path) -> None:
    t = task()
    saved: list[Path] = []
    t._save_files = lambda d: saved.append(d) or (d / "weights.marker").write_text("x")
    cfg = TrainConfig(epochs=4, lr=3e-2, progress=False, log_every=5)
    state = fit(t, cfg, tmp_path / "run")
    assert state.finished and state.epoch == 4
    rows = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    assert (tmp_path / "run/metrics.csv").read_text().startswith("epoch,step,train_loss")
    assert (tmp_path / "run/training.png").exists()
    meta = json.loads((tmp_path / "run/training_state.json").read_text())
    assert meta["finished"] and meta["global_step"] == state.global_step
    assert (tmp_path / "run/training_state.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no temporary leftovers
    # The loss went down on this learnable stream (uniform guessing: log 28 = 3.33).
    assert rows[-1]["train_loss"] < 0.7 * rows[0]["train_loss"]
    assert saved and all(d.parent == tmp_path for d in saved)  # files went to a temp sibling


def test_resume_with_another_schedule_is_refused(tmp_path: Path) -> None:
    """A piece stopped by max_steps resumes with new limits, not with a new schedule."""
    cfg = TrainConfig(epochs=2, lr=3e-2, progress=False, max_steps=5)
    state = fit(task(), cfg, tmp_path / "run")
    assert not state.finished and state.global_step == 5
    before = (tmp_path / "run/training_state.json").read_text()
    with pytest.raises(ValueError, match=r"run: cannot resume .*epochs: 2 -> 3"):
        fit(task(), cfg.replace(epochs=3, max_steps=0), tmp_path / "run", resume=True)
    with pytest.raises(ValueError, match=r"lr: 0.03 -> 0.01"):
        fit(task(), cfg.replace(lr=1e-2), tmp_path / "run", resume=True)
    assert (tmp_path / "run/training_state.json").read_text() == before  # nothing written
    # Limits and logging may change: the run goes on to its end.
    done = fit(task(), cfg.replace(max_steps=0, log_every=3), tmp_path / "run", resume=True)
    assert done.finished and done.global_step > 5


def test_precision_resolution() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) is None
    assert resolve_precision("bf16", cpu) == torch.bfloat16
    with pytest.raises(ValueError, match="fp16 needs a CUDA"):
        resolve_precision("fp16", cpu)
    with pytest.raises(ValueError, match="grad_accum"):
        TrainConfig(grad_accum=0)


def test_default_train_config_is_ulmfits_recipe() -> None:
    """Adam betas (0.8, 0.99), AR 2 / TAR 1, STLR with cut_frac 0.1 and ratio 32, lr / 2.6."""
    cfg = TrainConfig()
    assert cfg.optimizer == "adamw" and cfg.betas == (0.8, 0.99)
    assert (cfg.alpha, cfg.beta) == (2.0, 1.0)
    assert (cfg.schedule, cfg.cut_frac, cfg.ratio) == ("stlr", 0.1, 32.0)
    assert cfg.disc_factor == 2.6
    # And the optimizer the loop builds really uses them.
    t = task()
    opt = build_optimizer(t.layer_groups(), cfg, torch.device("cpu"))
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.8, 0.99)
    lrs = [g["base_lr"] for g in opt.param_groups]
    assert lrs[-1] == cfg.lr and lrs[-2] == pytest.approx(cfg.lr / 2.6)


def test_lm_train_step_returns_a_detached_carry() -> None:
    """Truncated BPTT: the state handed to the next batch carries values, not the graph."""
    t = task()
    t.model.train()
    b1, b2 = itertools.islice(t.train_batches(0, 0), 2)
    out = t.train_step(t.model, b1, t.init_carry())
    assert len(out.carry) == CFG.n_layers
    for h, c in out.carry:
        assert h.grad_fn is None and c.grad_fn is None
        assert not h.requires_grad and not c.requires_grad
        assert h.abs().sum() > 0  # the values themselves are carried
    out.loss.backward()
    # Through an attached carry this second backward would reach batch 1's freed graph.
    t.train_step(t.model, b2, out.carry).loss.backward()


HOST_READS = ("__int__", "__index__", "item", "tolist", "__bool__", "__float__")


def ulmfit_host_reads(monkeypatch: pytest.MonkeyPatch, run: Callable[[], Any]) -> int:
    """How often code under src/ulmfit reads a tensor's value on the host during ``run``.

    On a GPU each read waits for the queue to drain. torch's own reads (the CPU Adam's
    step counter) are not counted: on CUDA the fused AdamW has none.
    """
    reads: collections.Counter[str] = collections.Counter()
    with monkeypatch.context() as mp:
        for name in HOST_READS:
            orig = getattr(torch.Tensor, name)

            def spy(self: torch.Tensor, *a: Any, _orig: Any = orig, **k: Any) -> Any:
                caller = traceback.extract_stack(limit=2)[0]
                if "/ulmfit/" in caller.filename.replace("\\", "/"):
                    reads[f"{caller.filename}:{caller.lineno}"] += 1
                return _orig(self, *a, **k)

            mp.setattr(torch.Tensor, name, spy)
        run()
    return sum(reads.values())


def classifier_task(n_docs: int) -> ClassifierTask:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    docs = [rng.integers(2, 30, n) for n in rng.integers(1, 40, n_docs)]
    batches = ClassificationBatches(docs, rng.integers(0, 2, n_docs), 8, train=True)
    model = TextClassifierModel(ClassifierConfig(n_classes=2, bptt=10, max_len=64, encoder=CFG))
    return ClassifierTask(model, batches, None, torch.nn.CrossEntropyLoss(), dict, 2.0, 1.0)


@pytest.mark.parametrize("kind", ["lm", "classifier"])
def test_training_steps_read_nothing_on_the_host(
    monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """The loop reads values only at log points and epoch ends, however many steps it takes."""
    # As on a GPU: on the CPU, BPT3C reads the batch's lengths on purpose (reads are free
    # there, and rows that ended leave the batch).
    monkeypatch.setattr(backbone, "host_reads_are_free", lambda t: False)
    cfg = TrainConfig(epochs=1, progress=False, log_every=10**6)
    counts = {}
    for scale in (1, 2):
        t: Any = task(bs=4 // scale) if kind == "lm" else classifier_task(40 * scale)
        counts[t.n_batches(0)] = ulmfit_host_reads(monkeypatch, lambda t=t: fit(t, cfg, None))
    (few, n_few), (many, n_many) = sorted(counts.items())
    assert many > 1.5 * few  # about twice the steps ...
    assert n_many == n_few <= 4  # ... and the same few reads at the end of the epoch
