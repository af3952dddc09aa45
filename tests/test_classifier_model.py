"""The classifier model: masked pooling, padding invariance, BPT3C memory and gradients."""

from __future__ import annotations

import pytest
import torch

from ulmfit.models import backbone
from ulmfit.models.backbone import KINDS, EncoderConfig
from ulmfit.models.classifier import ClassifierConfig, TextClassifierModel, masked_concat_pool
from ulmfit.training.param_groups import set_trainable


def tiny(
    max_len: int = 12, bptt: int = 5, kind: str = "awd_lstm", **kw: object
) -> TextClassifierModel:
    torch.manual_seed(0)
    enc = EncoderConfig(kind=kind, vocab_size=60, emb_size=8, hidden_size=10, n_layers=2)
    cfg = ClassifierConfig(n_classes=3, bptt=bptt, max_len=max_len, encoder=enc, **kw)  # type: ignore[arg-type]
    return TextClassifierModel(cfg)


def test_masked_concat_pool_ignores_padding() -> None:
    out = torch.tensor([[[1.0], [5.0], [3.0], [100.0]], [[2.0], [-100.0], [-100.0], [-100.0]]])
    pooled = masked_concat_pool(out, torch.tensor([3, 1]))
    # [last, max, mean] over real steps only
    assert pooled.tolist() == [[3.0, 5.0, 3.0], [2.0, 2.0, 2.0]]


@pytest.mark.parametrize("kind", KINDS)
def test_head_shapes(kind: str) -> None:
    model = tiny(kind=kind)
    out = model(torch.randint(2, 60, (4, 9)), torch.tensor([9, 3, 5, 1]))
    assert out.logits.shape == (4, 3)
    assert out.pooled.shape == (4, 24)
    assert len(model.layer_groups()) == 4  # embedding, 2 layers, head


@pytest.mark.parametrize("length", [4, 12, 40])  # shorter than, equal to and longer than max_len
@pytest.mark.parametrize("kind", KINDS)
def test_padding_invariance(length: int, kind: str) -> None:
    model = tiny(kind=kind).eval()
    torch.manual_seed(1)
    doc = torch.randint(2, 60, (length,))
    alone = model(doc[None], torch.tensor([length])).logits
    others = [torch.randint(2, 60, (n,)) for n in (70, 3, 25)]
    batch = torch.full((4, 70), 1)
    batch[1, :length] = doc
    for i, o in zip((0, 2, 3), others, strict=True):
        batch[i, : len(o)] = o
    lengths = torch.tensor([70, length, 3, 25])
    in_batch = model(batch, lengths).logits[1]
    torch.testing.assert_close(in_batch, alone[0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_bpt3c_gradients_reach_only_the_kept_window(kind: str) -> None:
    model = tiny(max_len=10, bptt=5, kind=kind).train()
    # 500 tokens = 50 x max_len; the prefix uses ids 10..29, the last 10 tokens ids 40..49.
    prefix = torch.randint(10, 30, (490,))
    window = torch.arange(40, 50)
    doc = torch.cat([prefix, window])[None].repeat(2, 1)  # BatchNorm needs two rows
    model(doc, torch.tensor([500, 500])).logits.sum().backward()
    g = model.encoder.embedding.weight.grad
    assert g is not None
    assert g[10:30].abs().sum() == 0  # prefix tokens: read without gradient
    assert (g[40:50].abs().sum(1) > 0).all()  # every kept token gets one


def _saved_bytes(model: TextClassifierModel, length: int) -> int:
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    doc = torch.randint(2, 60, (2, length))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(doc, torch.tensor([length, length])).logits.sum().backward()
    return total


@pytest.mark.parametrize("kind", KINDS)
def test_bpt3c_memory_is_bounded_by_max_len(kind: str) -> None:
    model = tiny(max_len=20, bptt=5, kind=kind).train()
    short, long = _saved_bytes(model, 40), _saved_bytes(model, 1000)  # 2x and 50x max_len
    # What backward keeps depends on the window, not the document length
    # (up to the vocab-size embedding-dropout mask, the same for both).
    assert long <= short * 1.05


@pytest.mark.parametrize("kind", KINDS)
def test_gradual_unfreezing_on_classifier_groups(kind: str) -> None:
    model = tiny(kind=kind)
    groups = model.layer_groups()
    set_trainable(groups, 1)
    assert all(p.requires_grad for p in model.head.parameters())
    assert not any(p.requires_grad for p in model.encoder.parameters())
    set_trainable(groups, 2)
    layer0, layer1 = model.encoder.layer_groups()[1:]
    assert all(p.requires_grad for p in layer1)
    assert not any(p.requires_grad for p in layer0)
    assert not model.encoder.embedding.weight.requires_grad
    set_trainable(groups, len(groups))
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("kind", KINDS)
def test_wider_padding_changes_nothing(kind: str) -> None:
    """Shapes come from x: padding beyond the longest row (and beyond max_len) is ignored."""
    model = tiny(max_len=10, bptt=5, kind=kind).eval()
    torch.manual_seed(2)
    lengths = torch.tensor([8, 3, 6])
    tight = torch.full((3, 8), 1)
    for i, n in enumerate(lengths.tolist()):
        tight[i, :n] = torch.randint(2, 60, (n,))
    wide = torch.full((3, 25), 1)
    wide[:, :8] = tight
    torch.testing.assert_close(
        model(wide, lengths).logits, model(tight, lengths).logits, rtol=0, atol=1e-6
    )


@pytest.mark.parametrize("kind", KINDS)
def test_rows_that_ended_leave_the_batch_without_changing_the_result(
    monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Training on the CPU runs each chunk on the rows still reading; the same logits as
    running every row over its padding (rows in any order, a prefix and a short row)."""
    model = tiny(max_len=12, bptt=4, kind=kind).eval()
    torch.manual_seed(3)
    lengths = torch.tensor([5, 17, 1, 9])
    x = torch.randint(2, 60, (4, 17))
    seen: list[int] = []
    model.encoder.register_forward_pre_hook(lambda m, args: seen.append(args[0].size(0)))
    skipping = model(x, lengths).logits
    monkeypatch.setattr(backbone, "host_reads_are_free", lambda t: False)
    n_calls = len(seen)
    padded = model(x, lengths).logits
    torch.testing.assert_close(skipping, padded, rtol=0, atol=1e-5)
    if kind != "transformer":  # it reads all windows at once, in one call
        assert seen[n_calls:] == [4, 4, 4]  # every row in every chunk
        assert seen[:n_calls] == [4, 3, 2]  # windows 12, 9, 5, 1: fewer rows each chunk


@pytest.mark.parametrize("kind", KINDS)
def test_forward_never_reads_a_tensor_value_on_the_host(
    monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """On a GPU each such read (int(t), t.item(), t.tolist()) stalls the host every batch
    (on the CPU, where reads are free, training skips rows that have ended instead)."""
    monkeypatch.setattr(backbone, "host_reads_are_free", lambda t: False)
    model = tiny(max_len=50, bptt=5, kind=kind).train()
    x = torch.randint(2, 60, (4, 30))
    lengths = torch.tensor([30, 22, 9, 1])

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a host read of a tensor value in forward")

    for name in ("__int__", "__index__", "item", "tolist", "__bool__", "__float__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    out = model(x, lengths)
    monkeypatch.undo()
    out.logits.sum().backward()
    assert out.logits.shape == (4, 3)
