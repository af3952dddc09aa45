"""``ulmfit serve``: every route and error through FastAPI's TestClient, micro-batching
under concurrent calls, integrated gradients on a case with a known answer, and a real
uvicorn server on 127.0.0.1 started, called over HTTP and stopped by the test."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("captum")
import httpx
from fastapi.testclient import TestClient

from tiny_classifier import make_texts, train_tiny  # type: ignore[import-not-found]
from ulmfit.inference import num_threads
from ulmfit.serve.app import ServeConfig, create_app
from ulmfit.serve.explain import explain
from ulmfit.tasks.classify import TextClassifier

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    with num_threads(1):
        yield


@pytest.fixture(scope="module")
def clf() -> TextClassifier:
    return train_tiny(max_len=24)


@contextmanager
def serving(load: Callable[[], TextClassifier], **config: Any) -> Iterator[TestClient]:
    app = create_app(load, ServeConfig(**config))
    with TestClient(app) as client:
        yield client


def wait_healthy(client: TestClient | httpx.Client, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/health").status_code != 200:
        assert time.monotonic() < deadline, "the model did not load in time"
        time.sleep(0.02)


def test_routes_answer_as_the_library_does(clf: TextClassifier) -> None:
    texts, _ = make_texts(6, seed=5)
    with serving(lambda: clf) as c:
        wait_healthy(c)
        one = c.post("/predict", json={"inputs": texts[0]})
        assert one.status_code == 200
        body = one.json()
        assert body[0]["label"] == clf.predict([texts[0]])[0]
        assert sorted(d["label"] for d in body) == ["neg", "pos"]
        assert body[0]["score"] >= body[1]["score"]
        assert sum(d["score"] for d in body) == pytest.approx(1.0, abs=1e-5)
        many = c.post("/predict", json={"inputs": texts}).json()
        probs = clf.predict_proba(texts)
        classes = list(clf.labels.classes)  # type: ignore[union-attr]
        for row, p in zip(many, probs, strict=True):
            assert {d["label"]: d["score"] for d in row} == pytest.approx(
                dict(zip(classes, p.tolist(), strict=True)), abs=1e-6
            )
        top = c.post("/predict", json={"inputs": texts[:2], "top_k": 1}).json()
        assert [len(r) for r in top] == [1, 1]
        raw = c.post("/predict", json={"inputs": texts[:1], "raw_scores": True}).json()[0]
        logits = clf.predict_logits(texts[:1])[0]
        assert {d["label"]: d["score"] for d in raw} == pytest.approx(
            dict(zip(classes, logits.tolist(), strict=True)), abs=1e-5
        )
        vectors = c.post("/embed", json={"inputs": texts[:3]}).json()
        assert np.allclose(np.array(vectors), clf.embed(texts[:3]), atol=1e-6)
        info = c.get("/info").json()
        assert info["backbone"] == "awd_lstm" and info["task"] == "multiclass"
        assert info["labels"] == classes and info["max_inputs"] == 256
        page = c.get("/")
        assert page.status_code == 200 and "<textarea" in page.text
        assert "/predict" in c.get("/openapi.json").json()["paths"]
        assert c.get("/docs").status_code == 200
        metrics = c.get("/metrics").text
        assert 'ulmfit_requests_total{route="/predict",status="200"} 4.0' in metrics
        assert "ulmfit_batch_size_count" in metrics and "ulmfit_queue_depth 0.0" in metrics


def test_errors_are_json_with_their_codes(clf: TextClassifier) -> None:
    with serving(lambda: clf, max_inputs=3, max_payload_bytes=2000, max_queue=2) as c:
        wait_healthy(c)

        def error(response: httpx.Response, status: int, kind: str) -> str:
            assert response.status_code == status, response.text
            body = response.json()
            assert set(body) == {"error", "error_type"} and body["error_type"] == kind
            return str(body["error"])

        assert "4 inputs" in error(
            c.post("/predict", json={"inputs": ["good"] * 4}), 413, "Validation"
        )
        big = json.dumps({"inputs": "good " * 500})
        assert "bytes" in error(
            c.post("/predict", content=big, headers={"content-type": "application/json"}),
            413,
            "Validation",
        )
        chunked = c.post(  # no Content-Length: the body is counted as it arrives
            "/predict",
            content=iter([big[:1000].encode(), big[1000:].encode()]),
            headers={"content-type": "application/json"},
        )
        error(chunked, 413, "Validation")
        small = json.dumps({"inputs": "a good film"}).encode()
        ok = c.post(  # a small chunked body is read once by the limit and still reaches /predict
            "/predict", content=iter([small[:7], small[7:]]),
            headers={"content-type": "application/json"},
        )  # fmt: skip
        assert ok.status_code == 200 and ok.json()[0]["label"] == "pos"
        for bad in ({"inputs": ""}, {"inputs": []}, {"inputs": 3}, {"inputs": ["a", 1]}, {}):
            error(c.post("/predict", json=bad), 422, "Validation")
        error(c.post("/predict", json={"inputs": "good", "top_k": 0}), 422, "Validation")
        error(c.post("/embed", json={"inputs": ["  "]}), 422, "Validation")
        error(c.post("/explain", json={"inputs": "good", "label": "meh"}), 422, "Validation")
        error(c.post("/explain", json={"inputs": ["good"]}), 422, "Validation")
        # More documents than the queue holds: refused at once, nothing queued.
        busy = c.post("/predict", json={"inputs": ["good film", "bad film", "a"]})
        assert "busy" in error(busy, 429, "Overloaded")
        assert c.app.state.batcher.stats.queued_docs == 0  # type: ignore[attr-defined]
        assert c.post("/predict", json={"inputs": "good"}).status_code == 200


def test_health_is_503_until_the_model_is_loaded(clf: TextClassifier) -> None:
    go = threading.Event()

    def slow_load() -> TextClassifier:
        assert go.wait(30)
        return clf

    with serving(slow_load) as c:
        for path, call in (("/health", c.get), ("/info", c.get)):
            r = call(path)
            assert r.status_code == 503 and r.json()["error_type"] == "Unhealthy"
        r = c.post("/predict", json={"inputs": "good"})
        assert r.status_code == 503
        go.set()
        wait_healthy(c)
        assert c.post("/predict", json={"inputs": "good"}).status_code == 200


def test_concurrent_requests_are_batched_with_the_same_answers(clf: TextClassifier) -> None:
    texts, _ = make_texts(24, seed=7)
    with serving(lambda: clf, max_wait_ms=150, max_batch_size=64) as c:
        wait_healthy(c)
        batcher = c.app.state.batcher  # type: ignore[attr-defined]
        batcher.stats.batch_sizes.clear()
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda t: c.post("/predict", json={"inputs": t}), texts))
        sizes = list(batcher.stats.batch_sizes)
    assert sum(sizes) == len(texts) and max(sizes) > 1, sizes  # gathered, none lost
    assert len(sizes) < len(texts)
    classes = list(clf.labels.classes)  # type: ignore[union-attr]
    for t, a in zip(texts, answers, strict=True):
        assert a.status_code == 200
        alone = clf.predict_proba([t])[0]  # one document, one batch
        got = {d["label"]: d["score"] for d in a.json()}
        assert [got[k] for k in classes] == pytest.approx(alone.tolist(), abs=1e-5)


def test_integrated_gradients_find_the_keyword(clf: TextClassifier) -> None:
    """The known answer: the label is which keyword the text holds, so the keyword must
    carry the largest importance, for its label and against the other; the importances
    add up to the logit's change from the all-xxpad baseline (completeness)."""
    text = "the movie was really good and the actor very"
    ex = explain(clf, text)
    assert ex.label == "pos" and ex.tokens[0] == "xxbos"
    assert len(ex.tokens) == len(ex.importance)
    best = int(np.argmax(np.abs(ex.importance)))
    assert ex.tokens[best] == "good" and ex.importance[best] > 0
    against = explain(clf, text, "neg")
    assert against.tokens[int(np.argmin(against.importance))] == "good"
    assert against.importance[int(np.argmin(against.importance))] < 0
    span = abs(sum(ex.importance))
    assert ex.delta < 0.05 * span, (ex.delta, span)
    with serving(lambda: clf) as c:
        wait_healthy(c)
        got = c.post("/explain", json={"inputs": text}).json()
        assert got["label"] == "pos" and got["task"] == "multiclass"
        assert [t["token"] for t in got["tokens"]] == ex.tokens
        assert [t["importance"] for t in got["tokens"]] == pytest.approx(ex.importance, abs=1e-4)
        assert [s["label"] for s in got["scores"]] == ["pos", "neg"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_real_server_over_http_stops_gracefully(clf: TextClassifier, tmp_path: Path) -> None:
    """``ulmfit serve`` in its own process on 127.0.0.1: health, a prediction over HTTP,
    then SIGTERM while a request waits in the batcher: it is answered, then the server ends."""
    model_dir = clf.save(tmp_path / "clf")
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    cmd = [sys.executable, "-m", "ulmfit.cli.main", "serve", str(model_dir)]
    cmd += ["--port", str(port), "--max-wait-ms", "1500"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=30) as http:
            deadline = time.monotonic() + 90
            while True:
                assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
                try:
                    if http.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
            got = http.post("/predict", json={"inputs": "a good film"}).json()
            assert got[0]["label"] == clf.predict(["a good film"])[0]
            with ThreadPoolExecutor(1) as pool:
                waiting = pool.submit(http.post, "/predict", json={"inputs": "a bad film"})
                while "ulmfit_queue_depth 1.0" not in http.get("/metrics").text:
                    assert not waiting.done()
                    time.sleep(0.02)
                proc.send_signal(signal.SIGTERM)
                answer = waiting.result(timeout=30)
            assert answer.status_code == 200 and answer.json()[0]["label"] == "neg"
        # uvicorn shuts down cleanly, then re-raises the signal it caught (exit -SIGTERM).
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
        log = proc.stdout.read().decode() if proc.stdout else ""
        assert "Finished server process" in log, log[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_multilabel_answers_every_label_above_its_threshold() -> None:
    """A multilabel model: /predict gives every label past its threshold (none, one or
    both), best first, or the top k; /explain points at the keyword of the label asked."""
    from tiny_classifier import train_tiny

    ml = train_tiny(max_len=24, epochs=12, task="multilabel")
    texts = ["the movie was good and bad", "the film and the plot", "a really bad actor"]
    decided = ml.predict(texts)
    assert sorted(decided[0]) == ["bad", "good"] and decided[1] == [] and decided[2] == ["bad"]
    with serving(lambda: ml) as c:
        wait_healthy(c)
        got = c.post("/predict", json={"inputs": texts}).json()
        assert [sorted(d["label"] for d in row) for row in got] == [sorted(x) for x in decided]
        assert all(d["score"] >= 0.5 for row in got for d in row)  # no tuned thresholds: 0.5
        top = c.post("/predict", json={"inputs": texts[1], "top_k": 1}).json()
        assert len(top) == 1 and top[0]["score"] < 0.5  # top_k overrides the thresholds
        why = c.post("/explain", json={"inputs": texts[0], "label": "bad"}).json()
        assert why["task"] == "multilabel" and why["label"] == "bad"
        tokens = [t["token"] for t in why["tokens"]]
        weights = [t["importance"] for t in why["tokens"]]
        assert tokens[int(np.argmax(weights))] == "bad"
        assert c.get("/info").json()["task"] == "multilabel"
