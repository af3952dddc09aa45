"""Language-model modules: dropout semantics, tying, shapes, state passing, AR/TAR; the
behaviour every backbone shares is checked for each kind."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ulmfit.models.awd_lstm import (
    AWDLSTMConfig,
    AWDLSTMLanguageModel,
    ar_tar_penalty,
    detach_state,
)
from ulmfit.models.backbone import KINDS
from ulmfit.models.dropout import (
    LockedDropout,
    WeightDropLSTM,
    WordEmbedding,
    one_weight_mask_per_read,
)
from ulmfit.models.qrnn import QRNNLayer, forget_mult

RECURRENT = [k for k in KINDS if k != "transformer"]  # backbones that carry a state


def tiny_config(**kw: object) -> AWDLSTMConfig:
    base: dict[str, object] = dict(vocab_size=50, emb_size=8, hidden_size=12, n_layers=3)
    base.update(kw)
    return AWDLSTMConfig(**base)  # type: ignore[arg-type]


def test_locked_dropout_mask_shared_over_time_and_identity_in_eval() -> None:
    torch.manual_seed(0)
    dp = LockedDropout(0.5)
    x = torch.ones(4, 7, 16)
    y = dp(x)
    # One mask per sequence and feature: every time step sees the same mask.
    assert torch.equal(y, y[:, :1, :].expand_as(y))
    assert set(y.unique().tolist()) == {0.0, 2.0}
    dp.eval()
    assert torch.equal(dp(x), x)


def test_embedding_dropout_drops_whole_words() -> None:
    torch.manual_seed(0)
    emb = WordEmbedding(30, 6, pad_id=1, embed_p=0.5)
    ids = torch.arange(30).repeat(3, 1)  # each word three times
    out = emb(ids)
    dropped = (out == 0).all(-1)  # (3, 30)
    assert dropped.any() and not dropped.all()
    # A dropped word is dropped everywhere it occurs in the batch.
    assert torch.equal(dropped[0], dropped[1]) and torch.equal(dropped[1], dropped[2])
    kept = ~dropped[0]
    assert torch.allclose(out[0][kept], emb.weight[kept] * 2)
    emb.eval()
    assert torch.equal(emb(ids)[0], emb.weight.detach()[ids[0]])


def test_weight_drop_changes_effective_weight_in_train_only() -> None:
    torch.manual_seed(0)
    layer = WeightDropLSTM(5, 7, weight_p=0.5)
    raw = layer.lstm.weight_hh_l0.detach().clone()
    x = torch.randn(2, 6, 5)
    layer.train()
    y1, _ = layer(x)
    y2, _ = layer(x)
    plain, _ = layer.lstm(x)  # the undropped weight
    assert not torch.allclose(y1, plain) and not torch.allclose(y1, y2)
    assert torch.equal(layer.lstm.weight_hh_l0, raw)  # the raw parameter is never overwritten
    layer.eval()
    y3, _ = layer(x)
    assert torch.equal(y3, plain.detach()) or torch.allclose(y3, plain)


def test_weight_drop_gradient_reaches_raw_weight() -> None:
    torch.manual_seed(0)
    layer = WeightDropLSTM(5, 7, weight_p=0.3)
    layer.train()
    y, _ = layer(torch.randn(2, 6, 5))
    y.sum().backward()
    g = layer.lstm.weight_hh_l0.grad
    assert g is not None and g.abs().sum() > 0
    # Dropped entries of the weight got exactly zero gradient: some zeros, not all.
    assert (g == 0).any() and (g != 0).any()


def test_one_weight_mask_per_read_shares_masks_and_keeps_gradients() -> None:
    """Inside the block a DropConnect layer and the embedding reuse one mask on every
    call (also across a no-grad call, whose result must not cut the gradient); outside
    it, and after it, each call draws a fresh one."""
    torch.manual_seed(0)
    layer = WeightDropLSTM(5, 7, weight_p=0.5)
    emb = WordEmbedding(30, 6, pad_id=1, embed_p=0.5)
    block = nn.ModuleList([layer, emb]).train()
    x, ids = torch.randn(2, 6, 5), torch.arange(30)[None]
    with one_weight_mask_per_read(block):
        with torch.no_grad():
            y0, _ = layer(x)
            e0 = emb(ids)
        y1, _ = layer(x)
        y2, _ = layer(x)
        e1 = emb(ids)
        with one_weight_mask_per_read(block):  # nested: still the same masks
            y3, _ = layer(x)
        y4, _ = layer(x)
    assert torch.equal(y1, y2) and torch.equal(y0, y1.detach()) and torch.equal(y3, y1)
    assert torch.equal(y4, y1) and torch.equal(e0, e1.detach())
    (y1.sum() + y4.sum() + e1.sum()).backward()
    g = layer.lstm.weight_hh_l0.grad
    assert g is not None and (g == 0).any() and (g != 0).any()
    assert emb.weight.grad is not None and emb.weight.grad.abs().sum() > 0
    after, _ = layer(x)
    assert not torch.allclose(after, y1)  # released: a fresh mask
    assert not layer.weight_mask.holding and not emb.weight_mask.holding


@pytest.mark.parametrize("kind", KINDS)
def test_tied_weights_are_one_tensor(kind: str) -> None:
    model = AWDLSTMLanguageModel(tiny_config(kind=kind))
    assert model.decoder.weight is model.encoder.embedding.weight
    n_unique = len({p.data_ptr() for p in model.parameters()})
    assert n_unique == len(list(model.parameters()))  # parameters() lists the tied one once
    untied = AWDLSTMLanguageModel(tiny_config(kind=kind, tie_weights=False))
    assert untied.decoder.weight is not untied.encoder.embedding.weight


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_and_last_layer_returns_to_embedding_size(kind: str) -> None:
    cfg = tiny_config(kind=kind)
    model = AWDLSTMLanguageModel(cfg)
    out = model(torch.randint(0, 50, (3, 11)))
    assert out.logits.shape == (3, 11, 50)
    assert out.output.shape == out.raw_output.shape == (3, 11, 8)
    # LSTM: (h, c) per layer; QRNN: (last input, c) per layer; transformer: nothing.
    last = [tuple(t.shape) for t in (s[-1] for s in out.state)]
    assert last == ([] if kind == "transformer" else [(1, 3, 12), (1, 3, 12), (1, 3, 8)])
    names = {
        "awd_lstm": "AWDLSTMEncoder",
        "qrnn": "QRNNEncoder",
        "transformer": "TransformerEncoder",
    }
    assert type(model.encoder).__name__ == names[kind]
    groups = model.layer_groups()
    assert len(groups) == 4 and groups[-1][0] is model.encoder.embedding.weight


@pytest.mark.parametrize("kind", RECURRENT)
def test_state_passed_in_and_returned_continues_the_sequence(kind: str) -> None:
    torch.manual_seed(0)
    model = AWDLSTMLanguageModel(tiny_config(kind=kind)).eval()
    ids = torch.randint(0, 50, (2, 10))
    whole = model(ids).logits
    first = model(ids[:, :4])
    second = model(ids[:, 4:], detach_state(first.state))
    assert torch.allclose(torch.cat([first.logits, second.logits], 1), whole, atol=1e-6)


def test_dropouts_scale_with_drop_mult_and_are_validated() -> None:
    cfg = tiny_config(drop_mult=0.5)
    model = AWDLSTMLanguageModel(cfg)
    assert model.encoder.input_dp.p == pytest.approx(0.125)
    assert model.encoder.rnns[0].weight_p == pytest.approx(0.1)
    with pytest.raises(ValueError, match="weight_p"):
        tiny_config(weight_p=0.6, drop_mult=2.0)
    with pytest.raises(ValueError, match="vocab_size"):
        AWDLSTMLanguageModel(AWDLSTMConfig())


@pytest.mark.parametrize("kind", KINDS)
def test_eval_mode_is_deterministic_and_train_mode_is_not(kind: str) -> None:
    model = AWDLSTMLanguageModel(tiny_config(kind=kind))
    ids = torch.randint(0, 50, (2, 9))
    model.eval()
    assert torch.equal(model(ids).logits, model(ids).logits)
    model.train()
    assert not torch.equal(model(ids).logits, model(ids).logits)


def test_ar_tar_penalty_values() -> None:
    out = torch.tensor([[[1.0, 1.0], [3.0, 3.0]]])  # (1, 2, 2)
    raw = torch.tensor([[[0.0, 0.0], [2.0, 0.0]]])
    # AR: mean(out^2) = (1+1+9+9)/4 = 5; TAR: mean((raw_t - raw_{t-1})^2) = (4+0)/2 = 2
    assert ar_tar_penalty(out, raw, 2.0, 1.0).item() == pytest.approx(2 * 5 + 2)
    assert ar_tar_penalty(out, raw, 0.0, 0.0).item() == 0.0


def test_model_is_plain_modules_no_patching() -> None:
    model = AWDLSTMLanguageModel(tiny_config())
    lstms = [m for m in model.modules() if isinstance(m, nn.LSTM)]
    assert len(lstms) == 3
    # The hidden-to-hidden weight is an ordinary registered parameter of nn.LSTM.
    assert all("weight_hh_l0" in dict(m.named_parameters()) for m in lstms)


def test_default_config_is_ulmfits_language_model() -> None:
    """400-d embeddings, 1152 hidden units, 3 layers, tied decoder; fastai's LM dropouts."""
    cfg = AWDLSTMConfig()
    assert (cfg.emb_size, cfg.hidden_size, cfg.n_layers, cfg.tie_weights) == (400, 1152, 3, True)
    dropouts = (cfg.input_p, cfg.embed_p, cfg.weight_p, cfg.hidden_p, cfg.output_p)
    assert dropouts == (0.25, 0.02, 0.2, 0.15, 0.1) and cfg.drop_mult == 1.0
    assert cfg.layer_sizes() == [(400, 1152), (1152, 1152), (1152, 400)]


def test_qrnn_fo_pooling_matches_the_recurrence_written_out() -> None:
    torch.manual_seed(0)
    f, z, c0 = torch.rand(2, 7, 3), torch.randn(2, 7, 3), torch.randn(2, 3)
    expected, c = [], c0
    for t in range(7):
        c = f[:, t] * c + (1 - f[:, t]) * z[:, t]
        expected.append(c)
    torch.testing.assert_close(forget_mult(f, z, c0), torch.stack(expected, 1))


@pytest.mark.parametrize("window", [1, 2])
def test_qrnn_gates_see_only_the_current_and_previous_token(window: int) -> None:
    """Causal: changing token t changes outputs from t on, never before; with window 2 the
    gate of t+1 reads token t directly (not only through c)."""
    torch.manual_seed(0)
    layer = QRNNLayer(4, 5, window, weight_p=0.0).eval()
    x = torch.randn(1, 8, 4)
    y = x.clone()
    y[0, 3] += 1.0
    hx, _ = layer(x)
    hy, _ = layer(y)
    assert torch.equal(hx[:, :3], hy[:, :3]) and not torch.equal(hx[:, 3], hy[:, 3])
    # The carried state (last input, last c) continues the sequence exactly.
    first = layer(x[:, :5])
    second, _ = layer(x[:, 5:], first[1])
    torch.testing.assert_close(torch.cat([first[0], second], 1), hx, rtol=0, atol=1e-6)


def test_qrnn_dropconnect_drops_gate_weights_in_train_only() -> None:
    torch.manual_seed(0)
    layer = QRNNLayer(4, 5, 2, weight_p=0.5)
    x = torch.randn(2, 6, 4)
    layer.train()
    assert not torch.equal(layer(x)[0], layer(x)[0])
    layer.eval()
    assert torch.equal(layer(x)[0], layer(x)[0])
    layer.train()
    layer(x)[0].sum().backward()
    assert layer.linear.weight.grad is not None and layer.linear.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("rotary", [False, True])
def test_transformer_is_causal_and_reads_at_most_its_context(rotary: bool) -> None:
    torch.manual_seed(0)
    cfg = tiny_config(kind="transformer", n_heads=2, context=10, rotary=rotary)
    model = AWDLSTMLanguageModel(cfg).eval()
    ids = torch.randint(2, 50, (2, 10))
    changed = ids.clone()
    changed[:, 6] = (changed[:, 6] + 1) % 50
    a, b = model(ids).logits, model(changed).logits
    assert torch.equal(a[:, :6], b[:, :6]) and not torch.equal(a[:, 6], b[:, 6])
    with pytest.raises(ValueError, match="at most context=10 tokens"):
        model(torch.randint(2, 50, (1, 11)))
    with pytest.raises(ValueError, match="must divide by n_heads"):
        tiny_config(kind="transformer", n_heads=3)
    # One layer group per block; the embeddings (and learned positions) first.
    groups = model.encoder.layer_groups()
    assert len(groups) == 1 + cfg.n_layers
    assert (model.encoder.positions is None) == rotary
