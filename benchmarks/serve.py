"""A bounded load test of ``ulmfit serve`` on 127.0.0.1, beside fastai's ``learn.predict``.

For each engine (torch fp32, torch int8, ONNX Runtime fp32 and int8) and with and
without micro-batching (``--max-batch-size 32 --max-wait-ms 5`` against
``--max-batch-size 1``), a server process is started on a free port of 127.0.0.1; after a
warm-up, ``--clients`` concurrent clients send single-document ``/predict`` requests
(TREC-6 test questions, round robin) for ``--seconds``; the server is then stopped.
Reported: requests/s and p50/p99 latency. The load comes from ``wrk`` (Debian: ``apt-get
install wrk``; one thread of C, light next to a Python client), which still shares the
two cores with the server.

The model: the demo's classifier size (AWD-LSTM 64/256x3, vocabulary of TREC-6's
training words), random weights (time does not depend on them). fastai: the same sizes
through ``text_classifier_learner`` and ``learn.predict(text)`` one question at a time,
in the throwaway fastai venv of ``shared/docs/ANCHORS.md`` (``--fastai-python``), on the
same questions. The table is printed last and appended to ``benchmarks/RESULTS.md``::

    PYTHONPATH=src .venv/bin/python benchmarks/serve.py --fastai-python /tmp/fastaienv/bin/python
"""

from __future__ import annotations

import argparse
import csv
import json
import lzma
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_env import append_results, hardware

REPO = Path(__file__).resolve().parents[1]
SIZES = {"emb_size": 64, "hidden_size": 256, "n_layers": 3}


def trec(data: Path, split: str) -> tuple[list[str], list[str]]:
    with lzma.open(data / f"trec/{split}.csv.xz", "rt", encoding="latin-1", newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["label"] for r in rows]


def build_model(data: Path, out: Path) -> Path:
    """A classifier directory at the demo's size over TREC-6's training words."""
    import torch

    from ulmfit.data.classification import LabelEncoder
    from ulmfit.models.awd_lstm import AWDLSTMConfig
    from ulmfit.models.classifier import ClassifierConfig, TextClassifierModel
    from ulmfit.tasks.classify import ClassifierTrainConfig, TextClassifier
    from ulmfit.text.tokenize import TokenizerConfig, get_tokenizer
    from ulmfit.text.vocab import Vocab

    texts, labels = trec(data, "train")
    tok = get_tokenizer(TokenizerConfig())
    vocab = Vocab.from_counts(Counter(t for x in texts for t in tok(x)), max_size=15000)
    torch.manual_seed(0)
    enc = AWDLSTMConfig(vocab_size=len(vocab), **SIZES)  # type: ignore[arg-type]
    classes = sorted(set(labels))
    model = TextClassifierModel(ClassifierConfig(n_classes=len(classes), encoder=enc))
    clf = TextClassifier(None, ClassifierTrainConfig(device="cpu"))
    clf.model, clf.vocab, clf.tokenizer_config = model.eval(), vocab, TokenizerConfig()
    clf.labels = LabelEncoder.fit(classes, "multiclass")
    return clf.save(out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wrk_script(texts: list[str], path: Path) -> Path:
    """A wrk script that POSTs one question per request to /predict, round robin."""
    bodies = ",\n".join(
        "[==[" + json.dumps({"inputs": t}) + "]==]" for t in texts if "]==]" not in t
    )
    path.write_text(
        "local bodies = {\n" + bodies + "\n}\nlocal i = 0\n"
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        "request = function()\n  i = (i % #bodies) + 1\n"
        '  return wrk.format(nil, "/predict", nil, bodies[i])\nend\n'
    )
    return path


def _ms(value: str) -> float:
    for unit, scale in (("us", 1e-3), ("ms", 1.0), ("s", 1e3), ("m", 6e4)):
        if value.endswith(unit):
            return float(value[: -len(unit)]) * scale
    raise ValueError(f"wrk latency {value!r}")


def run_wrk(url: str, script: Path, clients: int, seconds: float) -> dict[str, float]:
    """wrk's requests/s and p50/p99 (ms) for ``clients`` connections over ``seconds``."""
    done = subprocess.run(
        ["wrk", "-t1", f"-c{clients}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    out: dict[str, float] = {}
    for line in done.stdout.splitlines():
        parts = line.split()
        if line.startswith("Requests/sec:"):
            out["rps"] = float(parts[1])
        elif parts[:1] in (["50%"], ["99%"]):
            out["p" + parts[0].rstrip("%")] = _ms(parts[1])
        elif "requests in" in line:
            out["requests"] = float(parts[0])
        elif line.strip().startswith("Non-2xx"):
            raise RuntimeError(f"wrk: {line.strip()}")
    return out


def serve_and_load(
    model_dir: Path, extra: list[str], texts: list[str], args: argparse.Namespace
) -> dict[str, float]:
    import httpx

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": str(args.threads)}
    cmd = [sys.executable, "-m", "ulmfit.cli.main", "serve", str(model_dir), "--port", str(port)]
    cmd += ["--threads", str(args.threads)]
    proc = subprocess.Popen([*cmd, *extra], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited ({proc.returncode}): {' '.join(cmd + extra)}")
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start in 120 s")
            time.sleep(0.2)
        script = wrk_script(texts, Path(args.work) / "predict.lua")
        run_wrk(url, script, args.clients, 2)  # warm-up
        result = run_wrk(url, script, args.clients, args.seconds)
        result["batch"] = _batch_mean(httpx.get(url + "/metrics").text)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return result


def _batch_mean(metrics: str) -> float:
    values = {}
    for line in metrics.splitlines():
        if line.startswith(("ulmfit_batch_size_sum", "ulmfit_batch_size_count")):
            name, value = line.split()
            values[name] = float(value)
    n = values.get("ulmfit_batch_size_count", 0.0)
    return values.get("ulmfit_batch_size_sum", 0.0) / n if n else float("nan")


FASTAI_CHILD = r"""
import json, sys, time, csv, lzma
import torch
from fastai.text.all import *
data, n, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
def trec(split):
    with lzma.open(f"{data}/trec/{split}.csv.xz", "rt", encoding="latin-1", newline="") as f:
        return list(csv.DictReader(f))
import pandas as pd
df = pd.DataFrame(trec("train"))
dls = TextDataLoaders.from_df(df, text_col="text", label_col="label", valid_pct=0.1,
                              bs=64, seed=0, num_workers=0)
cfg = {**awd_lstm_clas_config, "emb_sz": 64, "n_hid": 256, "n_layers": 3}
learn = text_classifier_learner(dls, AWD_LSTM, config=cfg, pretrained=False)
texts = [r["text"] for r in trec("test")][:n]
for t in texts[:20]:
    learn.predict(t)  # warm-up
lat = []
with learn.no_bar():
    for t in texts:
        t0 = time.perf_counter(); learn.predict(t); lat.append(time.perf_counter() - t0)
import fastai
print(json.dumps({"lat": lat, "vocab": len(dls.vocab[0]), "version": fastai.__version__}))
"""


def fastai_predict(python: str, data: Path, n: int, threads: int) -> dict[str, Any]:
    done = subprocess.run(
        [python, "-c", FASTAI_CHILD, str(data), str(n), str(threads)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"fastai child failed: {done.stderr[-2000:]}")
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=10, help="timed load per server")
    p.add_argument("--threads", type=int, default=1, help="the server's torch/ORT threads")
    p.add_argument("--fastai-python", help="a python with fastai 2.8 (ANCHORS.md's venv)")
    p.add_argument("--fastai-docs", type=int, default=300)
    p.add_argument("--no-write", action="store_true", help="print only; no RESULTS.md")
    args = p.parse_args(argv)
    from ulmfit.export_onnx import export_onnx

    texts, _ = trec(args.data, "test")
    rows = []
    if shutil.which("wrk") is None:
        raise SystemExit("benchmarks/serve.py needs wrk (Debian: apt-get install wrk)")
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        args.work = tmp
        model_dir = build_model(args.data, Path(tmp) / "clf")
        fp32 = export_onnx(model_dir, Path(tmp) / "clf.onnx")
        int8 = export_onnx(model_dir, Path(tmp) / "clf.int8.onnx", int8=True)
        engines = {
            "torch fp32": [],
            "torch int8": ["--int8"],
            "ONNX Runtime fp32": ["--onnx", str(fp32)],
            "ONNX Runtime int8": ["--onnx", str(int8)],
        }
        batching = {
            "micro-batching (32, 5 ms)": ["--max-batch-size", "32", "--max-wait-ms", "5"],
            "none (batch of 1)": ["--max-batch-size", "1", "--max-wait-ms", "0"],
        }
        for engine, e_args in engines.items():
            for how, b_args in batching.items():
                r = serve_and_load(model_dir, [*e_args, *b_args], texts, args)
                rows.append((engine, how, r))
                print(
                    f"{engine:18s} {how:26s} {r['rps']:8.1f} req/s  p50 {r['p50']:6.1f} ms  "
                    f"p99 {r['p99']:6.1f} ms  mean batch {r['batch']:.1f}",
                    flush=True,
                )
    fa = None
    if args.fastai_python:
        fa = fastai_predict(args.fastai_python, args.data, args.fastai_docs, args.threads)
    fa_rate = len(fa["lat"]) / sum(fa["lat"]) if fa else None
    what = (
        f"single-question /predict requests from wrk, {args.clients} connections, "
        f"{args.seconds:g} s per server after 2 s of warm-up; TREC-6 test questions; "
        "AWD-LSTM 64/256x3"
    )
    lines = [
        "| engine | batching | requests/s | p50 ms | p99 ms | mean batch | vs fastai |",
        "|---|---|---|---|---|---|---|",
    ]
    for engine, how, r in rows:
        ratio = f"{r['rps'] / fa_rate:.1f}x" if fa_rate else ""
        lines.append(
            f"| {engine} | {how} | {r['rps']:,.1f} | {r['p50']:.1f} | {r['p99']:.1f} | "
            f"{r['batch']:.1f} | {ratio} |"
        )
    if fa:
        ms = np.array(fa["lat"]) * 1000
        lines.append(
            f"| fastai {fa['version']} `learn.predict`, one question at a time (vocab "
            f"{fa['vocab']}) | none | {fa_rate:,.1f} | {np.percentile(ms, 50):.1f} | "
            f"{np.percentile(ms, 99):.1f} | 1 | 1.0x |"
        )
    table = "\n".join(lines) + "\n"
    body = f"Hardware: {hardware()}; server threads {args.threads}. {what}.\n\n{table}"
    if not args.no_write:
        append_results(
            REPO / "benchmarks" / "RESULTS.md", "Serving under load", "benchmarks/serve.py",
            argv, body,
        )  # fmt: skip
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
