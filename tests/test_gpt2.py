"""GPT-2 parity: a tiny GPT-2 made and saved by ``transformers`` itself (random weights, a
byte-level BPE trained here with ``tokenizers``) gives the same token ids and the same
next-token logits in ulmfit; then stages 2 and 3 run on it."""

from __future__ import annotations

import lzma
from pathlib import Path

import numpy as np
import pytest
import torch

from ulmfit.checkpoint import OutputExistsError
from ulmfit.cli.main import main
from ulmfit.data.lm import LMDataConfig
from ulmfit.data.prepare import CorpusConfig
from ulmfit.models.backbone import EncoderConfig
from ulmfit.models.io import load_lm
from ulmfit.tasks.classify import ClassifierTrainConfig, TextClassifier, UnfreezeStage
from ulmfit.tasks.train_lm import LMStageConfig, train_language_model
from ulmfit.text.tokenize import get_tokenizer
from ulmfit.training.config import TrainConfig

transformers = pytest.importorskip("transformers")

TEXTS = [
    "The tower is 324 metres tall, about the same height as an 81-storey building.",
    "  Spaces,   CAPITALS and émojis 🎬 — all bytes: \t\n tabs too.",
]


@pytest.fixture(scope="module")
def hf_gpt2(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    from tokenizers import ByteLevelBPETokenizer

    with lzma.open(
        shared_data / "wikitext/wikitext-2/wiki.valid.tokens.xz", "rt", encoding="utf-8"
    ) as f:
        lines = [next(f) for _ in range(3000)]
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(
        lines, vocab_size=400, min_frequency=2, special_tokens=["<|endoftext|>"]
    )
    hf_dir = tmp_path_factory.mktemp("hf_gpt2")
    tok.save_model(str(hf_dir))  # vocab.json + merges.txt, as GPT-2 ships them
    eot = tok.token_to_id("<|endoftext|>")
    config = transformers.GPT2Config(
        vocab_size=tok.get_vocab_size(), n_positions=64, n_embd=32, n_layer=2, n_head=4,
        bos_token_id=eot, eos_token_id=eot,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    model.save_pretrained(str(hf_dir), safe_serialization=True)
    return hf_dir


def test_same_token_ids_and_logits_as_transformers(hf_gpt2: Path, tmp_path: Path) -> None:
    out = tmp_path / "lm"
    assert main(["import-gpt2", str(hf_gpt2), str(out)]) == 0
    assert main(["import-gpt2", str(hf_gpt2), str(out)]) == 2  # exists: refused
    lm = load_lm(out)
    assert lm.model.config.kind == "transformer" and lm.tokenizer.kind == "bytebpe"
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(hf_gpt2))  # GPT-2's, from its files
    hf_model = transformers.GPT2LMHeadModel.from_pretrained(str(hf_gpt2)).eval()
    ours = lm.model.eval()
    tok = get_tokenizer(lm.tokenizer, lm.spm_model)
    for text in TEXTS:
        tokens = tok(text)
        assert tokens[0] == "xxbos"
        ids = lm.vocab.numericalize(tokens[1:]).astype(np.int64)
        hf_ids = hf_tok(text)["input_ids"]
        assert len(hf_ids) > 10
        assert ids.tolist() == hf_ids  # GPT-2's ids; ulmfit's nine specials come after
        with torch.no_grad():
            theirs = hf_model(torch.tensor([hf_ids])).logits[0]
            mine = ours(torch.from_numpy(ids)[None]).logits[0, :, : theirs.size(-1)]
        assert mine.shape == theirs.shape
        assert float((mine - theirs).abs().max()) <= 1e-4


def test_ulmfit_recipe_on_gpt2(hf_gpt2: Path, tmp_path: Path) -> None:
    """Stage 2 keeps GPT-2's architecture and tokenizer; stage 3 trains and predicts."""
    from ulmfit.models.gpt2 import import_gpt2

    pre = import_gpt2(hf_gpt2, tmp_path / "pre")
    with pytest.raises(OutputExistsError):
        import_gpt2(hf_gpt2, tmp_path / "pre")
    text = tmp_path / "target.txt"
    text.write_text("\n".join(f"A great film, number {i}. Loved it." for i in range(200)))
    ft = train_language_model(
        LMStageConfig(
            out_dir=str(tmp_path / "ft"),
            pretrained=str(pre),
            corpus=CorpusConfig(train=(str(text),), n_workers=1, cache_dir=str(tmp_path / "c")),
            model=EncoderConfig(drop_mult=0.1),
            data=LMDataConfig(bs=4, bptt=32),
            train=TrainConfig(epochs=1, lr=1e-3, progress=False, max_steps=4),
            device="cpu",
        )
    )
    tuned = load_lm(ft)
    assert tuned.model.config.kind == "transformer" and tuned.model.config.context == 64
    assert tuned.vocab == load_lm(pre).vocab  # GPT-2's vocabulary, unchanged
    texts = [("great loved" if i % 2 else "awful hated") + f" film {i}" for i in range(32)]
    labels = ["pos" if i % 2 else "neg" for i in range(32)]
    stages = (UnfreezeStage(1, 1, 1e-2), UnfreezeStage(0, 1, 1e-3))
    clf = TextClassifier(ft, ClassifierTrainConfig(bs=8, stages=stages, max_len=40, device="cpu"))
    clf.fit(texts, labels)
    probs = clf.predict_proba(texts)
    assert probs.shape == (32, 2) and np.isfinite(probs).all()
    loaded = TextClassifier.load(clf.save(tmp_path / "clf"), device="cpu")
    np.testing.assert_array_equal(loaded.predict_proba(texts), probs)


def test_gpt2_by_name_from_a_local_server_and_the_mirror(
    hf_gpt2: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A GPT-2 registry entry of the real one's form (several files, the hub's Git-blob
    SHA-1 for small files, sha256 for the weights) served on 127.0.0.1; with part of it in
    the mirror, the rest downloaded. The result equals ``import-gpt2`` of the folder."""
    import dataclasses

    from http_files import Server  # type: ignore[import-not-found]
    from ulmfit.downloads import file_digest
    from ulmfit.models import pretrained as pt

    monkeypatch.setenv("ULMFIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ULMFIT_CACHE", str(tmp_path / "cache"))
    names = ["config.json", "vocab.json", "merges.txt", "model.safetensors"]
    mirror = tmp_path / "mirror" / "tiny-gpt2"
    mirror.mkdir(parents=True)
    (mirror / "config.json").write_bytes((hf_gpt2 / "config.json").read_bytes())
    monkeypatch.setenv("ULMFIT_MODELS", str(mirror.parent))
    server = Server({f"/r/{n}": (hf_gpt2 / n).read_bytes() for n in names})
    try:
        files = tuple(
            pt.RemoteFile(
                f"tiny-gpt2/{n}",
                f"{server.url}/r/{n}",
                (hf_gpt2 / n).stat().st_size,
                "sha256:" + file_digest(hf_gpt2 / n)
                if n.endswith(".safetensors")
                else "git-sha1:" + file_digest(hf_gpt2 / n, "git-sha1"),
            )
            for n in names
        )
        spec = dataclasses.replace(pt.entry("gpt2"), name="tiny-gpt2", files=files)
        monkeypatch.setitem(pt.REGISTRY, "tiny-gpt2", spec)
        lm = load_lm("tiny-gpt2")
    finally:
        server.stop()
    assert "/r/config.json" not in server.hits  # read from the mirror
    assert all(server.hits[f"/r/{n}"] == 1 for n in names[1:])
    assert lm.model.config.kind == "transformer" and lm.tokenizer.kind == "bytebpe"
    direct = tmp_path / "direct"
    assert main(["import-gpt2", str(hf_gpt2), str(direct)]) == 0
    ref = load_lm(direct)
    tokens = get_tokenizer(lm.tokenizer, lm.spm_model)(TEXTS[0])
    ids = torch.from_numpy(lm.vocab.numericalize(tokens).astype(np.int64))[None]
    with torch.no_grad():
        assert torch.equal(lm.model.eval()(ids).logits, ref.model.eval()(ids).logits)
