"""A helper process that removes this process's temporary files if it dies mid-write.

Where a file cannot be written unnamed (no linkable ``O_TMPFILE``), a writer's temporary
has a name, and a ``kill -9`` would leave it behind. So the first such write starts one
small watcher per process: a second Python that reads the temporaries' names from a pipe
(``+name`` when one is about to be made, ``-name`` when it is gone or renamed into place)
and, when the pipe ends (the writer exited or died), removes the names still open. The
watcher is in a session of its own, so a signal that kills the writer's process group
(Ctrl-C, ``kill -9 -PGID``) does not stop it before it cleans up.

A name is registered *before* the temporary is created, so there is no moment when a
kill leaves an unregistered one. Removing a registered name is always safe: temporary
names are unique to their call, and one already renamed into place no longer exists.
If the watcher cannot be started, writes go on and the next write of the same target
removes what a dead writer left (``checkpoint.remove_stale_temporaries``).
"""

from __future__ import annotations

import atexit
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

log = logging.getLogger(__name__)

# Runs with -I -S (isolated, no site): stdlib only, a few milliseconds to start.
_WATCHER = r"""
import os, shutil, sys
open_names = set()
for line in sys.stdin.buffer:
    op, name = line[:1], bytes.fromhex(line[1:].strip().decode())
    if op == b"+":
        open_names.add(name)
    elif op == b"-":
        open_names.discard(name)
for name in open_names:
    if os.path.isdir(name) and not os.path.islink(name):
        shutil.rmtree(name, ignore_errors=True)
    else:
        try:
            os.unlink(name)
        except OSError:
            pass
"""

_lock = threading.Lock()
_proc: subprocess.Popen[bytes] | None = None
_owner: int | None = None  # the pid that started the watcher (a forked child has its own)
_failed = False


def _start() -> subprocess.Popen[bytes] | None:
    global _proc, _owner, _failed
    if _proc is not None and _owner == os.getpid():
        return _proc
    if _failed or not sys.executable:
        return None
    try:
        _proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _WATCHER],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # outlives a signal sent to our process group
            close_fds=True,
        )
    except OSError as e:
        log.debug("no watcher for temporary files (%s); a later write removes leftovers", e)
        _failed = True
        return None
    _owner = os.getpid()
    return _proc


def _send(op: bytes, name: Path | str) -> None:
    global _proc, _failed
    with _lock:
        proc = _start()
        if proc is None or proc.stdin is None:
            return
        try:
            proc.stdin.write(op + os.fsencode(str(name)).hex().encode() + b"\n")
            proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            _proc, _failed = None, True  # the watcher is gone: fall back to later cleanup


def watch(name: Path | str) -> None:
    """Remove ``name`` (a file or directory) if this process dies before :func:`unwatch`.
    Call it before creating ``name``."""
    _send(b"+", os.path.abspath(name))


def unwatch(name: Path | str) -> None:
    """``name`` was removed or renamed into place: nothing to clean up for it."""
    if _proc is not None and _owner == os.getpid():
        _send(b"-", os.path.abspath(name))


@atexit.register
def _goodbye() -> None:
    """At a clean exit, end the pipe and wait for the watcher (which removes whatever
    a write abandoned without cleaning up)."""
    global _proc
    proc = _proc
    if proc is None or _owner != os.getpid() or proc.stdin is None:
        return
    try:
        proc.stdin.close()
        proc.wait(timeout=5)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        pass
    _proc = None
