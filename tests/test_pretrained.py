"""Pretrained language models by name: the registry, downloads from a local HTTP server
(checksum accepted, a corrupted copy refused), the offline mirror, names wherever a
model directory is taken, and the CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import pickle
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from http_files import Server  # type: ignore[import-not-found]
from ulmfit.checkpoint import CheckpointError
from ulmfit.cli.main import main
from ulmfit.downloads import ChecksumError, parse_digest
from ulmfit.models import pretrained as pt
from ulmfit.models.awd_lstm import AWDLSTMConfig, AWDLSTMLanguageModel
from ulmfit.models.fastai_import import ulmfit_to_fastai
from ulmfit.models.io import load_lm

FASTAI_SPECIALS = ["xxunk", "xxpad", "xxbos", "xxeos", "xxfld", "xxmaj", "xxup", "xxrep", "xxwrep"]


def test_registry_entries_are_well_formed() -> None:
    assert {"wt103-fwd", "wt103-bwd", "gpt2"} <= set(pt.REGISTRY)
    for name, e in pt.REGISTRY.items():
        assert e.name == name and name == name.lower() and " " not in name
        assert e.files and e.size > 100_000_000  # real LMs, not placeholders
        paths = [f.path for f in e.files]
        assert len(set(paths)) == len(paths)
        for f in e.files:
            assert f.url.startswith("https://") and f.url.endswith("/" + f.path.split("/")[-1])
            algo, digest = parse_digest(f.checksum)
            assert len(digest) == {"sha256": 64, "sha1": 40, "git-sha1": 40}.get(algo, 32)
            assert f.size > 0
        assert e.checksum_source and e.license and e.description
        assert e.fmt in pt.CONVERTERS and e.direction in ("forward", "backward")
    # fastai 1's own checks for its archives (size, MD5 of the first MiB).
    (fwd,) = pt.entry("wt103-fwd").files
    assert (fwd.size, fwd.checksum) == (105067061, "md5-first-mib:7d1114cd9684bf9d1ca3c9f6a54da6f9")
    # GPT-2 at a pinned hub revision: the weights' LFS sha256.
    weights = next(f for f in pt.entry("gpt2").files if f.path == "gpt2/model.safetensors")
    assert "/resolve/607a30d783dfa663caf39e06633721c8d4cfcd7e/" in weights.url
    assert weights.checksum.endswith(
        "248dfc3911869ec493c76e65bf2fcf7f615828b0254c12b473182f0f81d3a707"
    )
    with pytest.raises(KeyError, match="known: gpt2, wt103-bwd, wt103-fwd"):
        pt.entry("wt104-fwd")


# -- a fake fastai archive served on 127.0.0.1 ----------------------------------------------


def fastai_archive(name: str, seed: int = 0) -> tuple[bytes, AWDLSTMLanguageModel, list[str]]:
    """A .tgz laid out as fastai's model zoo (``NAME/lstm_fwd.pth``, ``NAME/itos_wt103.pkl``)
    around a tiny AWD-LSTM."""
    itos = FASTAI_SPECIALS + [f"word{i}" for i in range(30)]
    torch.manual_seed(seed)
    ref = AWDLSTMLanguageModel(
        AWDLSTMConfig(vocab_size=len(itos), emb_size=8, hidden_size=10, n_layers=2)
    )
    weights = io.BytesIO()
    torch.save(ulmfit_to_fastai(ref), weights)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for member, data in (
            (f"{name}/lstm_fwd.pth", weights.getvalue()),
            (f"{name}/itos_wt103.pkl", pickle.dumps(itos)),
        ):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue(), ref, itos


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ULMFIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ULMFIT_CACHE", str(tmp_path / "cache"))  # verification stamps
    monkeypatch.delenv("ULMFIT_MODELS", raising=False)
    return tmp_path / "home"


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server({})
    try:
        yield srv
    finally:
        srv.stop()


def register(
    monkeypatch: pytest.MonkeyPatch, name: str, url: str, data: bytes, checksum: str | None = None
) -> pt.PretrainedLM:
    (archive,) = pt.entry("wt103-fwd").files
    file = dataclasses.replace(
        archive,
        path=url.rsplit("/", 1)[-1],
        url=url,
        size=len(data),
        checksum=checksum or f"sha256:{hashlib.sha256(data).hexdigest()}",
    )
    spec = dataclasses.replace(pt.entry("wt103-fwd"), name=name, files=(file,))
    monkeypatch.setitem(pt.REGISTRY, name, spec)
    return spec


def same_logits(model_dir: Path, ref: AWDLSTMLanguageModel, itos: list[str]) -> bool:
    lm = load_lm(model_dir)
    words = [itos[i] for i in (9, 12, 5, 30, 17, 9, 21)]
    ref_out = ref.eval()(torch.tensor([[itos.index(w) for w in words]])).logits[0]
    ours = lm.model.eval()(torch.tensor([[lm.vocab.stoi[w] for w in words]])).logits[0]
    perm = torch.tensor([itos.index(w) for w in lm.vocab.itos])
    return bool(torch.allclose(ours, ref_out[:, perm], atol=1e-5))


def test_download_checked_converted_once_and_reused_by_name(
    home: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, ref, itos = fastai_archive("tiny-fwd")
    server.files["/zoo/tiny-fwd.tgz"] = data
    register(monkeypatch, "tiny-fwd", f"{server.url}/zoo/tiny-fwd.tgz", data)
    out = pt.model_dir("tiny-fwd", progress=False)
    assert out == home / "models" / "tiny-fwd"
    assert (home / "models" / "downloads" / "tiny-fwd.tgz").read_bytes() == data
    assert same_logits(out, ref, itos)
    lm = load_lm("tiny-fwd")  # a name wherever a directory is loaded
    assert lm.config["direction"] == "forward" and lm.tokenizer.kind == "fastai"
    assert lm.config["source"]["pretrained"] == "tiny-fwd"
    assert lm.config["source"]["archive_sha256"] == hashlib.sha256(data).hexdigest()
    assert pt.resolve("tiny-fwd") == out and pt.resolve(out) == out
    assert server.hits == {"/zoo/tiny-fwd.tgz": 1}  # downloaded once, then reused
    with pytest.raises(CheckpointError, match="not a pretrained model name"):
        load_lm("tiny-fwdd")


def test_corrupted_download_is_refused_and_leaves_nothing(
    home: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, _, _ = fastai_archive("tiny-fwd")
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 0xFF
    server.files["/tiny-fwd.tgz"] = bytes(bad)
    register(monkeypatch, "tiny-fwd", f"{server.url}/tiny-fwd.tgz", data)
    with pytest.raises(ChecksumError, match="Download refused"):
        pt.model_dir("tiny-fwd", progress=False)
    assert not (home / "models" / "tiny-fwd").exists()
    assert list((home / "models" / "downloads").iterdir()) == []  # no partial file
    # A missing file on the server is a download error naming the URL and the mirror.
    register(monkeypatch, "gone", f"{server.url}/gone.tgz", data)
    with pytest.raises(OSError, match=r"gone\.tgz(.|\n)*ULMFIT_MODELS"):
        pt.model_dir("gone", progress=False)


def test_fastai_style_check_size_and_first_mib(
    home: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fastai's own check of its archives: the size and the MD5 of the first MiB."""
    data, ref, itos = fastai_archive("tiny-fwd")
    first_mib = f"md5-first-mib:{hashlib.md5(data[: 1 << 20]).hexdigest()}"
    server.files["/a.tgz"] = data
    server.files["/longer.tgz"] = data + b"\0" * 10  # same first MiB, another size
    register(monkeypatch, "short", f"{server.url}/longer.tgz", data, first_mib)
    with pytest.raises(ChecksumError, match="size mismatch"):
        pt.model_dir("short", progress=False)
    register(monkeypatch, "tiny-fwd", f"{server.url}/a.tgz", data, first_mib)
    assert same_logits(pt.model_dir("tiny-fwd", progress=False), ref, itos)


def test_offline_mirror_is_used_and_checked(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, ref, itos = fastai_archive("tiny-bwd", seed=1)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "tiny-bwd.tgz").write_bytes(data)
    monkeypatch.setenv("ULMFIT_MODELS", str(mirror))
    # A URL nobody answers: the mirror must be enough.
    spec = register(monkeypatch, "tiny-bwd", "http://127.0.0.1:9/tiny-bwd.tgz", data)
    monkeypatch.setitem(pt.REGISTRY, "tiny-bwd", dataclasses.replace(spec, direction="backward"))
    out = pt.model_dir("tiny-bwd", progress=False)
    assert same_logits(out, ref, itos) and load_lm(out).config["direction"] == "backward"
    assert not (home / "models" / "downloads").exists()  # nothing downloaded
    # A damaged mirror copy is refused, not converted.
    (mirror / "tiny-bwd.tgz").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        pt.model_dir("tiny-bwd", progress=False, force=True)
    assert same_logits(out, ref, itos)  # the converted model is untouched


def test_cli_lm_list_and_get(
    home: Path, server: Server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data, _, _ = fastai_archive("tiny-fwd")
    server.files["/tiny-fwd.tgz"] = data
    register(monkeypatch, "tiny-fwd", f"{server.url}/tiny-fwd.tgz", data)
    assert main(["lm", "list"]) == 0
    listed = capsys.readouterr().out
    assert "wt103-fwd" in listed and "wt103-bwd" in listed and "md5-first-mib:7d1114cd" in listed
    assert main(["lm", "get", "tiny-fwd", "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == f"tiny-fwd: {home / 'models' / 'tiny-fwd'}"
    assert main(["lm", "list"]) == 0
    row = next(r for r in capsys.readouterr().out.splitlines() if r.startswith("tiny-fwd "))
    assert row.split()[3] == "y"  # present locally now
    assert main(["lm", "get", "no-such-model"]) == 2
    assert "unknown pretrained model 'no-such-model'" in capsys.readouterr().err
