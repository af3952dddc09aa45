"""DDP under gloo on CPU: two processes train exactly like one process on the global batch.

For the LM and the classifier: the same weights after training (so the same gradients),
the epoch's metrics reduced over both ranks, validation shared out between the ranks with
one process's figures, and files written by rank 0 alone; with
gradient accumulation, one all-reduce per optimizer step; and the real entry point,
``torchrun ... -m ulmfit.cli.main pretrain``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel

from ulmfit.data.classification import ClassificationBatches, read_labelled
from ulmfit.data.lm import LMDataConfig, LMStream
from ulmfit.inference import classify_logits
from ulmfit.models.awd_lstm import AWDLSTMConfig, AWDLSTMLanguageModel
from ulmfit.models.backbone import KINDS
from ulmfit.models.classifier import ClassifierConfig, TextClassifierModel
from ulmfit.models.io import write_lm_files
from ulmfit.tasks import classify
from ulmfit.tasks.classify import ClassifierTask
from ulmfit.tasks.lm import LMTask, evaluate_lm
from ulmfit.tasks.train_lm import _valid_stream
from ulmfit.text.tokenize import SPECIAL_TOKENS, TokenizerConfig, get_tokenizer
from ulmfit.text.vocab import Vocab
from ulmfit.training import distributed, loop
from ulmfit.training.config import TrainConfig
from ulmfit.training.loop import fit

GLOBAL_BS = 8
# No dropout: the masks would differ between one process and two, the arithmetic would not.
CONFIG = AWDLSTMConfig(vocab_size=50, emb_size=8, hidden_size=12, n_layers=2, drop_mult=0.0)


def corpus() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 50, 4000).astype(np.int32)
    return ids, np.arange(0, 4001, 200, dtype=np.int64)


def train_lm(
    rank: int,
    world_size: int,
    out: Path | None,
    grad_accum: int = 1,
    config: AWDLSTMConfig = CONFIG,
) -> tuple[dict[str, torch.Tensor], list]:
    """One epoch (about 50 batches) on the global batch, split over ``world_size`` ranks."""
    torch.manual_seed(0)
    model = AWDLSTMLanguageModel(config)
    data = LMDataConfig(bs=GLOBAL_BS // world_size, bptt=10)
    stream = LMStream(*corpus(), data, train=True, seed=3, rank=rank, world_size=world_size)
    cfg = TrainConfig(lr=1e-2, progress=False, log_every=5, grad_accum=grad_accum)
    state = fit(LMTask(model, stream, None), cfg, out)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, state.history


def train_classifier(rank: int, world_size: int) -> tuple[dict[str, torch.Tensor], list]:
    """One epoch of 8 batches: rank r takes batches r, r + 2, ...; one process accumulates
    each pair of consecutive batches into one step (DDP averages, grad_accum sums halves).
    A constant rate: the schedule counts batches, so STLR would differ in its steps."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    docs = [rng.integers(2, 50, n) for n in rng.integers(1, 30, 64)]
    batches = ClassificationBatches(docs, rng.integers(0, 3, 64), 8, train=True, seed=1)
    model = TextClassifierModel(
        ClassifierConfig(n_classes=3, head_ps=(0.0, 0.0), bptt=8, max_len=40, encoder=CONFIG)
    )
    task = ClassifierTask(model, batches, None, torch.nn.CrossEntropyLoss(), dict, 2.0, 1.0)
    cfg = TrainConfig(
        lr=1e-2, schedule="constant", grad_accum=3 - world_size, progress=False, log_every=100
    )
    state = fit(task, cfg, None)
    # BatchNorm's running statistics are buffers: each rank's last batch moved its own
    # (the loop then gives every rank rank 0's), so compare weights with one process.
    weights = {k: p.detach().clone() for k, p in model.named_parameters()}
    buffers = {f"buffer.{k}": b.detach().clone() for k, b in model.named_buffers()}
    return weights | buffers, state.history


def validate(world_size: int) -> dict[str, torch.Tensor]:
    """A fixed LM and classifier scored on validation data, shared out over the ranks."""
    info = distributed.current()  # rank r of 2 in a worker, rank 0 of 1 in the test
    torch.manual_seed(0)
    lm = AWDLSTMLanguageModel(CONFIG)
    data = LMDataConfig(bs=GLOBAL_BS // world_size, bptt=10)
    stream = _valid_stream(corpus(), data, info, torch.device("cpu"))
    lm_metrics = evaluate_lm(lm, stream)

    model = TextClassifierModel(
        ClassifierConfig(n_classes=3, head_ps=(0.0, 0.0), bptt=8, max_len=40, encoder=CONFIG)
    )
    rng = np.random.default_rng(5)
    docs = [rng.integers(2, 50, n) for n in rng.integers(1, 30, 50)]
    batches = ClassificationBatches(docs, rng.integers(0, 3, 50), 8, train=False)
    scored: list[int] = []

    def counting(m, x, lengths):  # type: ignore[no-untyped-def]
        scored.append(x.size(0))
        return classify_logits(m, x, lengths)

    with pytest.MonkeyPatch.context() as mp_:
        mp_.setattr(classify, "classify_logits", counting)
        probs, loss = classify.score_batches(
            model, batches, 3, lambda z: z.softmax(-1), torch.nn.CrossEntropyLoss(), shard=True
        )
    return {
        "lm_loss": torch.tensor(lm_metrics["valid_loss"], dtype=torch.float64),
        "lm_rows": torch.tensor(stream.config.bs),
        "clf_probs": torch.from_numpy(probs),
        "clf_loss": torch.tensor(loss, dtype=torch.float64),
        "clf_docs_scored": torch.tensor(sum(scored)),
    }


def _counting_ddp(model: torch.nn.Module, device: torch.device) -> DistributedDataParallel:
    """The loop's DDP wrapper with a comm hook that records each bucket it all-reduces."""
    ddp = DistributedDataParallel(model)

    # Unannotated: DDP compares the annotations as objects, and this module's are strings.
    def hook(_, bucket):  # type: ignore[no-untyped-def]
        REDUCED_BYTES.append(bucket.buffer().numel() * bucket.buffer().element_size())
        return default_hooks.allreduce_hook(None, bucket)

    ddp.register_comm_hook(None, hook)
    return ddp


REDUCED_BYTES: list[int] = []  # per process: what _counting_ddp's hook all-reduced


def _worker(rank: int, world_size: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    clean = False
    try:
        torch.set_num_threads(1)
        root = Path(out)
        lm, lm_history = train_lm(rank, world_size, root / f"lm_rank{rank}")
        clf, clf_history = train_classifier(rank, world_size)
        with pytest.MonkeyPatch.context() as mp_:
            mp_.setattr(loop, "_wrap_ddp", _counting_ddp)
            accum, accum_history = train_lm(rank, world_size, None, grad_accum=2)
        save_file(lm, str(root / f"lm{rank}.safetensors"))
        save_file(clf, str(root / f"clf{rank}.safetensors"))
        save_file(accum, str(root / f"accum{rank}.safetensors"))
        save_file(validate(world_size), str(root / f"valid{rank}.safetensors"))
        history = {
            "lm": lm_history,
            "clf": clf_history,
            "accum": accum_history,
            "accum_reduced_bytes": REDUCED_BYTES,
        }
        (root / f"history{rank}.json").write_text(json.dumps(history))
        clean = True
    finally:
        # Right after training: fit must leave no DDP wrapper for the GC to free after this
        # (its reducer would abort the process: "terminate called without an active
        # exception", about one run in five before fit collected them). The CLI's way out.
        distributed.shutdown(clean)
    # Nothing may keep the group alive past destroy (torch.distributed.nn.functional's
    # defaults did, when first imported after init): freed only in interpreter teardown,
    # it could abort the process there, after the test's work was done.
    (Path(out) / f"threads{rank}.json").write_text(json.dumps(_gloo_threads()))


def _backbone_worker(rank: int, world_size: int, port: int, out: str, kind: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    clean = False
    try:
        torch.set_num_threads(1)
        lm, history = train_lm(rank, world_size, None, config=CONFIG.replace(kind=kind))
        save_file(lm, str(Path(out) / f"lm{rank}.safetensors"))
        (Path(out) / f"history{rank}.json").write_text(json.dumps(history))
        clean = True
    finally:
        distributed.shutdown(clean)


def _gloo_threads(wait_s: float = 5.0) -> list[str] | None:
    """This process's gloo threads once they have had ``wait_s`` to end (None: no /proc)."""
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        return None
    deadline = time.monotonic() + wait_s
    while True:
        names = []
        for comm in tasks.glob("*/comm"):
            with contextlib.suppress(OSError):  # a thread that ended meanwhile
                names.append(comm.read_text().strip())
        gloo = sorted(n for n in names if "gloo" in n)
        if not gloo or time.monotonic() > deadline:
            return gloo
        time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _epoch_row(history: list) -> dict:
    rows = [r for r in history if "train_time_s" in r]  # the epoch row, not the log rows
    assert len(rows) == 1
    return rows[0]


def test_ddp_two_processes_match_one_process(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    lm_single, lm_history = train_lm(0, 1, tmp_path / "single")
    clf_single, clf_history = train_classifier(0, 1)
    accum_single, _ = train_lm(0, 1, None, grad_accum=2)
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)

    # destroy_process_group() freed the group and joined gloo's threads on both ranks.
    for rank in (0, 1):
        threads = json.loads((tmp_path / f"threads{rank}.json").read_text())
        assert threads in ([], None), f"rank {rank}: gloo threads outlived the group: {threads}"

    singles = (("lm", lm_single), ("clf", clf_single), ("accum", accum_single))
    for name, single in singles:
        for rank in (0, 1):
            ddp = load_file(str(tmp_path / f"{name}{rank}.safetensors"))
            for k, v in single.items():
                if k.startswith("buffer."):
                    continue
                torch.testing.assert_close(ddp[k], v, rtol=1e-4, atol=1e-5, msg=f"{name} {k}")
    # Every rank ends the epoch with rank 0's batch-norm statistics (what it scores).
    clf0, clf1 = (load_file(str(tmp_path / f"clf{r}.safetensors")) for r in (0, 1))
    running = [k for k in clf0 if k.startswith("buffer.") and k.endswith("running_mean")]
    assert running
    for k in running:
        torch.testing.assert_close(clf1[k], clf0[k], rtol=0, atol=0, msg=k)

    # Validation is shared out: each rank scores half the rows / documents, and every
    # rank gets the figures one process gets over all of them.
    one = validate(1)
    parts = [load_file(str(tmp_path / f"valid{r}.safetensors")) for r in (0, 1)]
    assert int(one["lm_rows"]) == GLOBAL_BS and [int(p["lm_rows"]) for p in parts] == [4, 4]
    done = [int(p["clf_docs_scored"]) for p in parts]
    assert int(one["clf_docs_scored"]) == 50 and sum(done) == 50 and max(done) < 50
    for part in parts:
        for k in ("lm_loss", "clf_probs", "clf_loss"):
            torch.testing.assert_close(part[k], one[k], rtol=1e-5, atol=1e-6, msg=k)
    assert (one["clf_probs"].sum(1) - 1).abs().max() < 1e-5  # every row filled in

    # The epoch's loss is reduced over both ranks: each rank reports the global figure.
    histories = [json.loads((tmp_path / f"history{r}.json").read_text()) for r in (0, 1)]
    for name, single_history in (("lm", lm_history), ("clf", clf_history)):
        want = _epoch_row(single_history)["train_loss"]
        for h in histories:
            assert abs(_epoch_row(h[name])["train_loss"] - want) < 1e-4 * abs(want), name

    # With grad_accum=2, DDP all-reduces once per optimizer step (the micro-steps between
    # run under no_sync), each time every trainable parameter's gradient, in fp32.
    param_bytes = sum(p.numel() * 4 for p in AWDLSTMLanguageModel(CONFIG).parameters())
    for h in histories:
        micro_steps = _epoch_row(h["accum"])["step"]
        optimizer_steps = -(-micro_steps // 2)
        assert micro_steps > 20
        assert sum(h["accum_reduced_bytes"]) == optimizer_steps * param_bytes

    # Rank 0 writes the checkpoint and the metrics log; rank 1 writes nothing.
    written = sorted(p.name for p in (tmp_path / "lm_rank0").iterdir())
    assert {"training_state.json", "metrics.jsonl"} <= set(written)
    assert not (tmp_path / "lm_rank1").exists() or not any((tmp_path / "lm_rank1").iterdir())

    # ... and training really moved the weights (the comparisons are not vacuous).
    torch.manual_seed(0)
    start = AWDLSTMLanguageModel(CONFIG).state_dict()
    key = "encoder.rnns.0.lstm.weight_hh_l0"
    assert not torch.allclose(start[key], lm_single[key])


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "awd_lstm"])  # AWD-LSTM: above
def test_ddp_matches_one_process_for_each_backbone(tmp_path: Path, kind: str) -> None:
    torch.set_num_threads(1)
    single, single_history = train_lm(0, 1, None, config=CONFIG.replace(kind=kind))
    mp.spawn(_backbone_worker, args=(2, _free_port(), str(tmp_path), kind), nprocs=2, join=True)
    for rank in (0, 1):
        ddp = load_file(str(tmp_path / f"lm{rank}.safetensors"))
        for k, v in single.items():
            torch.testing.assert_close(ddp[k], v, rtol=1e-4, atol=1e-5, msg=f"{kind} {k}")
        history = json.loads((tmp_path / f"history{rank}.json").read_text())
        want = _epoch_row(single_history)["train_loss"]
        assert abs(_epoch_row(history)["train_loss"] - want) < 1e-4 * abs(want)
    torch.manual_seed(0)
    start = AWDLSTMLanguageModel(CONFIG.replace(kind=kind)).state_dict()
    assert any(not torch.allclose(start[k], single[k]) for k in start)


def test_torchrun_pretrain_matches_one_process(tmp_path: Path, shared_data: Path) -> None:
    """``torchrun --nproc_per_node=2 -m ulmfit.cli.main pretrain``: the real entry point.

    Two gloo ranks of bs 4 give the weights of one process of bs 8, and only rank 0
    writes the model directory (and the shared token cache is filled once)."""

    def config(name: str, bs: int) -> Path:
        path = tmp_path / f"{name}.toml"
        path.write_text(
            f"""
out_dir = "{tmp_path / name}"
device = "cpu"
[corpus]
train = ["{shared_data}/wikipedia_en_2015_subset/AA.txt.xz"]
max_docs = 3
valid_frac = 0.1
n_workers = 1
[vocab]
max_size = 500
[model]
emb_size = 8
hidden_size = 12
n_layers = 2
drop_mult = 0.0
[data]
bs = {bs}
bptt = 10
[train]
epochs = 1
max_steps = 12
lr = 1e-2
progress = false
""",
            encoding="utf-8",
        )
        return path

    env = {**os.environ, "ULMFIT_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    cli = ["-m", "ulmfit.cli.main", "pretrain", "--config"]
    one = subprocess.run(
        [sys.executable, *cli, str(config("one", 8))], env=env, capture_output=True, text=True
    )
    assert one.returncode == 0, one.stderr[-3000:]
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    two = subprocess.run(
        [*run, *cli, str(config("two", 4))], env=env, capture_output=True, text=True
    )
    assert two.returncode == 0, two.stderr[-3000:]
    a = load_file(str(tmp_path / "one/model.safetensors"))
    b = load_file(str(tmp_path / "two/model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
    state = json.loads((tmp_path / "two/training_state.json").read_text())
    assert state["global_step"] == 12
    # One directory, no temporary sibling left by a second writer.
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("two")) == [
        "two",
        "two.toml",
    ]


def test_torchrun_train_classifier_is_ddp_and_writes_once(
    tmp_path: Path, shared_data: Path
) -> None:
    """``torchrun ... train-classifier``: each rank takes half the batches of an epoch,
    and rank 0 alone writes the classifier, its logs and the report."""
    train = shared_data / "trec/train.csv.xz"
    tok = get_tokenizer(TokenizerConfig())
    texts = read_labelled(train, text_column="text").texts
    counts = Counter(t for text in texts for t in tok(text))
    vocab = Vocab.from_counts(counts, max_size=2000, min_freq=1)
    assert vocab.itos[: len(SPECIAL_TOKENS)] == list(SPECIAL_TOKENS)
    torch.manual_seed(0)
    lm = AWDLSTMLanguageModel(
        AWDLSTMConfig(vocab_size=len(vocab), emb_size=8, hidden_size=12, n_layers=2)
    )
    (tmp_path / "lm").mkdir()
    write_lm_files(tmp_path / "lm", lm, vocab, TokenizerConfig())

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["-m", "ulmfit.cli.main", "train-classifier", "--lm", str(tmp_path / "lm")]
    args += ["--data.train", str(train), "--data.test", str(shared_data / "trec/test.csv.xz")]
    args += ["--data.max-train", "480", "--classifier.bs", "16", "--classifier.device", "cpu"]
    args += ["--no-classifier.train.progress"]
    runs = {}
    for name, launcher in (
        ("one", [sys.executable]),
        (
            "two",
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"],
        ),
    ):
        out = tmp_path / name
        done = subprocess.run(
            [*launcher, *args, "--out-dir", str(out)], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-3000:]
        runs[name] = (out, done.stdout)
    steps = {}
    for name, (out, stdout) in runs.items():
        rows = [json.loads(x) for x in (out / "classifier_logs/stage0/metrics.jsonl").open()]
        steps[name] = rows[0]["step"]  # optimiser steps in the first epoch
        report = json.loads((out / "report.json").read_text())
        assert 0 <= report["test"]["error_rate"] <= 1
        assert stdout.count("test error rate") == 1  # one summary, from rank 0
        assert (out / "classifier/model.safetensors").exists()
        assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temp dirs
    # 432 training documents (480 less the 10% validation) in batches of 16: 27 batches,
    # 13 a rank under DDP (the same number on each, so they step in lockstep).
    assert steps == {"one": 27, "two": 13}


def test_cli_leaves_the_process_group_before_exit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI destroys the group it ran in, on success and after an error: left to
    interpreter teardown, gloo's threads could abort a rank whose work was done (seen in
    CI as "terminate called without an active exception" after train-classifier)."""
    from ulmfit.cli.main import main

    monkeypatch.setenv("ULMFIT_CACHE", str(tmp_path / "cache"))
    for argv, code in ((["data", "list"], 0), (["data", "get", "no-such-dataset"], 2)):
        store = dist.FileStore(str(tmp_path / f"store{code}"), 1)
        dist.init_process_group("gloo", store=store, rank=0, world_size=1)
        try:
            assert main(argv) == code
            assert not dist.is_initialized()
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_torchrun_predict_shards_the_input_and_merges_in_order(tmp_path: Path, suffix: str) -> None:
    """``torchrun --nproc_per_node=2 ... predict``: each rank predicts every other chunk,
    rank 0 merges the parts; the output is byte for byte one process's, no part is left."""
    from tiny_classifier import make_texts, train_tiny  # type: ignore[import-not-found]

    model_dir = train_tiny(max_len=24, epochs=2).save(tmp_path / "clf")
    texts, _ = make_texts(53, seed=11)  # 53 = 7 chunks of 7 and a last one of 4
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["-m", "ulmfit.cli.main", "predict", str(model_dir), "-i", str(src), "--chunk", "7"]
    outs = {}
    for name, launcher in (
        ("one", [sys.executable]),
        (
            "two",
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"],
        ),
    ):
        out = tmp_path / name / f"pred{suffix}"
        out.parent.mkdir()
        done = subprocess.run(
            [*launcher, *args, "-o", str(out)], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-3000:]
        outs[name] = out
        assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no parts left
    one, two = (outs[k].read_bytes() for k in ("one", "two"))
    assert one == two
    assert len(one.decode().splitlines()) == 53 + (suffix == ".csv")
