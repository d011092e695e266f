"""nginx's own errors, as docs/api.md promises them: the repository's nginx.conf run by Debian's
nginx in front of real upstreams on loopback (tests/deploy/upstream.py), a dead one (nothing
listening) and one that cannot be reached in time (its listen queue full).

On /v1/ a client gets OpenAI's error shape, on /api/ Parley's REST shape, anywhere else a small
HTML page; every one carries `x-request-id` (the client's own when sane, which the replica
gets too), a 502 `Retry-After`; what a replica answers itself passes through untouched.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from core.errors import error_code
from tests.harness.nginx import nginx_conf, start_nginx
from tests.harness.processes import (
    PYTHON,
    REPO,
    ProcessGroup,
    base_env,
    require_binary,
    wait_until_answers,
)

pytestmark = pytest.mark.integration

# This file's ports (the session's range 18400-18499).
LIVE, DEAD, FULL, UPSTREAM, UNREACHABLE, DEAD_UPSTREAM = range(18410, 18416)
OPENAI_KEYS = {"message", "type", "param", "code"}
OVER_ONE_MIB = b"x" * (1024 * 1024 + 10)


@dataclass
class Sites:
    live: str  # nginx in front of a replica that answers (tests/deploy/upstream.py)
    dead: str  # nginx in front of a port nothing listens on
    full: str  # nginx in front of a listener whose queue is full (a connect times out)
    group: ProcessGroup


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sites]:
    binary = require_binary("nginx")
    workdir = tmp_path_factory.mktemp("nginx-errors")
    group = ProcessGroup(log_dir=workdir)
    # A listener that never accepts, its queue (one connection: backlog 0) filled: the kernel
    # drops nginx's SYNs, so nginx's connect runs into proxy_connect_timeout (5 s): a 504.
    unreachable = socket.socket()
    unreachable.bind(("127.0.0.1", UNREACHABLE))
    unreachable.listen(0)
    fillers = [socket.socket() for _ in range(2)]
    for filler in fillers:
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", UNREACHABLE))
    try:
        replica = group.start(
            "upstream", [PYTHON, "-m", "tests.deploy.upstream", str(UPSTREAM)], base_env()
        )
        wait_until_answers(f"http://127.0.0.1:{UPSTREAM}/", proc=replica)
        for name, listen, upstream in (
            ("live", LIVE, UPSTREAM),
            ("dead", DEAD, DEAD_UPSTREAM),
            ("full", FULL, UNREACHABLE),
        ):
            prefix = workdir / name
            prefix.mkdir()
            conf = prefix / "nginx.conf"
            conf.write_text(
                nginx_conf(
                    (REPO / "nginx.conf").read_text(),
                    upstream_ports=[upstream],
                    listen_port=listen,
                    static_root=workdir,
                    prefix=prefix,
                )
            )
            start_nginx(group, f"nginx-{name}", binary, conf, prefix, listen)
        live, dead, full = (f"http://127.0.0.1:{port}" for port in (LIVE, DEAD, FULL))
        yield Sites(live, dead, full, group)
    finally:
        group.stop_all()
        for sock in (unreachable, *fillers):
            sock.close()


def assert_openai_error(answer: httpx.Response, status: int, code: str | None) -> dict:
    assert answer.status_code == status, answer.text[:300]
    assert answer.headers["content-type"] == "application/json"
    error = answer.json()["error"]
    assert set(error) == OPENAI_KEYS and error["message"] and error["code"] == code, error
    if code is not None:
        vocabulary = error_code(code)
        assert (vocabulary.openai_status, vocabulary.openai_type) == (status, error["type"])
    return error


def assert_api_error(answer: httpx.Response, status: int, code: str) -> dict:
    assert answer.status_code == status, answer.text[:300]
    assert answer.headers["content-type"] == "application/json"
    error = answer.json()["error"]
    assert error["code"] == code and error["detail"], error
    return error


def assert_page(answer: httpx.Response, status: int) -> None:
    assert answer.status_code == status, answer.text[:300]
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    assert f"HTTP {status}." in answer.text and "Parley" in answer.text
    assert answer.headers["x-request-id"] in answer.text  # a person can quote it


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/v1/conversations", "/"])
def test_no_replica_answering_is_a_502_in_the_shape_of_the_path(sites: Sites, path: str) -> None:
    for base in (sites.dead, sites.live):  # refused; a replica dying with the request
        where = path if base == sites.dead else f"{path.rstrip('/')}/die"
        answer = httpx.post(f"{base}{where}", json={}, headers={"X-Request-ID": "mine.1"})
        assert answer.headers["x-request-id"] == "mine.1", base
        assert answer.headers["retry-after"] == "5", base
        if path.startswith("/v1/"):
            assert_openai_error(answer, 502, "bad_gateway")
        elif path.startswith("/api/"):
            error = assert_api_error(answer, 502, "bad_gateway")
            assert error["retry_after"] == 5
            assert error_code("bad_gateway").http_status == 502
        else:
            assert_page(answer, 502)


@pytest.mark.parametrize("path", ["/v1/models", "/api/v1/conversations", "/"])
def test_a_replica_out_of_reach_is_a_504_in_the_shape_of_the_path(sites: Sites, path: str) -> None:
    answer = httpx.get(f"{sites.full}{path}", timeout=60)
    assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["x-request-id"])
    assert "retry-after" not in answer.headers
    if path.startswith("/v1/"):
        assert_openai_error(answer, 504, "gateway_timeout")
    elif path.startswith("/api/"):
        assert_api_error(answer, 504, "gateway_timeout")
        assert error_code("gateway_timeout").http_status == 504
    else:
        assert_page(answer, 504)


@pytest.mark.parametrize(
    ("path", "size", "shape"),
    [
        ("/v1/chat/completions", len(OVER_ONE_MIB), "openai"),
        ("/api/v1/conversations", len(OVER_ONE_MIB), "too_large"),
        ("/accounts/login/", len(OVER_ONE_MIB), "page"),
        ("/api/v1/documents", 12_000_000, "document_too_large"),
        ("/admin/chat/document/add/", 12_000_000, "page"),
    ],
)
def test_a_body_past_nginxs_limit_is_a_413_in_the_shape_of_the_path(
    sites: Sites, path: str, size: int, shape: str
) -> None:
    answer = httpx.post(
        f"{sites.live}{path}", content=b"x" * size, headers={"X-Request-ID": "big:1"}
    )
    assert answer.headers["x-request-id"] == "big:1"
    if shape == "openai":
        error = assert_openai_error(answer, 413, None)
        assert error["type"] == "invalid_request_error"
    elif shape == "page":
        assert_page(answer, 413)
    else:
        assert_api_error(answer, 413, shape)


def test_a_header_past_nginxs_limit_is_a_400_in_the_shape_of_the_path(sites: Sites) -> None:
    header = {"X-Padding": "a" * 9000}
    error = assert_openai_error(httpx.get(f"{sites.live}/v1/models", headers=header), 400, None)
    assert error["type"] == "invalid_request_error"
    refused = httpx.get(f"{sites.live}/api/v1/conversations", headers=header)
    assert_api_error(refused, 400, "invalid")
    assert_page(httpx.get(f"{sites.live}/", headers=header), 400)
    # A request line past it comes before nginx knows the path: the page, on every path.
    assert_page(httpx.get(f"{sites.live}/v1/models?q={'a' * 9000}"), 414)


@pytest.mark.parametrize("path", ["/v1/models", "/api/v1/conversations", "/"])
def test_the_replica_gets_the_request_id_the_client_gets(sites: Sites, path: str) -> None:
    for offered in ("client.id:7", "not a token!", None):
        headers = {"X-Request-ID": offered} if offered else {}
        answer = httpx.get(f"{sites.live}{path}", headers=headers)
        assert answer.status_code == 200, answer.text[:300]
        given = answer.json()["request_id"]
        assert answer.headers["x-request-id"] == given, offered
        if offered == "client.id:7":
            assert given == offered
        else:
            assert re.fullmatch(r"[0-9a-f]{32}", given), given


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/v1/conversations"])
def test_a_replicas_own_error_passes_through_untouched(sites: Sites, path: str) -> None:
    answer = httpx.post(f"{sites.live}{path}/upstream-502", json={})
    assert answer.status_code == 502
    assert answer.json()["error"]["code"] == "provider_failed"
    assert answer.headers["x-request-id"] == "from-the-replica"
    assert "retry-after" not in answer.headers


def test_nginx_logs_the_request_id(sites: Sites) -> None:
    httpx.get(f"{sites.dead}/v1/models", headers={"X-Request-ID": "logged.1"})
    sites.group.wait_for_log("nginx-dead", "rid=logged.1")


def test_every_body_nginx_writes_is_json_in_its_shape() -> None:
    """The $error_body map of nginx.conf: each body parses, in its path's shape, with a code of
    the vocabulary (core/errors.py) whose status is the one it is answered with."""
    text = (REPO / "nginx.conf").read_text()
    entries = re.findall(r'^\s*"/_errors/(\w+)(/upload)? (\d{3})"\s+\'(.*)\';$', text, flags=re.M)
    assert len(entries) >= 10
    for shape, _, status, body in entries:
        error = json.loads(body)["error"]
        if shape == "openai":
            assert set(error) == OPENAI_KEYS, body
            if error["code"] is not None:
                entry = error_code(error["code"])
                assert (entry.openai_status, entry.openai_type) == (int(status), error["type"])
        else:
            assert shape == "api" and {"code", "detail"} <= set(error), body
            if error["code"] != "too_large":  # the REST API's own word, not the vocabulary's
                assert error_code(error["code"]).http_status == int(status), body
