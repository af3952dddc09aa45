"""Every backbone through the three stages: LM training with resume, save/load, LM
fine-tuning, the classifier with save/load and int8 (learning on real text: the
parametrised learning test of ``test_train_lm.py``).

Module-level behaviour (shapes, dropouts, state, BPT3C, padding) is parametrised over
the kinds in ``test_models.py`` and ``test_classifier_model.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ulmfit.checkpoint import CheckpointError
from ulmfit.cli.main import main
from ulmfit.data.lm import LMDataConfig
from ulmfit.data.prepare import CorpusConfig
from ulmfit.inference import num_threads
from ulmfit.models.backbone import KINDS, EncoderConfig
from ulmfit.models.io import load_lm
from ulmfit.tasks.classify import ClassifierTrainConfig, TextClassifier, UnfreezeStage
from ulmfit.tasks.train_lm import LMStageConfig, VocabConfig, train_language_model
from ulmfit.training.config import TrainConfig


@pytest.fixture(autouse=True)
def one_thread() -> object:
    with num_threads(1):
        yield


def corpus(path: Path, n: int = 400, seed: int = 0) -> Path:
    """Sentences with a learnable pattern: 'good' texts praise, 'bad' ones complain."""
    rng = np.random.default_rng(seed)
    good = ["a", "great", "film", "loved", "it", "wonderful", "acting"]
    bad = ["a", "dull", "film", "hated", "it", "awful", "plot"]
    lines = [
        " ".join(rng.choice(good if i % 2 else bad, size=int(rng.integers(6, 14))))
        for i in range(n)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def lm_stage(tmp_path: Path, kind: str, out: str, **kw: object) -> LMStageConfig:
    cfg: dict[str, object] = dict(
        out_dir=str(tmp_path / out),
        corpus=CorpusConfig(
            train=(str(corpus(tmp_path / "text.txt")),),
            n_workers=1,
            cache_dir=str(tmp_path / "cache"),
        ),
        vocab=VocabConfig(max_size=200, min_freq=1),
        model=EncoderConfig(kind=kind, emb_size=16, hidden_size=24, n_layers=2),  # type: ignore[arg-type]
        data=LMDataConfig(bs=4, bptt=10),
        train=TrainConfig(epochs=2, lr=3e-3, progress=False, seed=5, log_every=5),
        device="cpu",
    )
    cfg.update(kw)
    return LMStageConfig(**cfg)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", KINDS)
def test_lm_stage_resumes_bit_identically_and_saves_its_kind(tmp_path: Path, kind: str) -> None:
    full = train_language_model(lm_stage(tmp_path, kind, "full"))
    config = json.loads((full / "config.json").read_text())
    assert config["model"]["kind"] == kind
    part_cfg = lm_stage(tmp_path, kind, "part")
    stopped = part_cfg.train.replace(max_steps=17)
    train_language_model(LMStageConfig(**{**part_cfg.__dict__, "train": stopped}))
    meta = json.loads((tmp_path / "part/training_state.json").read_text())
    assert meta["global_step"] == 17 and meta["epoch"] == 0
    train_language_model(LMStageConfig(**{**part_cfg.__dict__, "resume": True}))
    a = load_file(str(full / "model.safetensors"))
    b = load_file(str(tmp_path / "part/model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # Save/load gives bit-identical outputs, and the loaded model is of its kind.
    loaded = load_lm(full).model.eval()
    assert loaded.config.kind == kind
    ids = torch.randint(2, 20, (2, 9))
    again = load_lm(full).model.eval()
    assert torch.equal(loaded(ids).logits, again(ids).logits)


@pytest.mark.parametrize("kind", KINDS)
def test_three_stages_with_each_backbone(tmp_path: Path, kind: str) -> None:
    """Stage 2 keeps the pretrained kind; the classifier reads with it, saves and loads it
    bit-identically, and runs in int8."""
    pre = train_language_model(lm_stage(tmp_path, kind, "pre", train=TrainConfig(
        epochs=1, lr=3e-3, progress=False, seed=5)))  # fmt: skip
    ft_cfg = lm_stage(
        tmp_path, "awd_lstm", "ft", pretrained=str(pre),
        train=TrainConfig(epochs=1, lr=1e-3, progress=False, max_steps=5),
    )  # fmt: skip
    ft = train_language_model(ft_cfg)  # [model] kind left at its default: the pretrained's
    assert load_lm(ft).model.config.kind == kind
    rng = np.random.default_rng(1)
    texts = [
        " ".join(rng.choice(["great", "loved"] if i % 2 else ["dull", "hated"], size=3)) + " a film"
        for i in range(64)
    ]
    labels = ["pos" if i % 2 else "neg" for i in range(64)]
    stages = (UnfreezeStage(1, 1, 2e-2), UnfreezeStage(0, 2, 1e-2))
    clf = TextClassifier(ft, ClassifierTrainConfig(bs=16, stages=stages, device="cpu"))
    clf.fit(texts, labels)
    assert clf.model is not None and clf.model.encoder.kind == kind
    probs = clf.predict_proba(texts)
    assert probs.shape == (64, 2) and np.isfinite(probs).all()
    saved = clf.save(tmp_path / "clf")
    loaded = TextClassifier.load(saved, device="cpu")
    np.testing.assert_array_equal(loaded.predict_proba(texts), probs)
    q = TextClassifier.load(saved, quantize="int8")
    agree = np.mean(q.predict_proba(texts).argmax(1) == probs.argmax(1))
    assert agree >= 0.9, agree


def test_stage_2_refuses_another_kind_than_the_pretrained(tmp_path: Path) -> None:
    pre = train_language_model(lm_stage(tmp_path, "awd_lstm", "pre", train=TrainConfig(
        epochs=1, progress=False, max_steps=2)))  # fmt: skip
    ft = lm_stage(tmp_path, "qrnn", "ft", pretrained=str(pre))
    with pytest.raises(CheckpointError, match=r"holds a 'awd_lstm' language model.*'qrnn'"):
        train_language_model(ft)


def test_kind_on_the_command_line_and_in_toml(tmp_path: Path) -> None:
    text = corpus(tmp_path / "text.txt", n=100)
    args = ["pretrain", "--corpus.train", str(text), "--corpus.n-workers", "1"]
    args += ["--corpus.cache-dir", str(tmp_path / "c"), "--device", "cpu", "--no-train.progress"]
    args += ["--model.emb-size", "8", "--model.hidden-size", "8", "--train.max-steps", "2"]
    assert main([*args, "--out-dir", str(tmp_path / "cli"), "--model.kind", "qrnn"]) == 0
    assert load_lm(tmp_path / "cli").model.config.kind == "qrnn"
    toml = tmp_path / "run.toml"
    toml.write_text('[model]\nkind = "qrnn"\nwindow = 1\n')
    assert main([*args, "--out-dir", str(tmp_path / "toml"), "--config", str(toml)]) == 0
    cfg = load_lm(tmp_path / "toml").model.config
    assert (cfg.kind, cfg.window) == ("qrnn", 1)
    toml.write_text('[model]\nkind = "lstm"\n')
    assert main([*args, "--out-dir", str(tmp_path / "bad"), "--config", str(toml)]) == 2


def test_presets_by_name_on_the_command_line_and_in_toml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = corpus(tmp_path / "text.txt", n=100)
    args = ["pretrain", "--corpus.train", str(text), "--corpus.n-workers", "1"]
    args += ["--corpus.cache-dir", str(tmp_path / "c"), "--device", "cpu", "--no-train.progress"]
    args += ["--train.max-steps", "1"]
    # The preset's sizes, under the flags given beside it (in any order).
    flags = ["--model.n-layers", "2", "--model.preset", "transformer-small"]
    assert main([*args, "--out-dir", str(tmp_path / "cli"), *flags]) == 0
    cfg = load_lm(tmp_path / "cli").model.config
    preset = EncoderConfig.PRESETS["transformer-small"]
    assert cfg == preset.replace(vocab_size=cfg.vocab_size, n_layers=2)
    # In a config file's [model] table; a flag names another preset and wins over it.
    toml = tmp_path / "run.toml"
    toml.write_text('[model]\npreset = "awd_lstm-small"\nhidden_size = 32\n')
    flags = ["--config", str(toml), "--model.preset", "qrnn-small"]
    assert main([*args, "--out-dir", str(tmp_path / "toml"), *flags]) == 0
    cfg = load_lm(tmp_path / "toml").model.config
    assert cfg == EncoderConfig.PRESETS["qrnn-small"].replace(
        vocab_size=cfg.vocab_size, hidden_size=32
    )
    # An unknown name is refused with the known ones, on both paths.
    toml.write_text('[model]\npreset = "qrnn-huge"\n')
    assert main([*args, "--out-dir", str(tmp_path / "bad"), "--config", str(toml)]) == 2
    err = capsys.readouterr().err
    assert "[model.preset]: unknown preset 'qrnn-huge'" in err and "qrnn-multifit" in err
    with pytest.raises(SystemExit):
        main([*args, "--out-dir", str(tmp_path / "bad"), "--model.preset", "qrnn-huge"])
    assert not (tmp_path / "bad").exists()


def test_a_directory_saved_before_kinds_loads_as_an_awd_lstm(tmp_path: Path) -> None:
    lm = train_language_model(lm_stage(tmp_path, "awd_lstm", "old", train=TrainConfig(
        epochs=1, progress=False, max_steps=2)))  # fmt: skip
    config = json.loads((lm / "config.json").read_text())
    del config["model"]["kind"], config["model"]["window"]
    (lm / "config.json").write_text(json.dumps(config))
    assert load_lm(lm).model.config.kind == "awd_lstm"
