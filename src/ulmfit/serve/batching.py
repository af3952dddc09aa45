"""Dynamic micro-batching: concurrent requests' documents read by the model together.

Each request puts its texts on one queue and awaits a future. A single worker task takes
the first waiting request, then keeps gathering until ``max_batch_size`` documents are
in hand or ``max_wait_ms`` have passed since the first arrived, and runs the model on
all of them in a worker thread (off the event loop, so the server keeps accepting
requests meanwhile). The model sorts the batch by length itself, and in float32 a
document's probabilities do not depend on the batch it is read in: batching changes the
throughput, never the answer.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

#: The model call: texts -> one result per text, in order.
BatchFn = Callable[[list[str]], Sequence[Any]]


class QueueFullError(RuntimeError):
    """More documents are waiting than the queue holds: the caller should retry later."""


@dataclass
class _Job:
    texts: list[str]
    future: asyncio.Future[list[Any]]
    arrived: float = field(default_factory=time.perf_counter)


@dataclass
class BatchStats:
    """What the batcher has done: for ``/metrics`` and for tests."""

    # documents per model call, the latest 10,000
    batch_sizes: deque[int] = field(default_factory=lambda: deque(maxlen=10_000))
    queued_docs: int = 0  # documents waiting now


class MicroBatcher:
    """Gathers concurrent calls of :meth:`submit` into batched calls of ``fn``.

    ``max_queue`` bounds the documents waiting (a request beyond it raises
    :class:`QueueFullError` at once). ``run_in`` runs ``fn`` off the event loop (default:
    the loop's thread pool). Start with :meth:`start` inside a running loop; :meth:`stop`
    finishes the work already queued, then ends.
    """

    def __init__(
        self,
        fn: BatchFn,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        max_queue: int = 1024,
    ) -> None:
        if max_batch_size < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError("max_batch_size and max_queue must be >= 1, max_wait_ms >= 0")
        self.fn = fn
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.stats = BatchStats()
        self._jobs: deque[_Job] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Finish every queued request, then stop the worker."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def submit(self, texts: list[str]) -> list[Any]:
        """The model's results for ``texts``, read in a batch with other callers' texts."""
        if self._wake is None or self._stopping:
            raise RuntimeError("the batcher is not running")
        if self.stats.queued_docs + len(texts) > self.max_queue:
            raise QueueFullError(
                f"{self.stats.queued_docs} documents are waiting (queue holds {self.max_queue})"
            )
        job = _Job(list(texts), asyncio.get_running_loop().create_future())
        self._jobs.append(job)
        self.stats.queued_docs += len(job.texts)
        self._wake.set()
        return await job.future

    async def _run(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._jobs:
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            # Wait for company: until the batch is full or the first job has waited enough.
            deadline = self._jobs[0].arrived + self.max_wait
            while (
                self.stats.queued_docs < self.max_batch_size
                and not self._stopping
                and (left := deadline - time.perf_counter()) > 0
            ):
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), left)
                except asyncio.TimeoutError:
                    break
            batch: list[_Job] = []
            n = 0
            while self._jobs and (not batch or n + len(self._jobs[0].texts) <= self.max_batch_size):
                job = self._jobs.popleft()
                batch.append(job)
                n += len(job.texts)
            self.stats.queued_docs -= n
            texts = [t for j in batch for t in j.texts]
            self.stats.batch_sizes.append(len(texts))
            try:
                results = list(await loop.run_in_executor(None, self.fn, texts))
            except Exception as e:  # every caller of this batch gets the error
                for j in batch:
                    if not j.future.done():
                        j.future.set_exception(e)
                continue
            start = 0
            for j in batch:
                if not j.future.done():  # a caller may have gone away
                    j.future.set_result(results[start : start + len(j.texts)])
                start += len(j.texts)
