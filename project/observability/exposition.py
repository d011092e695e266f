"""Rendering metrics for a scrape, in one process or added up over a multi-process directory.

With PROMETHEUS_MULTIPROC_DIR (a Daphne pod, a worker pod with its pool processes) the samples
are read from that directory's files at each scrape, as prometheus-client's multi-process mode
prescribes; otherwise from this process's registry. `shared` adds what no process counts but
every operator wants on the same page: queue depths and breaker states, read from Redis at
scrape time (so every replica reports the same value: dashboards take `max`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from django.conf import settings
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from core.observability.metrics import BREAKER_OPEN_NAME, QUEUE_DEPTH_NAME

logger = logging.getLogger(__name__)


class QueueDepthCollector(Collector):
    """Tasks waiting in each Celery queue (a Redis list per queue on the broker)."""

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            QUEUE_DEPTH_NAME,
            "Tasks waiting in a Celery queue (the broker's list).",
            labels=["queue"],
        )
        if settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://", "unix://")):
            import redis

            try:
                client = redis.Redis.from_url(
                    settings.CELERY_BROKER_URL, socket_timeout=2, socket_connect_timeout=2
                )
                try:
                    for queue in settings.METRICS_CELERY_QUEUES:
                        depth = client.llen(queue)
                        family.add_metric([queue], float(depth))  # type: ignore[arg-type]
                finally:
                    client.close()
            except Exception:  # a broker outage must not fail the scrape
                logger.warning("queue depth not read", exc_info=True)
        yield family


class BreakerCollector(Collector):
    """1 while a deployment's circuit breaker is open or half-open (shared state in Redis)."""

    def collect(self) -> Iterator[Metric]:
        from llm.breaker import State
        from llm.catalog import all_deployments
        from llm.health import key_health

        family = GaugeMetricFamily(
            BREAKER_OPEN_NAME,
            "1 while a deployment's breaker is open (0.5 half-open, 0 closed).",
            labels=["deployment", "alias"],
        )
        try:
            for deployment in all_deployments():
                status, _ = key_health(deployment.key)
                value = {State.OPEN: 1.0, State.HALF_OPEN: 0.5}.get(status.state, 0.0)
                family.add_metric([deployment.label, deployment.alias], value)
        except Exception:
            logger.warning("breaker states not read", exc_info=True)
        yield family


def multiprocess_tidy() -> int:
    """At start: drop live-gauge files of processes that no longer run (a restarted container
    keeps its pod's directory), so open sockets and active streams count only live processes.
    Returns how many processes were marked dead."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return 0
    from prometheus_client import multiprocess

    dead = set()
    for path in Path(directory).glob("gauge_live*_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            dead.add(pid)
        except PermissionError:
            pass  # alive, another user's
    for pid in dead:
        multiprocess.mark_process_dead(pid, directory)
    return len(dead)


def scrape_registry(*, shared: bool) -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:
        registry = CollectorRegistry()
        registry.register(_Forward(REGISTRY))
    if shared:
        registry.register(QueueDepthCollector())
        registry.register(BreakerCollector())
    return registry


class _Forward(Collector):
    """This process's default registry, inside a scrape registry of its own."""

    def __init__(self, source: CollectorRegistry) -> None:
        self.source = source

    def collect(self) -> Iterable[Metric]:
        return self.source.collect()


def metrics_payload(*, shared: bool) -> tuple[bytes, str]:
    return generate_latest(scrape_registry(shared=shared)), CONTENT_TYPE_LATEST
