"""Model directories: bit-exact round trips, checks on load, atomic writes, vocab transfer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ulmfit.checkpoint import (
    CheckpointError,
    load_weights,
    model_state_for_saving,
    write_dir_atomically,
)
from ulmfit.models.awd_lstm import AWDLSTMConfig, AWDLSTMLanguageModel
from ulmfit.models.io import load_lm, write_lm_files
from ulmfit.models.transfer import transfer_rows
from ulmfit.text.tokenize import SPECIAL_TOKENS, TokenizerConfig
from ulmfit.text.vocab import Vocab


def tiny_lm(vocab_size: int, seed: int = 0) -> AWDLSTMLanguageModel:
    torch.manual_seed(seed)
    return AWDLSTMLanguageModel(
        AWDLSTMConfig(vocab_size=vocab_size, emb_size=8, hidden_size=12, n_layers=2)
    )


def tiny_vocab(n_words: int = 11) -> Vocab:
    return Vocab(list(SPECIAL_TOKENS) + [f"w{i}" for i in range(n_words)])


def save_lm(path: Path, model: AWDLSTMLanguageModel, vocab: Vocab) -> None:
    write_dir_atomically(path, lambda tmp: write_lm_files(tmp, model, vocab, TokenizerConfig()))


def test_save_load_gives_bit_identical_outputs(tmp_path: Path) -> None:
    vocab = tiny_vocab()
    model = tiny_lm(len(vocab)).eval()
    save_lm(tmp_path / "lm", model, vocab)
    loaded = load_lm(tmp_path / "lm")
    ids = torch.randint(0, len(vocab), (3, 13))
    assert torch.equal(model(ids).logits, loaded.model.eval()(ids).logits)
    assert loaded.vocab.itos == vocab.itos
    assert loaded.model.decoder.weight is loaded.model.encoder.embedding.weight  # still tied
    # The tied weight is stored once.
    assert "decoder.weight" not in model_state_for_saving(model)


def test_vocab_weights_mismatch_is_named(tmp_path: Path) -> None:
    vocab = tiny_vocab()
    save_lm(tmp_path / "lm", tiny_lm(len(vocab)), vocab)
    tiny_vocab(5).save(tmp_path / "lm" / "vocab.json")  # someone swapped the vocabulary
    with pytest.raises(CheckpointError, match=r"vocab\.json.*does not belong"):
        load_lm(tmp_path / "lm")


def test_shape_mismatch_names_tensor(tmp_path: Path) -> None:
    vocab = tiny_vocab()
    save_lm(tmp_path / "lm", tiny_lm(len(vocab)), vocab)
    other = AWDLSTMLanguageModel(
        AWDLSTMConfig(vocab_size=len(vocab), emb_size=8, hidden_size=16, n_layers=2)
    )
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*weight_hh_l0 has shape"):
        load_weights(tmp_path / "lm" / "model.safetensors", other)


def test_future_format_version_refused(tmp_path: Path) -> None:
    vocab = tiny_vocab()
    save_lm(tmp_path / "lm", tiny_lm(len(vocab)), vocab)
    cfg_path = tmp_path / "lm" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["format_version"] = 99
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="format_version 99"):
        load_lm(tmp_path / "lm")
    with pytest.raises(CheckpointError, match="not a ulmfit model directory"):
        load_lm(tmp_path / "nowhere")


def test_failed_write_leaves_old_directory_untouched(tmp_path: Path) -> None:
    vocab = tiny_vocab()
    model = tiny_lm(len(vocab))
    save_lm(tmp_path / "lm", model, vocab)
    before = {p.name: p.read_bytes() for p in (tmp_path / "lm").iterdir()}

    def explode(tmp: Path) -> None:
        write_lm_files(tmp, tiny_lm(len(vocab), seed=1), vocab, TokenizerConfig())
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_dir_atomically(tmp_path / "lm", explode)
    after = {p.name: p.read_bytes() for p in (tmp_path / "lm").iterdir()}
    assert after == before
    assert [p.name for p in tmp_path.iterdir()] == ["lm"]  # no temporary leftovers
    with pytest.raises(RuntimeError):
        write_dir_atomically(tmp_path / "new", explode)
    assert not (tmp_path / "new").exists()


def test_vocab_transfer_known_rows_exact_unknown_rows_mean() -> None:
    old = torch.randn(5, 3)
    old_itos = ["a", "b", "c", "d", "e"]
    new_itos = ["c", "zz", "a", "yy"]
    new, n_found = transfer_rows(old, old_itos, new_itos)
    assert n_found == 2
    assert torch.equal(new[0], old[2]) and torch.equal(new[2], old[0])
    assert torch.allclose(new[1], old.mean(0)) and torch.allclose(new[3], old.mean(0))
    bias, _ = transfer_rows(torch.arange(5.0), old_itos, new_itos)
    assert bias.tolist() == [2.0, 2.0, 0.0, 2.0]


def test_export_bf16_shards_round_trip(tmp_path: Path) -> None:
    from ulmfit.models.io import export_lm

    vocab = tiny_vocab(300)
    model = AWDLSTMLanguageModel(
        AWDLSTMConfig(vocab_size=len(vocab), emb_size=64, hidden_size=48, n_layers=2)
    ).eval()
    save_lm(tmp_path / "lm", model, vocab)
    limit = 16 * 1024  # 16 KiB here stands for the 16 MiB of a real export
    write_dir_atomically(
        tmp_path / "exp",
        lambda d: write_lm_files(
            d, model, vocab, TokenizerConfig(), None, None, torch.bfloat16, limit
        ),
    )
    shards = sorted((tmp_path / "exp").glob("model-*.safetensors"))
    assert len(shards) > 3
    # Each shard holds at most `limit` bytes of tensor data (plus a small header).
    assert all(p.stat().st_size < limit + 2048 for p in shards)
    assert not (tmp_path / "exp/model.safetensors").exists()
    loaded = load_lm(tmp_path / "exp")
    ids = torch.randint(0, len(vocab), (2, 9))
    ref = model(ids).logits
    got = loaded.model.eval()(ids).logits
    torch.testing.assert_close(got, ref, atol=0.05, rtol=0.05)  # bf16 rounding only
    emb = loaded.model.encoder.embedding.weight
    assert torch.equal(emb, model.encoder.embedding.weight.to(torch.bfloat16).float())
    # The command-line export drops the training state and writes 16 MiB shards.
    export_lm(tmp_path / "lm", tmp_path / "exp2")
    assert (tmp_path / "exp2/model.safetensors.index.json").exists()
    assert not (tmp_path / "exp2/training_state.json").exists()
