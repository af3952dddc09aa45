"""Importing fastai's AWD-LSTM weights: layout, vocabulary order, and no code execution."""

from __future__ import annotations

import os
import pickle
import random
import re
import sys
import types
from pathlib import Path

import pytest
import torch

from fastai_texts import DATA, texts  # type: ignore[import-not-found]
from ulmfit.checkpoint import CheckpointError
from ulmfit.cli.main import main
from ulmfit.models.awd_lstm import AWDLSTMConfig, AWDLSTMLanguageModel
from ulmfit.models.fastai_import import import_fastai, load_fastai_vocab, ulmfit_to_fastai
from ulmfit.models.io import LoadedLM, load_lm
from ulmfit.text.tokenize import get_tokenizer

# fastai v1's special tokens, in its order (different from ours).
FASTAI_SPECIALS = ["xxunk", "xxpad", "xxbos", "xxeos", "xxfld", "xxmaj", "xxup", "xxrep", "xxwrep"]


def fastai_files(
    tmp_path: Path, tie_weights: bool = True
) -> tuple[Path, Path, AWDLSTMLanguageModel, list[str]]:
    """A synthetic fastai checkpoint of the real layout (keys, shapes, vocab order)."""
    itos = FASTAI_SPECIALS + [f"word{i}" for i in range(40)]
    torch.manual_seed(0)
    ref = AWDLSTMLanguageModel(
        AWDLSTMConfig(
            vocab_size=len(itos), emb_size=10, hidden_size=14, n_layers=3, tie_weights=tie_weights
        )
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


def same_predictions(lm: LoadedLM, ref: AWDLSTMLanguageModel, fa_itos: list[str]) -> bool:
    """Same text -> same next-token distribution, whatever the id order."""
    words = [random.Random(0).choice(fa_itos) for _ in range(30)]
    ref_logits = ref.eval()(torch.tensor([[fa_itos.index(w) for w in words]])).logits[0]
    our_logits = lm.model.eval()(torch.tensor([[lm.vocab.stoi[w] for w in words]])).logits[0]
    perm = torch.tensor([fa_itos.index(w) for w in lm.vocab.itos])
    return torch.allclose(our_logits, ref_logits[:, perm], atol=1e-5)


def test_fastai_v2_layout_without_module_weight_hh(tmp_path: Path) -> None:
    """fastai v2's WeightDropout keeps only ``weight_hh_l0_raw``: the import reads that one."""
    weights, vocab, ref, fa_itos = fastai_files(tmp_path)
    v1 = load_lm(import_fastai(weights, vocab, tmp_path / "v1"))
    sd = torch.load(weights, weights_only=True)
    dropped = [k for k in sd if k.endswith(".module.weight_hh_l0")]
    assert len(dropped) == 3
    v2_file = tmp_path / "v2.pth"
    torch.save({k: v for k, v in sd.items() if k not in dropped}, v2_file)
    v2 = load_lm(import_fastai(v2_file, vocab, tmp_path / "v2"))
    assert v2.vocab.itos == v1.vocab.itos
    a, b = v1.model.state_dict(), v2.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert same_predictions(v2, ref, fa_itos)


def test_untied_decoder_is_imported_untied(tmp_path: Path) -> None:
    weights, vocab, ref, fa_itos = fastai_files(tmp_path, tie_weights=False)
    sd = torch.load(weights, weights_only=True)
    assert not torch.equal(sd["1.decoder.weight"], sd["0.encoder.weight"])
    lm = load_lm(import_fastai(weights, vocab, tmp_path / "untied"))
    assert not lm.model.config.tie_weights
    assert lm.model.decoder.weight is not lm.model.encoder.embedding.weight
    assert same_predictions(lm, ref, fa_itos)  # the decoder rows were reordered too


def test_cli_import_fastai(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights, vocab, ref, fa_itos = fastai_files(tmp_path)
    out = tmp_path / "cli"
    assert main(["-q", "import-fastai", str(weights), str(vocab), str(out)]) == 0
    assert f"model directory: {out}" in capsys.readouterr().out
    lm = load_lm(out)
    assert lm.config["stage"] == "import-fastai"
    assert same_predictions(lm, ref, fa_itos)
    # A bad file is one clear line on stderr and exit status 2, not a traceback.
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    assert main(["-q", "import-fastai", str(junk), str(vocab), str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "junk.pth" in err and "torch file of tensors" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


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
    """A pickle whose __reduce__ would write a marker file: it is never called."""
    marker = tmp_path / "pwned"
    weights, vocab, _, _ = fastai_files(tmp_path)
    sd = torch.load(weights, weights_only=True)
    evil = tmp_path / "model.pth"
    torch.save({"model": sd, "opt": _Marker(marker)}, evil)
    out = import_fastai(evil, vocab, tmp_path / "out")  # the optimizer state is dropped
    assert load_lm(out).model.config.n_layers == 3
    torch.save({**sd, "0.extra": _Marker(marker)}, evil)
    with pytest.raises(CheckpointError, match=re.escape("not tensors: ['0.extra']")):
        import_fastai(evil, vocab, tmp_path / "out2")
    assert not marker.exists() and not (tmp_path / "out2").exists()


class _Marker:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.path}",))


def test_a_learner_save_file_with_optimizer_state_imports(tmp_path: Path) -> None:
    """``learn.save('x')`` keeps fastcore's ``L`` in the optimizer state: torch's
    weights-only reader refuses it; the tensors are read, the rest never built."""
    weights, vocab, ref, _ = fastai_files(tmp_path)
    sd = torch.load(weights, weights_only=True)
    fake = types.ModuleType("fastcore.foundation")  # pickled by name; absent when loading

    class L(list):
        pass

    L.__module__, L.__qualname__ = fake.__name__, "L"
    fake.L = L  # type: ignore[attr-defined]
    opt = {"state": L([{"grad_avg": torch.ones(3), "step": 4}]), "hypers": L([{"lr": 1e-3}])}
    saved = tmp_path / "x.pth"
    parent = types.ModuleType("fastcore")
    parent.foundation = fake  # type: ignore[attr-defined]
    sys.modules.update({"fastcore": parent, fake.__name__: fake})
    try:
        torch.save({"model": sd, "opt": opt}, saved)
    finally:
        del sys.modules["fastcore"], sys.modules[fake.__name__]
    with pytest.raises(Exception, match=re.escape("fastcore.foundation.L")):
        torch.load(saved, weights_only=True)  # what the user met before
    lm = load_lm(import_fastai(saved, vocab, tmp_path / "lm"))
    assert torch.equal(
        lm.model.encoder.rnns[0].lstm.weight_ih_l0, ref.encoder.rnns[0].lstm.weight_ih_l0
    )


def test_a_decoder_without_bias_imports_and_other_layouts_are_named(tmp_path: Path) -> None:
    weights, vocab, ref, _ = fastai_files(tmp_path)
    sd = torch.load(weights, weights_only=True)
    with torch.no_grad():
        ref.decoder.bias.zero_()  # out_bias=False: the same logits as a zero bias
    no_bias = tmp_path / "no_bias.pth"
    torch.save({k: v for k, v in sd.items() if k != "1.decoder.bias"}, no_bias)
    lm = load_lm(import_fastai(no_bias, vocab, tmp_path / "lm"))
    assert torch.count_nonzero(lm.model.decoder.bias) == 0
    x = torch.randint(0, 49, (2, 7))
    ids = torch.tensor(
        [lm.vocab.stoi[t] for t in FASTAI_SPECIALS + [f"word{i}" for i in range(40)]]
    )
    with torch.no_grad():
        theirs = ref.eval()(x).logits
        ours = lm.model.eval()(ids[x]).logits[..., ids]
    assert torch.equal(ours, theirs)
    broken = tmp_path / "broken.pth"
    torch.save({k: v for k, v in sd.items() if k != "0.rnns.1.module.bias_ih_l0"}, broken)
    with pytest.raises(CheckpointError, match=re.escape("missing '0.rnns.1.module.bias_ih_l0'")):
        import_fastai(broken, vocab, tmp_path / "b1")
    torch.save({**sd, "1.layers.0.weight": torch.zeros(2)}, broken)
    with pytest.raises(CheckpointError, match=re.escape("unexpected key(s) ['1.layers.0.weight']")):
        import_fastai(broken, vocab, tmp_path / "b2")


FASTAI_LM = Path(__file__).resolve().parent / "fixtures" / "fastai_lm"


@pytest.mark.skipif(not (DATA / "imdb").is_dir(), reason="needs shared/data")
def test_lm_parity_with_fastai_on_real_text(tmp_path: Path) -> None:
    """A model made and saved by fastai 2.8 itself (``fixtures/make_fastai_lm.py``), in its
    published layout: after import, the same float32 logits as fastai's, exactly, on ids
    that ulmfit's ``fastai`` tokenizer and the imported vocabulary give real IMDb reviews."""
    pytest.importorskip("spacy")
    from safetensors.torch import load_file

    out = import_fastai(FASTAI_LM / "lstm_fwd.pth", FASTAI_LM / "itos.pkl", tmp_path / "lm")
    lm = load_lm(out)
    assert lm.tokenizer.kind == "fastai"  # recorded by the import: later stages use it
    tok = get_tokenizer(lm.tokenizer)
    fixture = load_file(FASTAI_LM / "logits.safetensors")
    n_docs, n_ids = fixture["ids"].shape
    fa_itos = load_fastai_vocab(FASTAI_LM / "itos.pkl")
    reviews = texts(DATA, "imdb")[:n_docs]
    ids = torch.tensor([list(lm.vocab.numericalize(tok(r)))[:n_ids] for r in reviews])
    # The same words at the same places as fastai's tokenizer gave (ids differ in order).
    words = [[lm.vocab.itos[i] for i in row] for row in ids.tolist()]
    assert words == [[fa_itos[i] for i in row] for row in fixture["ids"].tolist()]
    assert lm.vocab.unk_id not in ids  # every token known: nothing mapped away
    with torch.no_grad():
        logits = lm.model.eval()(ids).logits
    # Our column -> fastai's. A token fastai lists twice (its `xxfake` padding of the
    # vocabulary, never read nor predicted) keeps its last row, as vocabulary transfer does.
    fa_index = {w: i for i, w in enumerate(fa_itos)}
    perm = torch.tensor([fa_index[w] for w in lm.vocab.itos])
    assert logits.dtype == torch.float32
    assert (logits - fixture["logits"][:, :, perm]).abs().max().item() == 0.0
