"""The HTTP server: a FastAPI app around one classifier directory.

Routes follow what users know from Hugging Face's text-embeddings-inference and
``pipeline("text-classification")``:

- ``POST /predict`` ``{"inputs": "text" | [...], "top_k": null, "raw_scores": false}``:
  ``[{"label", "score"}, ...]`` best first (a list of such lists for a list of inputs).
  Multiclass: every label (or the ``top_k`` best); multilabel: the labels above their
  tuned thresholds (or the ``top_k`` best). ``raw_scores``: logits instead of
  probabilities (the choice of labels is the same).
- ``POST /embed``: the pooled document vectors; ``POST /explain``: each token's
  importance for a label (:mod:`ulmfit.serve.explain`).
- ``GET /health`` (200 once the model is loaded, 503 before), ``GET /info``,
  ``GET /metrics`` (Prometheus), ``GET /`` (a page that shows why), ``/docs`` (OpenAPI).

Requests to ``/predict`` are micro-batched (:mod:`ulmfit.serve.batching`). Errors are JSON
``{"error": ..., "error_type": ...}``: a body over the payload limit or too many inputs
413, an empty or non-string input 422, a full queue 429, a model still loading 503.
"""

import asyncio
import gc
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ulmfit.serve.batching import MicroBatcher, QueueFullError
from ulmfit.serve.config import ServeConfig
from ulmfit.serve.schemas import ExplainRequest, Inputs, PredictRequest

if TYPE_CHECKING:
    from fastapi import FastAPI

    from ulmfit.tasks.classify import TextClassifier
    from ulmfit.tasks.heads import Head
    from ulmfit.tasks.multitask import MultiTaskClassifier

log = logging.getLogger(__name__)


class LimitsAndMetrics:
    """Pure ASGI middleware: refuses a request body over ``max_bytes`` (413, before the
    route reads it: by its Content-Length, or counted as a chunked body arrives) and
    reports each HTTP request's path, status and seconds to ``observe``."""

    def __init__(self, app: Any, max_bytes: int, observe: Callable[[str, int, float], None]):
        self.app, self.max_bytes, self.observe = app, max_bytes, observe

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def send_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            headers = dict(scope.get("headers") or [])
            length = headers.get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_bytes:
                await self._too_large(send_status, f"body of {int(length)} bytes")
                return
            if length is None and scope["method"] == "POST":
                body, more = b"", True
                while more and len(body) <= self.max_bytes:
                    message = await receive()
                    body += message.get("body", b"")
                    more = message.get("more_body", False)
                if len(body) > self.max_bytes:
                    await self._too_large(send_status, "body")
                    return
                receive = _replay(body, receive)
            await self.app(scope, receive, send_status)
        finally:
            self.observe(scope["path"], status, time.perf_counter() - t0)

    async def _too_large(self, send: Any, what: str) -> None:
        body = json.dumps(
            {
                "error": f"{what} over the limit of {self.max_bytes} bytes",
                "error_type": "Validation",
            }
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _replay(body: bytes, receive: Any) -> Any:
    """A ``receive`` that gives ``body`` (already read) once, then defers to ``receive``."""
    sent = False

    async def replay() -> Any:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class ApiError(Exception):
    """An error answered as ``{"error": message, "error_type": kind}`` with ``status``."""

    def __init__(self, status: int, message: str, kind: str) -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


class _State:
    """The loaded model(s), filled in by a background thread at startup."""

    def __init__(self) -> None:
        self.clf: TextClassifier | MultiTaskClassifier | None = None  # answers /predict
        self.float_clf: TextClassifier | MultiTaskClassifier | None = None  # for /explain
        self.error: str | None = None
        self.ready = threading.Event()


def create_app(
    load: "Callable[[], TextClassifier | MultiTaskClassifier]",
    config: ServeConfig | None = None,
    load_float: "Callable[[], TextClassifier | MultiTaskClassifier] | None" = None,
    freeze_gc: bool = False,
) -> "FastAPI":
    """The app. ``load`` builds the classifier (run in a thread at startup, so ``/health``
    answers 503 meanwhile); ``load_float`` a float copy for ``/explain`` where ``load``
    gives an int8 one (default: the same object). A multi-task model answers /predict
    with each head's labels from one encoder pass. ``freeze_gc``: once loaded, exempt the
    process's objects from garbage collection passes (a server process; not a test's)."""
    import torch
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        CollectorRegistry,
        Counter,
        Gauge,
        Histogram,
        generate_latest,
    )

    from ulmfit import __version__
    from ulmfit.serve.explain import explain
    from ulmfit.tasks.multitask import MultiTaskClassifier

    cfg = config or ServeConfig()
    state = _State()
    registry = CollectorRegistry()
    m_requests = Counter(
        "ulmfit_requests", "HTTP requests by route and status", ["route", "status"],
        registry=registry,
    )  # fmt: skip
    m_latency = Histogram(
        "ulmfit_request_seconds", "Request latency", ["route"], registry=registry,
        buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    )  # fmt: skip
    m_batch = Histogram(
        "ulmfit_batch_size", "Documents per model call", registry=registry,
        buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
    )  # fmt: skip
    m_queue = Gauge("ulmfit_queue_depth", "Documents waiting for the model", registry=registry)

    def predict_batch(texts: list[str]) -> list[Any]:
        """Each document's (logits, probabilities); a multi-task model's: a dict of them
        by head, from one encoder pass."""
        clf = state.clf
        assert clf is not None
        m_batch.observe(len(texts))
        if isinstance(clf, MultiTaskClassifier):
            z = clf.predict_logits(texts)
            p = {n: clf.heads[n].probs(torch.from_numpy(v)).numpy() for n, v in z.items()}
            return [{n: (z[n][i], p[n][i]) for n in z} for i in range(len(texts))]
        logits = clf.predict_logits(texts)
        probs = clf.head.probs(torch.from_numpy(logits)).numpy()
        return list(zip(logits, probs, strict=True))

    batcher = MicroBatcher(predict_batch, cfg.max_batch_size, cfg.max_wait_ms, cfg.max_queue)

    def load_models() -> None:
        if cfg.threads > 0:
            import torch

            torch.set_num_threads(cfg.threads)  # the process's: batches run in worker threads
        try:
            state.clf = load()
            state.float_clf = load_float() if load_float is not None else state.clf
            state.clf.predict_proba(["warm up"])  # first call pays for lazy set-up
            if freeze_gc:
                # What is loaded now lives as long as the server: keep it out of the garbage
                # collector's full passes, which otherwise stall requests now and then (p99
                # 140 -> 40 ms in benchmarks/serve.py).
                gc.collect()
                gc.freeze()
        except Exception as e:  # reported by /health and every route
            log.exception("cannot load the model")
            state.error = f"{type(e).__name__}: {e}"
        state.ready.set()

    @asynccontextmanager
    async def lifespan(app: "FastAPI") -> AsyncIterator[None]:
        threading.Thread(target=load_models, name="ulmfit-load", daemon=True).start()
        batcher.start()
        try:
            yield
        finally:
            await batcher.stop()  # requests in flight get their answers first

    app = FastAPI(
        title="ulmfit",
        version=__version__,
        description="Text classification by ULMFiT: predict, embed, explain.",
        lifespan=lifespan,
    )
    app.state.ulmfit = state
    app.state.batcher = batcher

    def model() -> "TextClassifier | MultiTaskClassifier":
        if not state.ready.is_set():
            raise ApiError(503, "the model is loading", "Unhealthy")
        if state.clf is None:
            raise ApiError(503, f"the model failed to load: {state.error}", "Unhealthy")
        return state.clf

    def texts_of(req: Inputs) -> tuple[list[str], bool]:
        texts = [req.inputs] if isinstance(req.inputs, str) else list(req.inputs)
        if len(texts) > cfg.max_inputs:
            raise ApiError(
                413, f"{len(texts)} inputs; at most {cfg.max_inputs} per request", "Validation"
            )
        return texts, isinstance(req.inputs, str)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError) -> JSONResponse:
        return JSONResponse({"error": e.message, "error_type": e.kind}, status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        parts = []
        for err in e.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        return JSONResponse(
            {"error": "; ".join(parts), "error_type": "Validation"}, status_code=422
        )

    routes = ("/", "/predict", "/embed", "/explain", "/health", "/info", "/metrics")

    def observe(path: str, status: int, seconds: float) -> None:
        label = path if path in routes else "other"
        m_requests.labels(label, str(status)).inc()
        m_latency.labels(label).observe(seconds)

    app.add_middleware(LimitsAndMetrics, max_bytes=cfg.max_payload_bytes, observe=observe)

    @app.post("/predict", response_class=JSONResponse)
    async def predict(req: PredictRequest) -> Any:
        clf = model()
        texts, single = texts_of(req)
        try:
            rows = await batcher.submit(texts)
        except QueueFullError as e:
            raise ApiError(429, f"server busy: {e}; retry later", "Overloaded") from e
        finally:
            m_queue.set(batcher.stats.queued_docs)
        k, raw = req.top_k, req.raw_scores
        if isinstance(clf, MultiTaskClassifier):  # {head: [{"label", "score"}]} a document
            out: list[Any] = [
                {
                    n: _labels(clf.heads[n], clf.thresholds.get(n), z, p, k, raw)
                    for n, (z, p) in r.items()
                }
                for r in rows
            ]
        else:
            out = [_labels(clf.head, clf.thresholds, z, p, k, raw) for z, p in rows]
        return JSONResponse(out[0] if single else out)

    @app.post("/embed", response_class=JSONResponse)
    async def embed(req: Inputs) -> Any:
        clf = model()
        texts, _ = texts_of(req)
        vectors = await asyncio.get_running_loop().run_in_executor(None, clf.embed, texts)
        return JSONResponse(vectors.tolist())

    @app.post("/explain")
    async def explain_route(req: ExplainRequest) -> Any:
        model()
        clf = state.float_clf
        if isinstance(clf, MultiTaskClassifier):
            raise ApiError(
                422, "/explain is for single-head models, not multi-task ones", "Validation"
            )
        assert clf is not None and clf.labels is not None
        if req.label is not None and req.label not in clf.labels.classes:
            raise ApiError(
                422, f"unknown label {req.label!r}; labels: {list(clf.labels.classes)}",
                "Validation",
            )  # fmt: skip
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(
            None, lambda: explain(clf, req.inputs, req.label, cfg.explain_steps)
        )
        rows = await batcher.submit([req.inputs])
        out = result.to_dict()
        out["scores"] = _labels(clf.head, clf.thresholds, rows[0][0], rows[0][1], None, False, True)
        out["task"] = clf.config.task
        return out

    @app.get("/health")
    async def health() -> Any:
        model()  # 503 while loading or after a failed load
        return {"status": "ok"}

    @app.get("/info")
    async def info() -> Any:
        clf = model()
        assert clf.model is not None and clf.labels is not None
        mc = clf.model.config
        if isinstance(clf, MultiTaskClassifier):
            heads = {
                n: {"task": h.task, "labels": list(clf.labels[n].classes)}
                for n, h in clf.heads.items()
            }
            return {
                "version": __version__,
                "backbone": mc.encoder.kind,
                "task": "multitask",
                "heads": heads,
                "max_len": mc.max_len,
                "max_inputs": cfg.max_inputs,
            }
        return {
            "version": __version__,
            "backbone": mc.encoder.kind,
            "task": clf.config.task,
            "labels": list(clf.labels.classes),
            "quantized": clf.quantized,
            "backwards": clf.config.backwards,
            "max_len": mc.max_len,
            "max_inputs": cfg.max_inputs,
            "max_payload_bytes": cfg.max_payload_bytes,
            "max_batch_size": cfg.max_batch_size,
            "max_wait_ms": cfg.max_wait_ms,
        }

    @app.get("/metrics")
    async def metrics() -> Response:
        m_queue.set(batcher.stats.queued_docs)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return resources.files("ulmfit.serve").joinpath("page.html").read_text(encoding="utf-8")

    return app


def _labels(
    head: "Head",
    thresholds: np.ndarray | None,
    logits: np.ndarray,
    probs: np.ndarray,
    top_k: int | None,
    raw: bool,
    every: bool = False,
) -> list[dict[str, Any]]:
    """One document's answer from one head: ``[{"label", "score"}]`` best first."""
    classes = head.labels.classes
    order = np.argsort(-probs, kind="stable")
    if every:
        chosen = list(order)
    elif top_k is not None:
        chosen = list(order[:top_k])
    elif head.task == "multiclass":
        chosen = list(order)
    else:  # multilabel, hierarchical: the labels its decoding picks, best first
        picked = head.chosen(probs[None], thresholds)[0]  # regression: its one value
        chosen = [j for j in order if picked[j]]
    scores = logits if raw else probs
    return [{"label": classes[j], "score": float(scores[j])} for j in chosen]


def serve(
    model_dir: str,
    host: str = "127.0.0.1",
    port: int = 8080,
    int8: bool = False,
    config: ServeConfig | None = None,
    onnx: str | None = None,
) -> None:
    """Run the server on ``host:port`` until interrupted (SIGINT/SIGTERM finish the
    requests in flight first). ``onnx``: /predict runs that graph in ONNX Runtime."""
    import uvicorn

    from ulmfit.checkpoint import read_config
    from ulmfit.tasks.classify import CLASSIFIER_KIND, TextClassifier
    from ulmfit.tasks.multitask import MultiTaskClassifier, is_multitask_dir

    if is_multitask_dir(model_dir):
        if onnx is not None or int8:
            raise ValueError(
                f"{model_dir}: a multi-task model is served in float32 (no --int8, --onnx)"
            )
        app = create_app(lambda: MultiTaskClassifier.load(model_dir), config, freeze_gc=True)
        uvicorn.run(app, host=host, port=port, log_level="info", access_log=False,
                    timeout_graceful_shutdown=30)  # fmt: skip
        return
    read_config(Path(model_dir), CLASSIFIER_KIND)  # a wrong directory fails now, not later

    if onnx is not None and int8:
        raise ValueError("serve: --onnx or --int8, not both (export-onnx --int8 for int8 ONNX)")

    def load() -> TextClassifier:
        if onnx is not None:
            from ulmfit.export_onnx import OnnxClassifier

            return OnnxClassifier.load_onnx(model_dir, onnx, (config or ServeConfig()).threads)
        return TextClassifier.load(model_dir, quantize="int8" if int8 else None)

    def load_float() -> TextClassifier:
        return TextClassifier.load(model_dir, device="cpu")

    app = create_app(load, config, load_float if int8 or onnx else None, freeze_gc=True)
    # No access log: a line per request costs as much as a small prediction; /metrics counts.
    uvicorn.run(
        app, host=host, port=port, log_level="info", access_log=False,
        timeout_graceful_shutdown=30,
    )  # fmt: skip
