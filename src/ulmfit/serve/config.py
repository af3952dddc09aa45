"""The settings of ``ulmfit serve`` (no server dependencies: the CLI reads them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServeConfig:
    """Limits and batching of ``ulmfit serve`` (each a CLI option of the same name)."""

    max_batch_size: int = 32  # documents per model call
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for company
    max_queue: int = 1024  # documents waiting before requests get 429
    max_inputs: int = 256  # texts per request (more: 413)
    max_payload_bytes: int = 2 * 1024 * 1024  # request body (more: 413)
    explain_steps: int = 32  # integrated-gradients steps for /explain
    # torch's / ONNX Runtime's threads for the model (0: their default, one per core). With
    # the HTTP work on the same cores, 1 is often fastest (benchmarks/serve.py).
    threads: int = 0
