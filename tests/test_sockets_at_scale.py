"""Process-level settings for many sockets: Daphne's listen backlog, the heap trimmed once
after a storm of closes (project/patches.py, core/memory.py)."""

from __future__ import annotations

import asyncio
import gc
import weakref

import daphne.cli
from daphne.endpoints import build_endpoint_description_strings

from core import memory
from project import patches


def test_daphne_listens_with_the_configured_backlog(settings, monkeypatch):
    settings.DAPHNE_LISTEN_BACKLOG = 2048
    # Daphne's own builder, whether or not a test before this one patched it already.
    monkeypatch.setattr(
        daphne.cli, "build_endpoint_description_strings", build_endpoint_description_strings
    )
    patches._listen_backlog()
    endpoints = daphne.cli.build_endpoint_description_strings(host="127.0.0.1", port=8000)
    assert endpoints == ["tcp:port=8000:interface=127.0.0.1:backlog=2048"]
    patches._listen_backlog()  # applied once, however often asked
    assert daphne.cli.build_endpoint_description_strings(host="127.0.0.1", port=8000) == endpoints


async def test_a_storm_of_closes_trims_the_heap_once_when_it_is_over(settings, monkeypatch):
    settings.MEMORY_TRIM_AFTER_CLOSE = 0.01
    trims: list[int] = []
    monkeypatch.setattr(memory, "_trim", trims.append)
    for _ in range(500):
        memory.memory_return_soon()
    while not trims:
        await asyncio.sleep(0.01)
    assert trims == [0] and memory._pending is None  # the other 499 were cancelled
    settings.MEMORY_TRIM_AFTER_CLOSE = 0
    memory.memory_return_soon()
    assert memory._pending is None  # off: nothing scheduled


def test_returning_memory_frees_closed_sockets_cycles_before_trimming(monkeypatch):
    """A closed consumer sits in reference cycles; trimming before they are collected would
    hand nothing back (bench/socket_bench.py: ~45 KB of every closed socket kept)."""

    class Closed:
        pass

    closed = Closed()
    closed.self = closed  # type: ignore[attr-defined]  # a cycle, as a consumer and its tasks
    alive = weakref.ref(closed)
    del closed
    seen_at_trim: list[bool] = []
    monkeypatch.setattr(memory, "_trim", lambda pad: seen_at_trim.append(alive() is None) or 1)
    gc.disable()  # no collection of its own may happen in between
    try:
        memory.memory_return()
    finally:
        gc.enable()
    assert seen_at_trim == [True]
