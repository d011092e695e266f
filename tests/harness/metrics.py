"""The production topology as metrics see it: one Daphne replica and the Celery workers a caller
starts, each kind with a PROMETHEUS_MULTIPROC_DIR of its own (as separate pods have), and a
scrape parsed into samples. Used by tests/integration/test_metrics_topology.py and
bench/metrics_overhead.py."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.harness.processes import free_port, wait_until_answers
from tests.harness.topology import Topology, production_topology

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@contextmanager
def metered_topology(
    *, name: str, user: tuple[str, str], env: Mapping[str, str]
) -> Iterator[tuple[Topology, Path]]:
    """The topology (simulated provider, no nginx, no worker yet) and the directory the
    workers' multi-process files go to."""
    with tempfile.TemporaryDirectory(prefix=f"parley-{name}-") as dirs:
        web, workers = Path(dirs, "web"), Path(dirs, "worker")
        web.mkdir()
        workers.mkdir()
        with production_topology(
            replicas=1,
            nginx=False,
            worker=False,
            provider="simulated",
            user=user,
            name=name,
            env={"PROMETHEUS_MULTIPROC_DIR": str(web), **env},
        ) as topo:
            yield topo, workers


def start_metered_worker(topo: Topology, worker_dir: Path) -> int:
    """Start the topology's worker with its metrics files in `worker_dir` and its own /metrics
    port; returns the port once it answers."""
    port = free_port()
    topo.start_worker(env={"PROMETHEUS_MULTIPROC_DIR": str(worker_dir), "METRICS_PORT": str(port)})
    wait_until_answers(f"http://127.0.0.1:{port}/metrics", timeout=120)
    return port


def scrape(url: str, token: str) -> Samples:
    response = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert response.status_code == 200, response.text
    from prometheus_client.parser import text_string_to_metric_families

    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)
