"""benchmarks/pretrain.py and gpu_check.sh, the GPU drivers, rehearsed on a CPU at a tiny size;
scaling.py's measured all-reduce volume and its projection.

Device time is scarce, so the script's whole path (pieces, resume, perplexity, export)
must already work when it first runs on a GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from safetensors import safe_open

from conftest import load_benchmark
from ulmfit import datasets
from ulmfit.config import from_dict, load_toml
from ulmfit.tasks.train_lm import LMStageConfig
from ulmfit.text.readers import CorpusError

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


@pytest.fixture(scope="module")
def pretrain() -> Iterator[ModuleType]:
    with pytest.MonkeyPatch.context() as mp:
        yield load_benchmark("pretrain", mp)


def tiny_config(path: Path, out: Path, data: Path | str) -> Path:
    """A tiny LM-stage config reading its corpus from ``data`` (a folder like ../shared/data)."""
    path.write_text(
        f"""
out_dir = "{out}"
device = "cpu"

[corpus]
train = ["{data}/wikipedia_en_2015_subset/AA.txt.xz"]
valid = ["{data}/wikitext/wikitext-2/wiki.valid.tokens.xz"]
max_docs = 4
n_workers = 1

[vocab]
max_size = 2000

[model]
emb_size = 16
hidden_size = 32
n_layers = 2

[data]
bs = 8
bptt = 20

[train]
epochs = 3
lr = 1e-2
progress = false
log_every = 10
""",
        encoding="utf-8",
    )
    return path


def test_pretrain_runs_in_pieces_then_reports_and_exports(
    pretrain: ModuleType,
    shared_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("ULMFIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ULMFIT_DATA", raising=False)
    # The config names ../shared/data, as the shipped ones do; from tmp_path that folder is
    # not there, so only --data-dir finds the files (as on the GPU machine, with its copy).
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config(tmp_path / "tiny.toml", tmp_path / "lm", "../shared/data")
    wt2 = str(shared_data / "wikitext/wikitext-2/wiki.test.tokens.xz")
    report = tmp_path / "pretrain.json"
    with pytest.raises(CorpusError, match=r"shared/data/wikipedia_en_2015_subset/AA\.txt\.xz"):
        pretrain.main(["--config", str(cfg), "--eval", wt2, "--no-write"])
    common = ["--config", str(cfg), "--data-dir", str(shared_data), "--epochs", "1"]
    common += ["--eval", wt2, "--no-write"]

    # A piece far shorter than an epoch stops after its first step and says so.
    assert pretrain.main([*common, "--max-minutes", "1e-6", "--json", str(report)]) == 0
    assert "run again to continue" in capsys.readouterr().out
    state = json.loads((tmp_path / "lm/training_state.json").read_text())
    assert not state["finished"] and 0 < state["global_step"] < state["total_steps"]
    assert not report.exists()  # no figures from an unfinished run

    # Another schedule cannot continue it: the error names the field.
    with pytest.raises(ValueError, match="epochs: 1 -> 3"):
        pretrain.main([*common[:4], "--eval", wt2, "--no-write"])

    export = tmp_path / "export"
    args = [*common, "--max-minutes", "10", "--json", str(report), "--export", str(export)]
    assert pretrain.main(args) == 0
    figures = json.loads(report.read_text())
    assert figures["epochs"] == 1 and figures["tokens_per_s"] > 0
    ppl = figures["perplexity"]["wiki.test.tokens.xz"]
    assert 1 < ppl < 2000  # the vocabulary's size bounds a model better than uniform
    shards = sorted(export.glob("*.safetensors"))
    assert shards and all(p.stat().st_size <= 16 * 2**20 for p in shards)
    with safe_open(str(shards[0]), "pt") as f:
        names = f.keys()  # a safe_open handle is not iterable itself
        assert {str(f.get_tensor(k).dtype) for k in names} == {"torch.bfloat16"}
    assert not (export / "training_state.json").exists()  # for fine-tuning, not resuming
    assert "training_state.json" in {p.name for p in (tmp_path / "lm").iterdir()}


@pytest.mark.slow
def test_gpu_check_phases_rehearsed_on_cpu(shared_data: Path, tmp_path: Path) -> None:
    """benchmarks/gpu_check.sh's pretrain and trec6 phases, at a tiny size on a CPU (~3 min).

    A first call whose stage-1 piece cannot finish skips TREC-6 and says why; the next
    call resumes stage 1, exports it and runs the full-budget TREC-6 row from it.
    """
    # As on the GPU machine, the config names a folder the call does not carry; gpu_check.sh
    # must point pretrain.py at DATA, the folder it does.
    staged_elsewhere = ".devdata_not_carried"
    cfg = tiny_config(tmp_path / "tiny.toml", tmp_path / "runs/pretrain_wiki", staged_elsewhere)
    assert not (REPO / staged_elsewhere).exists()
    env = {
        **os.environ,
        "PHASES": "pretrain trec6",
        "PRETRAIN_CONFIG": str(cfg),
        "PRETRAIN_EPOCHS": "1",
        "DATA": str(shared_data),
        "RUNS": str(tmp_path / "runs"),
        "OUT": str(tmp_path / "out"),
        "ULMFIT_CACHE": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
        "WHEELS": str(tmp_path / "no-wheels"),  # .whl holds the GPU machine's cp312 wheels
        "PYTHON": sys.executable,
    }
    script = ["bash", str(REPO / "benchmarks/gpu_check.sh")]
    first = subprocess.run(
        script, env={**env, "PRETRAIN_MINUTES": "1e-6"}, capture_output=True, text=True
    )
    assert first.returncode == 0, first.stderr[-2000:]
    assert "run again to continue" in first.stdout
    assert "trec6 skipped: stage 1 has not finished" in first.stdout

    second = subprocess.run(script, env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-2000:]
    out = tmp_path / "out"
    names = {p.name for p in out.iterdir()}
    assert {"session.log", "RESULTS.md", "pretrain.json", "reproduce_trec6.json"} <= names
    assert len(names) <= 8  # what a device call brings back
    results = (out / "RESULTS.md").read_text()
    assert "## pretrain.py: tiny.toml" in results
    assert "## reproduce.py: trec6, full budget" in results
    rows = [line for line in results.splitlines() if line.startswith("| trec6 |")]
    assert {r.split("|")[2].strip() for r in rows} >= {"ulmfit", "scratch", "tfidf"}
    report = json.loads((out / "reproduce_trec6.json").read_text())
    assert report["budget"] == "full" and report["sizes"]["test"] == 500
    assert report["pretrained"] == str(tmp_path / "runs/pretrain_wiki_bf16")


@pytest.mark.parametrize("phases", ["tests speed", "pretrain trec6", "imdb"])
def test_gpu_prepare_stages_what_each_call_reads(
    phases: str, pretrain: ModuleType, shared_data: Path, tmp_path: Path
) -> None:
    """Each planned device call finds its files in the folder staged for it.

    The GPU machine sees only what a call carries, so a path that points at another
    folder (as the stage-1 config once named .devdata while its data went to .devdata2)
    would only fail there, on scarce device time.
    """
    staged = tmp_path / "devdata2"
    env = {
        **os.environ,
        "PHASES": phases,
        "DEVDATA": str(staged),
        "ULMFIT_DATA": str(shared_data),
        "NO_WHEELS": "1",
    }
    script = ["bash", str(REPO / "benchmarks/gpu_prepare.sh")]
    run = subprocess.run(script, env=env, capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "to carry with the repository (limit 64)" in run.stdout
    wanted: dict[str, list[str]] = {}
    if "tests" in phases:  # parity.py
        wanted["wikitext2"] = ["valid", "test"]
    if "trec6" in phases:
        wanted["trec6"] = ["train", "test"]
    if "imdb" in phases:
        wanted["imdb"] = ["train", "test", "unsup"]
    for name, splits in wanted.items():
        spec = datasets.dataset_spec(name)
        assert all(datasets.split_present(spec, s, staged) for s in splits), name
    if "speed" in phases:  # imdb_texts reads the test file directly
        assert (staged / "imdb/test.csv.xz").is_file()
    if "pretrain" in phases:  # the stage-1 config as gpu_check.sh runs it (--data-dir)
        cfg = from_dict(LMStageConfig, load_toml(REPO / "configs/pretrain_wiki_gpu.toml"))
        cfg = pretrain.with_data_root(cfg, staged)
        files = [*cfg.corpus.train, *cfg.corpus.valid, *pretrain.default_eval_files(cfg)]
        assert len(files) == 5, files
        assert all(Path(f).is_file() and Path(f).is_relative_to(staged) for f in files), files


@pytest.fixture(scope="module")
def scaling() -> Iterator[ModuleType]:
    with pytest.MonkeyPatch.context() as mp:
        yield load_benchmark("scaling", mp)


def test_scaling_records_what_ddp_all_reduces(scaling: ModuleType) -> None:
    """Every trainable parameter's fp32 gradient exactly once per step; the tied embedding,
    which backward finishes last, in the last bucket (the one no backward can hide)."""
    import torch

    from ulmfit.models.awd_lstm import AWDLSTMConfig, AWDLSTMLanguageModel

    # Big enough for two buckets: DDP closes its first one after 1 MiB.
    cfg = AWDLSTMConfig(vocab_size=2000, emb_size=16, hidden_size=256, n_layers=3)
    torch.manual_seed(0)
    model = AWDLSTMLanguageModel(cfg)
    model.encoder.rnns[1].requires_grad_(False)  # a frozen group is not sent
    buckets = scaling.record_buckets(model, scaling.lm_step(cfg))
    sent = [name for b in buckets for name in b.params]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(sent) == sorted(trainable)
    assert sum(b.nbytes for b in buckets) == 4 * sum(
        p.numel() for p in model.parameters() if p.requires_grad
    )
    assert len(buckets) >= 2 and buckets[-1].params == ("encoder.embedding.weight",)
    assert [b.index for b in buckets] == list(range(len(buckets)))


def test_scaling_projection_bounds(scaling: ModuleType, tmp_path: Path) -> None:
    Bucket, Link = scaling.Bucket, scaling.Link
    # Ring all-reduce: 2 (N-1)/N of the bytes cross each link; nothing to send on one GPU.
    assert scaling.allreduce_s(10**9, 1, 1.0) == 0.0
    assert scaling.allreduce_s(10**9, 4, 1.0, latency_s=0.0) == pytest.approx(1.5)
    buckets = [Bucket(0, 3 * 10**8, ("a",)), Bucket(1, 10**9, ("emb",))]
    row = scaling.project(1.0, 1000, buckets, Link("x", 2, 1.0), latency_s=0.0)
    assert row["exposed_best_ms"] == pytest.approx(1000.0)  # the last bucket alone
    assert row["exposed_worst_ms"] == pytest.approx(1300.0)  # nothing overlapped
    assert row["efficiency_best"] == pytest.approx(1 / 2)
    assert row["efficiency_worst"] == pytest.approx(1 / 2.3)
    assert row["tokens_per_s_best"] == pytest.approx(2 * 1000 / 2.0)

    # T1 from lm_throughput's JSON: the bf16 fit row at the largest CUDA batch size.
    summary = [
        {"device": "cuda", "precision": "bf16", "system": "fit", "bs": 64, "tokens_per_s": 1.0},
        {"device": "cuda", "precision": "bf16", "system": "fit", "bs": 256, "tokens_per_s": 5e5},
        {"device": "cuda", "precision": "fp16", "system": "fit", "bs": 512, "tokens_per_s": 9.0},
        {"device": "cuda", "precision": "bf16", "system": "ceiling", "bs": 512, "tokens_per_s": 9},
    ]
    path = tmp_path / "lm.json"
    path.write_text(json.dumps({"summary": summary, "bptt": 72, "hardware": {"gpu": "G"}}))
    tokens_per_s, bs, bptt, source = scaling.step_from_json(path)
    assert (tokens_per_s, bs, bptt) == (5e5, 256, 72) and "G" in source
    path.write_text(json.dumps({"summary": summary[3:], "bptt": 72}))
    with pytest.raises(SystemExit, match=r"lm\.json: no cuda bf16 'fit' row"):
        scaling.step_from_json(path)
    with pytest.raises(Exception, match="expected NAME:GPUS:GBPS"):
        scaling.parse_link("nvlink:eight:300")
    assert scaling.parse_link("a:b:8:40") == Link("a:b", 8, 40.0)


def test_lm_throughput_profile_reports_where_fit_spends_its_steps(tmp_path: Path) -> None:
    """--profile: exactly the asked-for steps profiled, per-step host reads and syncs
    counted, the operators listed (on a GPU it also gives the device's busy share)."""
    with pytest.MonkeyPatch.context() as mp:
        lt = load_benchmark("lm_throughput", mp)
        out = tmp_path / "profile.txt"
        argv = ["--device", "cpu", "--sizes", "small", "--bs", "8", "--bptt", "12"]
        argv += ["--steps", "4", "--warmup", "2", "--no-write", "--profile", str(out)]
        assert lt.main(argv) == 0
    report = out.read_text()
    assert "fit, cpu, fp32, bs 8, bptt 12: 4 profiled steps after 2" in report
    assert "host reads (.item() etc.) per step:" in report
    assert "device synchronisations per step: 0.00" in report  # no device, no syncs
    step_rows = [line.split() for line in report.splitlines() if "ProfilerStep*" in line]
    assert len(step_rows) == 1 and step_rows[0][-1] == "4"  # the schedule caught 4 steps
    assert "aten::mm" in report  # the LM's own compute is in the table
