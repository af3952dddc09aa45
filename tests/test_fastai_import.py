"""Importing fastai's AWD-LSTM weights: layout, vocabulary order, and no code execution."""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import pytest
import torch

from ulmfit.checkpoint import CheckpointError
from ulmfit.models.awd_lstm import AWDLSTMConfig, AWDLSTMLanguageModel
from ulmfit.models.fastai_import import import_fastai, load_fastai_vocab, ulmfit_to_fastai
from ulmfit.models.io import load_lm

# fastai v1's special tokens, in its order (different from ours).
FASTAI_SPECIALS = ["xxunk", "xxpad", "xxbos", "xxeos", "xxfld", "xxmaj", "xxup", "xxrep", "xxwrep"]


def fastai_files(tmp_path: Path) -> tuple[Path, Path, AWDLSTMLanguageModel, list[str]]:
    """A synthetic fastai checkpoint of the real layout (keys, shapes, vocab order)."""
    itos = FASTAI_SPECIALS + [f"word{i}" for i in range(40)]
    torch.manual_seed(0)
    ref = AWDLSTMLanguageModel(
        AWDLSTMConfig(vocab_size=len(itos), emb_size=10, hidden_size=14, n_layers=3)
    )
    with torch.no_grad():
        ref.decoder.bias.normal_()
    sd = ulmfit_to_fastai(ref)
    assert "0.rnns.2.weight_hh_l0_raw" in sd and "0.rnns.1.module.weight_ih_l0" in sd
    weights, vocab = tmp_path / "lstm_wt103.pth", tmp_path / "itos_wt103.pkl"
    torch.save(sd, weights)
    vocab.write_bytes(pickle.dumps(itos))
    return weights, vocab, ref, itos


def test_import_round_trip_same_predictions(tmp_path: Path) -> None:
    weights, vocab, ref, fa_itos = fastai_files(tmp_path)
    out = import_fastai(weights, vocab, tmp_path / "imported")
    lm = load_lm(out)
    assert lm.vocab.itos[:9] == [
        "xxunk",
        "xxpad",
        "xxbos",
        "xxeos",
        "xxfld",
        "xxrep",
        "xxwrep",
        "xxup",
        "xxmaj",
    ]
    assert set(lm.vocab.itos) == set(fa_itos)
    # Same text -> same next-token distribution, whatever the id order.
    words = [random.Random(0).choice(fa_itos) for _ in range(30)]
    ref_ids = torch.tensor([[fa_itos.index(w) for w in words]])
    our_ids = torch.tensor([[lm.vocab.stoi[w] for w in words]])
    ref_logits = ref.eval()(ref_ids).logits[0]
    our_logits = lm.model.eval()(our_ids).logits[0]
    perm = torch.tensor([fa_itos.index(w) for w in lm.vocab.itos])
    assert torch.allclose(our_logits, ref_logits[:, perm], atol=1e-5)
    # And back: our export reproduces fastai's tensors row for row.
    back = ulmfit_to_fastai(lm.model)
    for key in ("0.rnns.0.weight_hh_l0_raw", "0.rnns.2.module.bias_ih_l0"):
        assert torch.equal(back[key], torch.load(weights, weights_only=True)[key])


def test_learner_save_layout_and_mismatch(tmp_path: Path) -> None:
    weights, vocab, _, itos = fastai_files(tmp_path)
    sd = torch.load(weights, weights_only=True)
    wrapped = tmp_path / "learner.pth"
    torch.save({"model": sd, "opt": {}}, wrapped)
    import_fastai(wrapped, vocab, tmp_path / "ok")
    short = tmp_path / "short.pkl"
    short.write_bytes(pickle.dumps(itos[:-3]))
    with pytest.raises(CheckpointError, match="does not belong"):
        import_fastai(weights, short, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned > /dev/null",))


def test_vocab_pickle_cannot_run_code(tmp_path: Path) -> None:
    evil = tmp_path / "itos.pkl"
    evil.write_bytes(pickle.dumps(["xxunk", _Evil()]))
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_fastai_vocab(evil)


def test_weights_file_cannot_run_code(tmp_path: Path) -> None:
    evil = tmp_path / "model.pth"
    torch.save({"0.encoder.weight": torch.zeros(2, 2), "x": _Evil()}, evil)
    with pytest.raises(CheckpointError, match="weights-only"):
        import_fastai(evil, tmp_path / "nope.pkl", tmp_path / "out")
