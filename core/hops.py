"""Opt-in timestamps of one send's hops, on the machine's one monotonic clock, for benchmarks.

With PARLEY_HOP_STAMPS=DIR each process appends `name key nanoseconds` lines to
DIR/hops-<pid>.log at named points of a send's life (the frame in, the commit, the task's
publish and pick-up, the claim, the provider call, the first token, the first delta in and out
of Daphne). CLOCK_MONOTONIC is the same clock in every process of a host, so
bench/send_bench.py `--hops` joins the lines of Daphne, the worker and its own clients by key
(a send's client_id before its reply exists, the reply's id after) into one timeline per send.
Unset (production, tests), `hop` is one global read and returns.
"""

from __future__ import annotations

import contextvars
import os
import time

_DIR = os.environ.get("PARLEY_HOP_STAMPS", "")
_fd: int | None = None
_fd_pid = 0

# The reply a generation works on, for stamps from code that knows no message id (llm/).
current: contextvars.ContextVar[int | None] = contextvars.ContextVar("hop_reply", default=None)


def enabled() -> bool:
    return bool(_DIR)


def hop(name: str, key: object = None, at: int | None = None) -> None:
    """Stamp `name` for `key` (None: the generation's reply, `current`) now, or `at` (a
    `time.monotonic_ns()` taken earlier, before the key was known)."""
    if not _DIR:
        return
    if key is None:
        key = current.get()
        if key is None:
            return
    _write(f"{name} {key} {time.monotonic_ns() if at is None else at}\n")


def _write(line: str) -> None:
    global _fd, _fd_pid
    if _fd is None or _fd_pid != os.getpid():  # a prefork child writes its own file
        _fd_pid = os.getpid()
        path = os.path.join(_DIR, f"hops-{_fd_pid}.log")
        _fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(_fd, line.encode())  # one line, one write: lines of threads never interleave
