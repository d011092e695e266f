"""The Celery app's process-level set-up (project/celery.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from celery import signals

import project.celery  # noqa: F401  (connects the app's signal receivers)


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    try:
        yield
    finally:
        gc.unfreeze()  # the test process's own collector, as it was


@pytest.mark.parametrize("signal", [signals.worker_ready, signals.worker_process_init])
def test_a_ready_worker_keeps_what_it_loaded_out_of_the_collector(unfrozen, signal):
    loaded = object.__new__(type("Loaded", (), {}))  # tracked by the collector, like a model
    assert gc.get_freeze_count() == 0

    signal.send(sender=None)

    assert gc.get_freeze_count() > 0
    assert not any(held is loaded for held in gc.get_objects())  # frozen: no walk visits it
    later = object.__new__(type("Later", (), {}))
    assert any(held is later for held in gc.get_objects())  # what comes after is collected
