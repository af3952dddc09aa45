"""Order-preserving, memory-bounded process-pool map used by the tokenisers and the corpus."""

from __future__ import annotations

import ast
import itertools
import logging
import multiprocessing as mp
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

A = TypeVar("A")
B = TypeVar("B")

# Set in each worker by ``_init_worker``: the object the chunk functions use.
_WORKER_STATE: Any = None


def _init_worker(state: Any) -> None:
    global _WORKER_STATE
    _WORKER_STATE = state


def worker_state() -> Any:
    """The object handed to :func:`imap_chunks` as ``state`` (inside a worker)."""
    return _WORKER_STATE


def chunked(items: Iterable[A], size: int, max_chars: int = 0) -> Iterator[list[A]]:
    """Lists of at most ``size`` items (and about ``max_chars`` characters if > 0)."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    chunk: list[A] = []
    chars = 0
    for x in items:
        chunk.append(x)
        if max_chars:
            chars += len(x)  # type: ignore[arg-type]
        if len(chunk) >= size or (max_chars and chars >= max_chars):
            yield chunk
            chunk, chars = [], 0
    if chunk:
        yield chunk


def imap_chunks(
    func: Callable[[list[A]], B],
    chunks: Iterable[list[A]],
    n_workers: int,
    state: Any,
    max_pending: int | None = None,
) -> Iterator[B]:
    """``map(func, chunks)`` in ``n_workers`` spawned processes, results in input order.

    ``Pool.imap`` would read the whole input ahead of the workers, so the texts of a
    large corpus would pile up in memory; here at most ``max_pending`` chunks are in
    flight. ``func`` must be a top-level function (spawn pickles it by name) and reads
    ``state`` through :func:`worker_state`. "spawn" because forking a process that holds
    torch/OpenMP threads can deadlock; an executor (not ``Pool``) because a worker that
    dies then raises ``BrokenProcessPool`` instead of hanging.
    """
    chunks = iter(chunks)
    head = list(itertools.islice(chunks, 2))
    if len(head) < 2:  # one chunk: starting processes would cost more than it saves
        yield from _in_process(func, head, state)
        return
    if not spawn_is_safe():
        global _TOLD_UNGUARDED
        if not _TOLD_UNGUARDED:
            log.info(
                'tokenising in this process: %s has no `if __name__ == "__main__":` guard, '
                "so worker processes (which import it again) cannot start",
                getattr(sys.modules.get("__main__"), "__file__", "the main script"),
            )
            _TOLD_UNGUARDED = True
        yield from _in_process(func, itertools.chain(head, chunks), state)
        return
    chunks = itertools.chain(head, chunks)
    pending_max = max_pending or 2 * n_workers
    ctx = mp.get_context("spawn")
    pool = ProcessPoolExecutor(
        n_workers, mp_context=ctx, initializer=_init_worker, initargs=(state,)
    )
    try:
        pending: deque[Future[B]] = deque()
        for chunk in chunks:
            pending.append(pool.submit(func, chunk))
            if len(pending) >= pending_max:
                yield _result(pending.popleft())
        while pending:
            yield _result(pending.popleft())
    finally:
        # Also reached when the consumer stops early: drop the queued work.
        pool.shutdown(wait=True, cancel_futures=True)


def _in_process(func: Callable[[list[A]], B], chunks: Iterable[list[A]], state: Any) -> Iterator[B]:
    """The chunks mapped in this process, ``state`` standing in for the worker's."""
    global _WORKER_STATE
    before = _WORKER_STATE
    try:
        for chunk in chunks:
            _WORKER_STATE = state
            yield func(chunk)
    finally:
        _WORKER_STATE = before


_TOLD_UNGUARDED = False


def spawn_is_safe() -> bool:
    """False if spawned workers would re-run the caller's script: a ``__main__`` file
    without an ``if __name__ == "__main__":`` block at its top level.

    A spawned process imports the main script again (as ``__mp_main__``); without the
    guard, the script's top-level calls run again there and fail. An interactive
    session or a notebook has no script to re-run, and a script we cannot read is
    given the benefit of the doubt.
    """
    if mp.parent_process() is not None:
        return True  # inside a worker (which never starts workers of its own anyway)
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if not path:
        return True
    try:
        tree = ast.parse(Path(path).read_bytes())
    except (OSError, SyntaxError, ValueError):
        return True
    return any(isinstance(node, ast.If) and _is_main_test(node.test) for node in tree.body)


def _is_main_test(test: ast.expr) -> bool:
    """``__name__ == "__main__"`` (either way round)."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1):
        return False
    if not isinstance(test.ops[0], ast.Eq):
        return False
    sides = [test.left, test.comparators[0]]
    names = [s.id for s in sides if isinstance(s, ast.Name)]
    consts = [s.value for s in sides if isinstance(s, ast.Constant)]
    return names == ["__name__"] and consts == ["__main__"]


def _result(future: Future[B]) -> B:
    """The future's result; a dead worker gets an error that says what usually kills it."""
    try:
        return future.result()
    except BrokenProcessPool as e:
        raise RuntimeError(
            "a tokeniser worker process died. Workers are spawned, so they import the "
            'script that started them: a script without `if __name__ == "__main__":` '
            "runs again in each worker and fails there. Guard the script's entry point, "
            "or tokenise in this process (n_workers=1); also check memory (a killed worker "
            f"looks the same). ({e})"
        ) from e
