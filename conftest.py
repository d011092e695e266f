"""Shared fixtures: the test database, three users (owner, member, outsider) and a
running-generation helper."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import override_settings

from accounts.models import Membership, Organisation, User
from accounts.services import account_create, membership_set, organisation_create


@pytest.fixture(scope="session")
def django_db_modify_db_settings(
    django_db_modify_db_settings_parallel_suffix: None,
) -> Iterator[None]:
    """On SQLite, tests use a database file (one per test process), not Django's shared-cache
    in-memory database: there, a read and a generator's write from two threads fail at once
    with "database table is locked" (no busy timeout), which made tests that stream over HTTP
    while a reply is generated flaky. A file gets WAL and the busy timeout, as embedded mode
    has (project/settings.py)."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"] != "django.db.backends.sqlite3":
        yield
        return
    path = Path(tempfile.gettempdir()) / f"parley-test-{os.getpid()}.sqlite3"
    database.setdefault("TEST", {})["NAME"] = str(path)
    yield
    # Django removes the test database file; SQLite's WAL files outlive it when threads still
    # held connections. Only this process's own files, if it made any.
    for suffix in ("-wal", "-shm"):
        leftover = Path(f"{path}{suffix}")
        if leftover.exists() and not path.exists():
            leftover.unlink()


@pytest.fixture(autouse=True)
def _embedded_defaults(settings):
    """Unit tests run embedded, with a fast simulated provider, unless they say otherwise."""
    settings.LLM_DEFAULT_PROVIDER = "simulated"
    settings.SIMULATED_FIRST_TOKEN_DELAY = 0.0
    settings.SIMULATED_TOKENS_PER_SECOND = 2000.0
    settings.GENERATION_BACKEND = "inprocess"
    settings.REAP_IN_SERVER = False  # no reaper thread behind a test's back (test_reaper.py)
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    settings.RATELIMIT_ENABLE = True
    settings.REDIS_URL = ""  # rate limits count in the (locmem) cache
    # Fixtures hash several passwords per test; the production hasher is slow by design.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    from django.core.cache import cache

    cache.clear()
    yield


@pytest.fixture
def owner(db) -> User:
    """Has a personal organisation, as sign-up gives everyone."""
    return account_create(username="olivia", password="correct horse battery")


@pytest.fixture
def organisation(owner) -> Organisation:
    """A team organisation the owner administers (the member joins it)."""
    return organisation_create(name="Acme", admin=owner)


@pytest.fixture
def member(db, owner, organisation) -> User:
    """Has a personal organisation, and is a plain member of the owner's team `organisation`."""
    user = account_create(username="marek", password="correct horse battery")
    membership_set(organisation=organisation, user=user, role=Membership.Role.MEMBER, by=owner)
    return user


@pytest.fixture
def outsider(db) -> User:
    """In no organisation of the owner's: every permission test uses them."""
    return account_create(username="oscar", password="correct horse battery")


@pytest.fixture
def other_organisation(outsider) -> Organisation:
    return Organisation.objects.get(personal_owner=outsider)


@pytest.fixture
def no_dispatch(monkeypatch) -> list[int]:
    """Replies are saved but never generated, for tests about the rows a send writes: the
    ids of the replies that would have been dispatched are recorded instead."""
    dispatched: list[int] = []
    monkeypatch.setattr(
        "chat.replies.dispatch.dispatch_generation",
        lambda message_id, provider: dispatched.append(message_id),
    )
    return dispatched


async def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02):  # noqa: ASYNC109
    """Poll an async predicate until it is truthy; fail with a clear message at the deadline."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


__all__ = ["override_settings", "wait_for"]
