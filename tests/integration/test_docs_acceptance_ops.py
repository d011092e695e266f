"""docs/operations.md's promises that other files leave unchecked (test_metrics_topology.py:
one reply counted once, readiness with Redis down; test_docs_promises.py: the probes' shapes
through nginx), checked as an operator would on the production topology: nginx → two Daphne
replicas → Redis ← a Celery worker, PostgreSQL, with METRICS_TOKEN and METRICS_ALLOWED_NETWORKS
both set and JSON logs.

- /metrics: both rules must pass; through nginx (X-Forwarded-For) it is refused;
- request ids: a replica reached directly makes 16 hex digits, nginx 32; a sane client id is
  kept; the id of the request that sent a message is on the worker's log line for its reply;
- what is counted where: probes and scrapes are not HTTP traffic, sockets on the replica that
  holds them, resume frames, and an HTTP rate limit's refusals.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.harness.metrics import Samples, total
from tests.harness.metrics import scrape as scrape_with
from tests.harness.processes import REPO, manage
from tests.harness.sockets import hear_reply, recv_frame
from tests.harness.topology import Topology, production_topology

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

TOKEN = "acceptance-ops-metrics-token"
TICKETS_PER_HOUR = 2

KEY = """
from accounts.services import account_create, api_key_create
u = account_create(username="ops-olivia", password="correct horse battery staple")
print(api_key_create(user=u, organisation=u.personal_organisation, name="ops").raw)
"""


@dataclass
class Site:
    topo: Topology
    key: str

    def direct(self, replica: int) -> str:
        return f"http://127.0.0.1:{self.topo.daphne_ports[replica]}"

    def scrape(self, replica: int) -> Samples:
        return scrape_with(f"{self.direct(replica)}/metrics", TOKEN)

    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    env = {
        "METRICS_TOKEN": TOKEN,
        "METRICS_ALLOWED_NETWORKS": "127.0.0.0/8",
        "LOG_FORMAT": "json",
        "API_RATE_WS_TICKET": f"{TICKETS_PER_HOUR}/h",
    }
    with production_topology(replicas=2, env=env, name="acceptance-ops") as topo:
        key = manage("shell", "-c", KEY, env=topo.env).strip().splitlines()[-1]
        with topo.logs_on_failure():
            yield Site(topo, key)


def json_lines(log: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]


# --- /metrics ------------------------------------------------------------------------------


def test_metrics_need_both_rules_and_are_refused_through_nginx(site: Site) -> None:
    """ "with both, both must pass; otherwise 403"; "a request carrying X-Forwarded-For (one
    that came through nginx or an ingress) is refused"."""
    token = {"Authorization": f"Bearer {TOKEN}"}
    direct = f"{site.direct(0)}/metrics"
    scraped = httpx.get(direct, headers=token, timeout=30)
    assert scraped.status_code == 200, scraped.text[:300]
    assert scraped.headers["content-type"].startswith("text/plain")
    assert "parley_websocket_connections" in scraped.text
    assert httpx.get(direct, timeout=30).status_code == 403
    wrong = {"Authorization": "Bearer not-the-token"}
    assert httpx.get(direct, headers=wrong, timeout=30).status_code == 403
    proxied = {**token, "X-Forwarded-For": "127.0.0.1"}
    assert httpx.get(direct, headers=proxied, timeout=30).status_code == 403
    through_nginx = httpx.get(f"{site.topo.base}/metrics", headers=token, timeout=30)
    assert through_nginx.status_code == 403, through_nginx.text[:300]


# --- request ids ---------------------------------------------------------------------------


def test_request_ids_are_made_by_nginx_or_the_replica_and_a_sane_one_is_kept(
    site: Site,
) -> None:
    """ "nginx ... makes it (its $request_id, 32 hex digits) ... a replica reached directly
    makes a 16-hex-digit one"; the client's own when it is a sane token."""
    path = "/api/v1/models"
    direct = httpx.get(f"{site.direct(1)}{path}", headers=site.bearer(), timeout=30)
    assert re.fullmatch(r"[0-9a-f]{16}", direct.headers["x-request-id"]), direct.headers
    proxied = httpx.get(f"{site.topo.base}{path}", headers=site.bearer(), timeout=30)
    made = proxied.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made), proxied.headers
    assert f"rid={made}" in site.topo.log("nginx")
    page = httpx.get(f"{site.topo.base}/accounts/login/", timeout=30)
    assert re.fullmatch(r"[0-9a-f]{32}", page.headers["x-request-id"])  # pages too
    # Not the probes: they are not traffic (no id, no span, no latency sample).
    assert "x-request-id" not in httpx.get(f"{site.topo.base}/livez", timeout=30).headers
    for base in (site.direct(0), site.topo.base):
        kept = httpx.get(
            f"{base}{path}", headers={**site.bearer(), "X-Request-ID": "ops.check:1"}, timeout=30
        )
        assert kept.headers["x-request-id"] == "ops.check:1", base
        insane = httpx.get(
            f"{base}{path}", headers={**site.bearer(), "X-Request-ID": "a b/c"}, timeout=30
        )
        assert insane.headers["x-request-id"] != "a b/c", base
        assert re.fullmatch(r"[0-9a-f]{16}|[0-9a-f]{32}", insane.headers["x-request-id"])


def test_a_host_outside_django_allowed_hosts_is_refused_through_nginx(site: Site) -> None:
    """README: DJANGO_ALLOWED_HOSTS are the site's host names (nginx passes the client's Host
    on): another name is a 400, the allowed ones are served."""
    path = f"{site.topo.base}/accounts/login/"
    assert httpx.get(path, headers={"Host": "evil.example.net"}, timeout=30).status_code == 400
    assert httpx.get(path, headers={"Host": "localhost"}, timeout=30).status_code == 200


def rest_send(site: Site, headers: dict[str, str]) -> tuple[int, str]:
    """A message sent through nginx; (its reply's id, the response's request id) once final."""
    with httpx.Client(base_url=site.topo.base, headers=site.bearer(), timeout=60) as http:
        chat = http.post("/api/v1/conversations", json={"title": "ops"}).json()["id"]
        sent = http.post(
            f"/api/v1/conversations/{chat}/messages", json={"text": "Hello"}, headers=headers
        )
        assert sent.status_code == 201, sent.text
        reply = sent.json()["reply"]
        deadline = time.monotonic() + 120
        while http.get(f"/api/v1/messages/{reply}").json()["status"] in ("pending", "streaming"):
            assert time.monotonic() < deadline, "the reply never ended"
            time.sleep(0.1)
    return reply, sent.headers["x-request-id"]


def test_the_request_id_of_a_send_is_on_the_workers_log_lines_for_its_reply(site: Site) -> None:
    """ "It travels into the Celery task's headers (parley_request_id) and so into the worker's
    log lines for that reply ("task llm.tasks.generate_reply started from llm-remote (queued
    0.01 s)" ...)": the client's own id, and one nginx made."""
    _, own = rest_send(site, {"X-Request-ID": f"ops-send.{uuid.uuid4().hex[:8]}"})
    _, nginxs = rest_send(site, {})
    assert re.fullmatch(r"[0-9a-f]{32}", nginxs)
    started = [
        line
        for line in json_lines(site.topo.log("worker"))
        if re.fullmatch(
            r"task llm\.tasks\.generate_reply started from llm-remote \(queued [0-9.]+ s\)",
            str(line.get("event")),
        )
    ]
    ids = {line.get("request_id") for line in started}
    assert {own, nginxs} <= ids, started[-4:]
    for line in started:
        assert {"level", "logger", "timestamp", "task_id"} <= set(line), line


# --- what is counted where -----------------------------------------------------------------


def test_probes_and_scrapes_are_not_counted_as_http_traffic(site: Site) -> None:
    base = site.direct(0)
    for path in ("/livez", "/readyz", "/healthz"):
        assert httpx.get(f"{base}{path}", timeout=30).status_code == 200
    site.scrape(0)
    assert httpx.get(f"{base}/api/v1/models", headers=site.bearer(), timeout=30).status_code == 200
    samples = site.scrape(0)
    routes = {
        dict(labels).get("route")
        for (name, labels) in samples
        if name == "parley_http_request_seconds_count"
    }
    assert "/api/v1/models" in routes, routes
    assert not routes & {"/livez", "/readyz", "/healthz", "/metrics", "livez", "readyz"}, routes
    assert not any(route and ("livez" in route or "metrics" in route) for route in routes)


async def program_socket(site: Site, replica: int) -> ClientConnection:
    url = site.direct(replica).replace("http://", "ws://", 1) + "/ws/chat/"
    return await connect(url, additional_headers=site.bearer(), open_timeout=15, close_timeout=2)


async def until_gauge(site: Site, replica: int, value: float) -> None:
    deadline = time.monotonic() + 30
    while total(site.scrape(replica), "parley_websocket_connections") != value:
        assert time.monotonic() < deadline, f"parley_websocket_connections never {value}"
        await asyncio.sleep(0.05)


async def test_a_socket_is_counted_by_the_replica_holding_it_and_its_resumes_too(
    site: Site,
) -> None:
    """parley_websocket_connections: "WebSockets open on this replica"; parley_client_resumes_
    total: "`resume` frames"."""
    before = [total(site.scrape(i), "parley_websocket_connections") for i in (0, 1)]
    resumes_before = total(site.scrape(1), "parley_client_resumes_total")
    ws = await program_socket(site, 1)
    try:
        await until_gauge(site, 1, before[1] + 1)
        assert total(site.scrape(0), "parley_websocket_connections") == before[0]
        await ws.send(
            json.dumps(
                {
                    "type": "send",
                    "conversation": None,
                    "text": "Hello",
                    "client_id": uuid.uuid4().hex,
                }
            )
        )
        heard = await hear_reply(ws, timeout=120)
        await ws.send(json.dumps({"type": "resume", "message": heard.reply, "after_seq": 0}))
        frame = await recv_frame(ws, 30)
        while frame["type"] not in ("done", "error"):
            frame = await recv_frame(ws, 30)
        assert frame["type"] == "done", frame
        resumed = total(site.scrape(1), "parley_client_resumes_total") - resumes_before
        assert resumed == 1
    finally:
        await ws.close()
    await until_gauge(site, 1, before[1])


def test_an_http_rate_limits_refusals_are_counted(site: Site) -> None:
    """parley_refusals_total counts what a limit refused, `http` for view limits: the
    ParleyRateLimiting alert ("a client sends faster than WS_RATE_*/API_RATE_* allow") reads
    it. API_RATE_WS_TICKET's refusals, on the replica that answered them."""
    before = total(site.scrape(0), "parley_refusals_total", code="rate_limited", scope="http")
    url = f"{site.direct(0)}/api/v1/ws-ticket"
    answers = [
        httpx.post(url, headers=site.bearer(), timeout=30).status_code
        for _ in range(TICKETS_PER_HOUR + 2)
    ]
    assert answers == [201] * TICKETS_PER_HOUR + [429, 429], answers
    after = total(site.scrape(0), "parley_refusals_total", code="rate_limited", scope="http")
    assert after - before == 2


# --- docs/scaling.md: one host ---------------------------------------------------------------


def test_a_replica_listens_with_the_documented_backlog(site: Site) -> None:
    """ "Daphne listens with a backlog of DAPHNE_LISTEN_BACKLOG (4096, capped by
    net.core.somaxconn; Twisted's default is 50)": the kernel's own view of a real replica's
    listening socket (`ss`: Send-Q of a listener is its backlog)."""
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    port = site.topo.daphne_ports[0]
    listed = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert listed and listed[0] == "LISTEN", listed
    assert int(listed[2]) == min(4096, somaxconn), listed


def test_the_one_host_files_run_two_daphne_processes_per_core_as_scaling_md_says() -> None:
    """compose.yaml runs daphne-1 … daphne-4, each with 10 pool connections; nginx.conf names
    exactly those, never marked down (max_fails=0), with 16384 connections a worker and the
    descriptors for them; the image runs Python with PYTHONMALLOC=malloc; on Kubernetes the
    web pods request half a core each."""
    import yaml

    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    daphnes = sorted(name for name in compose["services"] if re.fullmatch(r"daphne-\d+", name))
    assert daphnes == ["daphne-1", "daphne-2", "daphne-3", "daphne-4"], daphnes
    for name in daphnes:
        pool = str(compose["services"][name]["environment"]["DATABASE_POOL_MAX_SIZE"])
        assert pool.endswith(":-10}") or pool == "10", (name, pool)
    nginx = (REPO / "nginx.conf").read_text()
    servers = re.findall(r"^\s*server (daphne-\d+):8000 ([^;]*);", nginx, re.MULTILINE)
    assert [s for s, _ in servers] == daphnes
    assert all(options == "max_fails=0" for _, options in servers), servers
    assert re.search(r"^\s*worker_connections 16384;", nginx, re.MULTILINE)
    assert re.search(r"^worker_rlimit_nofile 65535;", nginx, re.MULTILINE)
    nofile = compose["services"]["nginx"]["ulimits"]["nofile"]
    assert nofile == {"soft": 65535, "hard": 65535}, nofile
    assert re.search(r"PYTHONMALLOC=malloc", (REPO / "Dockerfile").read_text())
    web = list(yaml.safe_load_all((REPO / "deploy/k8s/web.yaml").read_text()))
    (deployment,) = [d for d in web if d and d["kind"] == "Deployment"]
    (daphne,) = deployment["spec"]["template"]["spec"]["containers"]
    assert daphne["resources"]["requests"]["cpu"] == "500m"


def test_the_queue_depth_is_read_from_the_broker_and_equal_on_every_replica(site: Site) -> None:
    """parley_celery_queue_depth: "tasks waiting in the broker (read at scrape time)" for
    METRICS_CELERY_QUEUES (default llm-remote,llm-local), "equal everywhere": with the worker
    stopped, a send's task waits, and both replicas count it; the worker back, it is run."""
    for queue in ("llm-remote", "llm-local"):
        assert ("parley_celery_queue_depth", frozenset({("queue", queue)})) in site.scrape(0)
    site.topo.kill("worker")
    try:
        with httpx.Client(base_url=site.topo.base, headers=site.bearer(), timeout=60) as http:
            chat = http.post("/api/v1/conversations", json={"title": "queued"}).json()["id"]
            sent = http.post(f"/api/v1/conversations/{chat}/messages", json={"text": "Hi"})
            assert sent.status_code == 201, sent.text
        depths = [
            total(site.scrape(i), "parley_celery_queue_depth", queue="llm-remote") for i in (0, 1)
        ]
        assert depths == [1, 1], depths
    finally:
        site.topo.restore()
    reply = sent.json()["reply"]
    deadline = time.monotonic() + 120
    while site.topo.row(reply)["status"] in ("pending", "streaming"):
        assert time.monotonic() < deadline, "the queued reply never ran"
        time.sleep(0.1)
    assert site.topo.row(reply)["status"] == "complete"
    assert total(site.scrape(1), "parley_celery_queue_depth", queue="llm-remote") == 0


@pytest.mark.timeout(420)
def test_with_parley_metrics_off_nothing_is_counted() -> None:
    """ "PARLEY_METRICS=off: nothing is counted (every metric is a no-op)": a real replica
    serving requests and a socket exposes no parley_ sample that counts them."""
    env = {"PARLEY_METRICS": "off", "METRICS_TOKEN": TOKEN}
    with production_topology(
        replicas=1, worker=False, nginx=False, env=env, name="acceptance-metrics-off"
    ) as topo:
        base = f"http://127.0.0.1:{topo.daphne_ports[0]}"
        assert httpx.get(f"{base}/api/v1/models", timeout=30).status_code == 401
        assert httpx.get(f"{base}/accounts/login/", timeout=30).status_code == 200
        samples = scrape_with(f"{base}/metrics", TOKEN)
        counted = {
            name
            for (name, _) in samples
            if name.startswith("parley_") and "queue_depth" not in name and "breaker" not in name
        }
        assert not counted, sorted(counted)[:10]


# --- traces across processes -----------------------------------------------------------------


@dataclass
class Collected:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent: str


class Collector:
    """An OTLP/HTTP receiver on loopback: what the processes export to /v1/traces."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        self.spans: list[Collected] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = trace_service_pb2.ExportTraceServiceRequest()
                request.ParseFromString(body)
                for resource in request.resource_spans:
                    service = next(
                        a.value.string_value
                        for a in resource.resource.attributes
                        if a.key == "service.name"
                    )
                    for scope in resource.scope_spans:
                        collector.spans += [
                            Collected(
                                service,
                                s.name,
                                s.trace_id.hex(),
                                s.span_id.hex(),
                                s.parent_span_id.hex(),
                            )
                            for s in scope.spans
                        ]
                answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.timeout(420)
async def test_one_message_is_one_trace_across_the_replica_and_the_worker() -> None:
    """docs/operations.md, Traces: with OTEL_EXPORTER_OTLP_ENDPOINT set "every process exports
    spans over OTLP/HTTP ... One message is one trace": ws.frame (Daphne) → chat.message_send
    → celery llm.tasks.generate_reply (worker) → reply.stream → llm.provider_call."""
    collector = Collector()
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # export every 0.2 s rather than 5 s
    }
    try:
        with production_topology(
            replicas=1, nginx=False, env=env, name="acceptance-traces"
        ) as topo:
            key = manage("shell", "-c", KEY, env=topo.env).strip().splitlines()[-1]
            url = topo.ws_url
            async with connect(url, additional_headers={"Authorization": f"Bearer {key}"}) as ws:
                await ws.send(
                    json.dumps(
                        {"type": "send", "conversation": None, "text": "Hi", "client_id": "t-1"}
                    )
                )
                heard = await hear_reply(ws, timeout=120)
            assert heard.final is not None and heard.final["type"] == "done", heard.frames
            deadline = time.monotonic() + 60
            while "llm.provider_call" not in {s.name for s in collector.spans}:
                assert time.monotonic() < deadline, [s.name for s in collector.spans]
                await asyncio.sleep(0.1)
    finally:
        collector.close()
    (frame,) = [s for s in collector.spans if s.name == "ws.frame"]
    trace = [s for s in collector.spans if s.trace_id == frame.trace_id]
    by_name = {s.name: s for s in trace}
    chain = [
        "ws.frame",
        "chat.message_send",
        "celery llm.tasks.generate_reply",
        "reply.stream",
        "llm.provider_call",
    ]
    assert set(chain) <= set(by_name), sorted(by_name)
    for parent, child in itertools.pairwise(chain):
        assert by_name[child].parent == by_name[parent].span_id, (parent, child)


@pytest.mark.timeout(420)
async def test_a_restarted_replica_counts_only_live_processes_sockets(tmp_path: Path) -> None:
    """docs/operations.md, Kubernetes: "at start each process drops the live-gauge files of
    processes that no longer run (a restarted container keeps its pod's directory)": a replica
    killed holding a socket, started again on the same PROMETHEUS_MULTIPROC_DIR, reports no
    socket; what the dead process counted (HTTP requests) is still summed."""
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "METRICS_TOKEN": TOKEN}
    with production_topology(
        replicas=1, worker=False, nginx=False, env=env, name="acceptance-multiproc"
    ) as topo:
        key = manage("shell", "-c", KEY, env=topo.env).strip().splitlines()[-1]
        site = Site(topo, key)
        assert (
            httpx.get(f"{site.direct(0)}/api/v1/models", headers=site.bearer()).status_code == 200
        )
        ws = await program_socket(site, 0)
        await until_gauge(site, 0, 1)
        requests = total(site.scrape(0), "parley_http_request_seconds_count")
        assert requests >= 1
        topo.kill("daphne-1")
        await ws.close()
        topo.start_replica("daphne-1")
        samples = site.scrape(0)
        assert total(samples, "parley_websocket_connections") == 0
        assert total(samples, "parley_http_request_seconds_count") >= requests
