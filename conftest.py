"""Shared fixtures: three users (owner, member, outsider) and a running-generation helper."""

from __future__ import annotations

import asyncio

import pytest
from django.test import override_settings

from accounts.models import User


@pytest.fixture(autouse=True)
def _embedded_defaults(settings):
    """Unit tests run embedded, with a fast simulated provider, unless they say otherwise."""
    settings.LLM_DEFAULT_PROVIDER = "simulated"
    settings.SIMULATED_FIRST_TOKEN_DELAY = 0.0
    settings.SIMULATED_TOKENS_PER_SECOND = 2000.0
    settings.GENERATION_BACKEND = "inprocess"
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    settings.RATELIMIT_ENABLE = True
    from django.core.cache import cache

    cache.clear()
    yield


@pytest.fixture
def owner(db) -> User:
    return User.objects.create_user(username="olivia", password="correct horse battery")


@pytest.fixture
def member(db) -> User:
    return User.objects.create_user(username="marek", password="correct horse battery")


@pytest.fixture
def outsider(db) -> User:
    return User.objects.create_user(username="oscar", password="correct horse battery")


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
