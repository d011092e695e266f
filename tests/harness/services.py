"""The machine's PostgreSQL and Redis: a throwaway database for one run, a Redis database
index claimed for one run, and a check that a service is there at all."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

from tests.harness.processes import IN_CI

POSTGRES_ADMIN_URL = os.environ.get(
    "PARLEY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
POSTGRES_HOST, POSTGRES_PORT = "127.0.0.1", 5432
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
_REDIS_LOCK_KEY = "parley-e2e:lock"
_REDIS_MARKER_KEY = "parley-e2e:marker"


def require_service(name: str, host: str, port: int, timeout: float = 3.0) -> None:
    """A TCP service the test needs (PostgreSQL, Redis): missing fails in CI, skips elsewhere."""
    import pytest

    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as exc:
        message = f"{name} is not reachable on {host}:{port} ({exc})"
    if IN_CI:
        pytest.fail(f"{message}; .ci/run must start it")
    pytest.skip(message)


@contextmanager
def postgres_database(
    admin_url: str = POSTGRES_ADMIN_URL, prefix: str = "parley_e2e"
) -> Iterator[str]:
    """A fresh, empty PostgreSQL database; yields its URL and drops it (with its sessions) after."""
    import psycopg
    from psycopg import sql

    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextmanager
def redis_database(candidates: range = range(8, 16), ttl: int = 900) -> Iterator[int]:
    """Claim an empty Redis database index for one test run; flushed at claim and at release.

    Concurrent runs (several developers on one machine) each get their own index, so their
    channel-layer groups (conversation.1, …) and Celery queues never cross. A database holding
    someone else's keys is skipped; one left by a crashed run (marker, expired lock) is reused.
    """
    import redis

    token = secrets.token_hex(8)
    for index in candidates:
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=index, socket_timeout=5)
        if not client.set(_REDIS_LOCK_KEY, token, nx=True, ex=ttl):
            continue
        if cast(int, client.dbsize()) > 1 and not client.exists(_REDIS_MARKER_KEY):
            client.delete(_REDIS_LOCK_KEY)
            client.close()
            continue
        with client.pipeline(transaction=True) as pipe:
            pipe.flushdb()
            pipe.set(_REDIS_LOCK_KEY, token, ex=ttl)
            pipe.set(_REDIS_MARKER_KEY, "1")
            pipe.execute()
        try:
            yield index
        finally:
            if client.get(_REDIS_LOCK_KEY) == token.encode():
                client.flushdb()
            client.close()
        return
    raise RuntimeError(f"no free Redis database among {list(candidates)}")
