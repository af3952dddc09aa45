"""Faults, replayed: damaged checkpoints, broken weights, concurrent writers, kill -9,
a changed resume, an unguarded script. Each ends in a clear error or a whole result;
never a half-written file or a silently wrong number.

Bad input files are in ``test_bad_inputs.py``.
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from test_bad_inputs import predict, tiny_classifier  # type: ignore[import-not-found]
from ulmfit.checkpoint import (
    CHECKSUM_FIELD,
    CheckpointError,
    OutputExistsError,
    atomic_output,
    file_sha256,
    load_training_state,
    remove_stale_temporaries,
    write_dir_atomically,
)
from ulmfit.cli.main import main
from ulmfit.data.lm import LMDataConfig
from ulmfit.data.prepare import CorpusConfig
from ulmfit.models.awd_lstm import AWDLSTMConfig
from ulmfit.models.io import load_lm
from ulmfit.tasks.classify import NonFiniteOutputError, TextClassifier
from ulmfit.tasks.train_lm import LMStageConfig, VocabConfig, train_language_model
from ulmfit.text import _parallel
from ulmfit.training.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture
def clf_dir(tmp_path: Path) -> Path:
    return tiny_classifier().save(tmp_path / "clf")


def set_config(model_dir: Path, **fields: object) -> None:
    config = json.loads((model_dir / "config.json").read_text())
    config.update(fields)
    (model_dir / "config.json").write_text(json.dumps(config))


# --- damaged checkpoints -----------------------------------------------------------------


def test_truncated_weights_are_refused(clf_dir: Path) -> None:
    weights = clf_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=f"{weights}: the weights changed after"):
        TextClassifier.load(clf_dir, device="cpu")
    set_config(clf_dir, **{CHECKSUM_FIELD: None})  # as a directory from before checksums
    with pytest.raises(CheckpointError, match=f"{weights}: not a readable safetensors file"):
        TextClassifier.load(clf_dir, device="cpu")


def test_64_flipped_bytes_inside_the_weights_are_refused(clf_dir: Path) -> None:
    weights = clf_dir / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    mid = len(raw) // 2
    raw[mid : mid + 64] = bytes(b ^ 0x5A for b in raw[mid : mid + 64])
    weights.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError) as info:
        TextClassifier.load(clf_dir, device="cpu")
    assert str(weights) in str(info.value) and "changed after they were saved" in str(info.value)


def test_nan_weights_are_refused_even_with_a_matching_checksum(clf_dir: Path) -> None:
    """One NaN, saved as a diverged run would save it (checksum recomputed)."""
    weights = clf_dir / "model.safetensors"
    state = load_file(str(weights))
    name = next(k for k in state if k.endswith("weight"))
    state[name].view(-1)[3] = float("nan")
    save_file(state, str(weights))
    set_config(clf_dir, **{CHECKSUM_FIELD: {"model.safetensors": file_sha256(weights)}})
    with pytest.raises(CheckpointError, match=rf"non-finite .* \['{name}'\]"):
        TextClassifier.load(clf_dir, device="cpu")


def test_nan_outputs_are_errors_never_results(
    clf_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clf = TextClassifier.load(clf_dir, device="cpu")
    assert clf.model is not None
    weight = next(p for p in clf.model.head[-1].parameters() if p.dim() == 2)
    with torch.no_grad():
        weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteOutputError, match=r"non-finite .* for 2 of 2 documents"):
        clf.predict_proba(["good movie", "bad film"])
    with pytest.raises(NonFiniteOutputError):
        clf.predict(["good movie"])
    # From the command line: the load refuses such weights; no output, no "0.00%".
    bad = clf.save(tmp_path / "bad_clf")
    data = tmp_path / "test.csv"
    data.write_text("text,label\ngood movie,pos\nbad film,neg\n")
    assert main(["evaluate", str(bad), "--data", str(data), "--device", "cpu"]) == 2
    err = capsys.readouterr()
    assert "non-finite" in err.err and "accuracy" not in err.out
    out = tmp_path / "pred.csv"
    assert predict(bad, data, out) == 2
    assert not out.exists()


def test_a_pickle_in_place_of_the_weights_never_runs(clf_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {marker}",))

    (clf_dir / "model.safetensors").write_bytes(pickle.dumps(Payload()))
    set_config(clf_dir, **{CHECKSUM_FIELD: None})
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        TextClassifier.load(clf_dir, device="cpu")
    # fastai import reads .pth with torch's weights-only loader, and the vocabulary
    # pickle with an unpickler that accepts strings only.
    pth, itos = tmp_path / "lm.pth", tmp_path / "itos.pkl"
    torch.save({"model": Payload()}, pth)
    itos.write_bytes(pickle.dumps(Payload()))
    assert main(["import-fastai", str(pth), str(itos), str(tmp_path / "imported")]) == 2
    with open(pth, "wb") as f:
        pickle.dump(Payload(), f)
    assert main(["import-fastai", str(pth), str(itos), str(tmp_path / "imported")]) == 2
    assert not marker.exists()
    assert not (tmp_path / "imported").exists()


def test_future_format_version_is_refused(clf_dir: Path) -> None:
    set_config(clf_dir, format_version=99)
    with pytest.raises(CheckpointError, match=r"format_version 99 is not supported.*upgrade"):
        TextClassifier.load(clf_dir, device="cpu")


# --- atomic files -------------------------------------------------------------------------


def test_atomic_output_leaves_nothing_on_failure_and_refuses_a_late_rival(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError), atomic_output(target) as f:
        f.write("half")
        raise RuntimeError("crash mid-write")
    assert not target.exists() and hidden(tmp_path) == []
    # A rival creates the file while we write: with overwrite=False we are refused.
    with (
        pytest.raises(OutputExistsError, match="appeared while this run was writing"),
        atomic_output(target, overwrite=False) as f,
    ):
        f.write("ours")
        target.write_text("theirs")
    assert target.read_text() == "theirs" and hidden(tmp_path) == []


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale_dir = tmp_path / f".lm.{dead.pid}.abc123.tmp"
    stale_file = tmp_path / f".out.csv.{dead.pid}.0f0f0f0fxyz.tmp"
    live = tmp_path / f".lm.{os.getpid()}.def456.tmp"  # a writer still running: kept
    for p in (stale_dir, live):
        p.mkdir()
    stale_file.write_text("partial")
    write_dir_atomically(tmp_path / "lm", lambda d: (d / "x").write_text("x"))
    assert not stale_dir.exists() and live.exists() and stale_file.exists()
    assert remove_stale_temporaries(tmp_path / "out.csv") == [stale_file]


# --- concurrent writers and kill -9 --------------------------------------------------------


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "ulmfit.cli.main", "-q", *args]


def _predict_cli(clf_dir: Path, src: Path, out: Path, *extra: str) -> list[str]:
    """``ulmfit predict`` as a separate process, on one torch thread."""
    return _cli(
        "predict", str(clf_dir), "-i", str(src), "-o", str(out), "--device", "cpu",
        "--threads", "1", *extra,
    )  # fmt: skip


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _whole(path: Path, n: int) -> bool:
    rows = _rows(path)
    return [int(r["row"]) for r in rows] == list(range(1, n + 1)) and all(
        r["label"] in ("neg", "pos") and abs(float(r["p_neg"]) + float(r["p_pos"]) - 1) < 1e-5
        for r in rows
    )


@pytest.mark.parametrize("overwrite", [False, True], ids=["exclusive", "overwrite"])
def test_two_concurrent_writers_never_mix(clf_dir: Path, tmp_path: Path, overwrite: bool) -> None:
    sizes = {"a": 3000, "b": 4000}
    for name, n in sizes.items():
        (tmp_path / f"{name}.txt").write_text("good movie bad film\n" * n)
    out = tmp_path / "out.csv"
    flag = ["--overwrite"] if overwrite else []
    procs = {
        name: subprocess.Popen(
            _predict_cli(clf_dir, tmp_path / f"{name}.txt", out, *flag),
            env=ENV,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in sizes
    }
    codes = {name: p.wait(timeout=120) for name, p in procs.items()}
    errors = {name: p.stderr.read() if p.stderr else "" for name, p in procs.items()}
    n_rows = len(_rows(out))
    assert n_rows in sizes.values() and _whole(out, n_rows)  # one writer's whole file
    if overwrite:
        assert codes == {"a": 0, "b": 0}, errors
    else:
        assert sorted(codes.values()) == [0, 2], errors
        loser = next(name for name, c in codes.items() if c == 2)
        assert "refusing to replace it" in errors[loser]
        assert n_rows == sizes[next(name for name, c in codes.items() if c == 0)]
    assert hidden(tmp_path) == []


def test_kill_9_during_predict_keeps_the_previous_output(clf_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "big.txt"
    src.write_text("good movie and a bad film\n" * 400_000)
    out = tmp_path / "out.csv"
    out.write_text("row,label\n1,previous\n")
    before = out.read_bytes()
    proc = subprocess.Popen(
        _predict_cli(clf_dir, src, out, "--chunk", "512", "--overwrite"),
        env=ENV,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 8
    # Kill it mid-write: once its temporary file has grown (named where the filesystem
    # cannot link an unnamed one; an unnamed one cannot be seen), or after a few seconds.
    while time.monotonic() < deadline and proc.poll() is None:
        temps = [p for p in tmp_path.iterdir() if p.name.startswith(".out.csv.")]
        if temps and temps[0].stat().st_size > 10_000:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL, "predict finished before the kill"
    assert out.read_bytes() == before
    # No temporary is left: an unnamed one vanishes with the process, a named one (where
    # the filesystem cannot link an unnamed file) is removed by the writer's watcher.
    assert _gone_soon(lambda: hidden(tmp_path) == []), hidden(tmp_path)
    (tmp_path / "small.txt").write_text("good movie\n")
    assert predict(clf_dir, tmp_path / "small.txt", out, "--overwrite") == 0
    assert hidden(tmp_path) == [] and _whole(out, 1)


def _gone_soon(done: Callable[[], bool], seconds: float = 10.0) -> bool:
    """Poll ``done`` for a few seconds: the watcher cleans up right after the kill."""
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


_SLOW_WRITER = """
import sys, time
from pathlib import Path
from ulmfit import checkpoint
from ulmfit.checkpoint import atomic_output, write_dir_atomically
checkpoint._open_unnamed = lambda folder: None  # named temporaries, whatever the filesystem
folder = Path(sys.argv[1])
def fill(d):
    (d / "part").write_text("x")
    with atomic_output(folder / "out.csv") as f:
        f.write("partial")
        f.flush()
        print("ready", flush=True)
        time.sleep(60)
write_dir_atomically(folder / "model", fill)
"""


def test_the_watcher_removes_named_temporaries_of_a_killed_process_group(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_WRITER, str(tmp_path)],
        env=ENV, stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    # Mid-write: a model directory and a file, each under a hidden temporary name.
    assert sorted(n.split(".")[1] for n in hidden(tmp_path)) == ["model", "out"]
    os.killpg(proc.pid, signal.SIGKILL)  # the writer's whole group, as Ctrl-C would reach it
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert _gone_soon(lambda: list(tmp_path.iterdir()) == []), list(tmp_path.iterdir())


def _corpus(path: Path) -> Path:
    rng = np.random.default_rng(0)
    words = ["the", "a", "cat", "dog", "sat", "on", "mat", "ran", "fast", "slow"]
    words += ["big", "small", "red", "blue", "and"]
    lines = [" ".join(rng.choice(words, size=int(rng.integers(5, 15)))) for _ in range(600)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _pretrain_args(corpus: Path, out: Path, cache: Path) -> list[str]:
    return [
        "pretrain", "--corpus.train", str(corpus), "--corpus.cache-dir", str(cache),
        "--corpus.n-workers", "1", "--out-dir", str(out), "--device", "cpu",
        "--model.emb-size", "16", "--model.hidden-size", "24", "--model.n-layers", "2",
        "--data.bs", "4", "--data.bptt", "8", "--train.epochs", "3", "--train.seed", "3",
        "--train.save-every", "10", "--train.log-every", "5", "--no-train.progress",
    ]  # fmt: skip


def test_kill_9_during_training_resumes_to_the_uninterrupted_run(tmp_path: Path) -> None:
    corpus, cache = _corpus(tmp_path / "corpus.txt"), tmp_path / "cache"
    full = tmp_path / "full"
    subprocess.run(_cli(*_pretrain_args(corpus, full, cache)), env=ENV, check=True)
    part = tmp_path / "part"
    proc = subprocess.Popen(_cli(*_pretrain_args(corpus, part, cache)), env=ENV)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:  # the directory may be swapped for a newer checkpoint while we read it
            step = json.loads((part / "training_state.json").read_text())["global_step"]
        except (OSError, ValueError, KeyError):
            step = 0
        if step >= 30:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL, "training finished before the kill"
    load_lm(part)  # the directory always loads
    meta, _ = load_training_state(part) or ({}, {})
    assert not meta["finished"] and meta["global_step"] > 0
    # A resume with another model size is refused, naming the setting; then the real one.
    changed = [*_pretrain_args(corpus, part, cache), "--resume", "--model.hidden-size", "32"]
    assert main(changed) == 2
    subprocess.run(_cli(*_pretrain_args(corpus, part, cache), "--resume"), env=ENV, check=True)
    a, b = load_file(str(full / "model.safetensors")), load_file(str(part / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # Each epoch's train_loss covers the whole epoch, also the one that was interrupted.
    ends = [
        [(r["epoch"], r["train_loss"]) for r in json.loads(d.joinpath(name).read_text())["history"]
         if r.get("epoch_end")]
        for d, name in ((full, "training_state.json"), (part, "training_state.json"))
    ]  # fmt: skip
    assert ends[0] == ends[1] and len(ends[0]) == 3
    assert hidden(tmp_path) == []


def test_resume_refuses_changed_settings_by_name(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "corpus.txt")

    def cfg(resume: bool, model: AWDLSTMConfig, bs: int = 4) -> LMStageConfig:
        return LMStageConfig(
            out_dir=str(tmp_path / "lm"),
            corpus=CorpusConfig(train=(str(corpus),), n_workers=1, cache_dir=str(tmp_path / "c")),
            vocab=VocabConfig(max_size=500),
            model=model,
            data=LMDataConfig(bs=bs, bptt=8),
            train=TrainConfig(epochs=1, progress=False, max_steps=3),
            device="cpu",
            resume=resume,
        )

    tiny = AWDLSTMConfig(emb_size=8, hidden_size=8, n_layers=2)
    train_language_model(cfg(False, tiny))
    with pytest.raises(ValueError) as info:
        train_language_model(cfg(True, tiny.replace(hidden_size=16, drop_mult=0.5), bs=8))
    msg = str(info.value)
    for change in ("model.hidden_size: 8 -> 16", "model.drop_mult: 1.0 -> 0.5", "data.bs: 4 -> 8"):
        assert change in msg
    # Training into it again without --resume is refused; --overwrite replaces it.
    with pytest.raises(OutputExistsError, match=r"already holds a model.*--resume.*--overwrite"):
        train_language_model(cfg(False, tiny))
    before = file_sha256(tmp_path / "lm/model.safetensors")
    replaced = LMStageConfig(
        **{**cfg(False, tiny.replace(hidden_size=12)).__dict__, "overwrite": True}
    )
    train_language_model(replaced)
    assert file_sha256(tmp_path / "lm/model.safetensors") != before
    assert load_lm(tmp_path / "lm").model.config.hidden_size == 12
    # A tampered training state cannot be resumed from.
    state = tmp_path / "lm/training_state.safetensors"
    raw = bytearray(state.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    state.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="changed after it was saved"):
        load_training_state(tmp_path / "lm")


# --- tokenising without the caller's __main__ guard ---------------------------------------


def test_an_unguarded_script_tokenises_in_process(tmp_path: Path) -> None:
    script = tmp_path / "plain.py"
    script.write_text(
        "import logging\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "from ulmfit.text.tokenize import TokenizerConfig, get_tokenizer\n"
        "tok = get_tokenizer(TokenizerConfig())\n"
        "docs = list(tok.tokenize_many([f'Doc {i} here' for i in range(50)], n_workers=2,"
        " chunk_size=10))\n"
        "print(len(docs), docs[7])\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], env=ENV, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "50" and "'doc', '7'" in done.stdout
    assert "tokenising in this process" in done.stderr and str(script) in done.stderr


@pytest.mark.parametrize(
    ("source", "safe"),
    [
        ("import x\nx.run()\n", False),
        ("def main():\n    pass\nif __name__ == '__main__':\n    main()\n", True),
        ("if '__main__' == __name__:\n    pass\n", True),
        ("if __name__ != '__main__':\n    pass\n", False),
    ],
)
def test_spawn_safety_reads_the_main_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, safe: bool
) -> None:
    script = tmp_path / "main.py"
    script.write_text(source)
    monkeypatch.setattr(sys.modules["__main__"], "__file__", str(script), raising=False)
    assert _parallel.spawn_is_safe() is safe
