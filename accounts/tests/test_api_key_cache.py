"""The per-process API key cache (accounts/services.py api_key_use): a key used again is
answered without the database, and whatever ends or changes its access is seen at once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import ApiKey, Membership
from accounts.services import _key_cache, api_key_create, api_key_revoke, api_key_use

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def cache_on(settings) -> Iterator[None]:
    settings.API_KEY_CACHE_SECONDS = 300.0
    _key_cache.clear()
    yield
    _key_cache.clear()


@pytest.fixture
def key(owner, organisation):
    return api_key_create(user=owner, organisation=organisation, name="ci bot")


def cached(raw: str) -> None:
    """Use the key until the cache holds it (the third use is the first from the cache)."""
    for _ in range(2):
        assert api_key_use(raw=raw) is not None


def test_a_key_used_again_is_answered_without_the_database(
    key, owner, organisation, django_assert_num_queries
):
    cached(key.raw)
    with django_assert_num_queries(0):
        found = api_key_use(raw=key.raw)
    assert found is not None and found.pk == key.key.pk
    assert found.user == owner and found.organisation == organisation


def test_each_use_gets_its_own_copy_of_the_key(key):
    cached(key.raw)
    first, second = api_key_use(raw=key.raw), api_key_use(raw=key.raw)
    assert first is not None and second is not None and first is not second


def test_a_wrong_secret_with_a_cached_keys_prefix_is_refused(key):
    cached(key.raw)
    assert api_key_use(raw=key.raw[:-1] + ("A" if key.raw[-1] != "A" else "B")) is None


def test_a_revoked_key_is_refused_at_once_after_the_cache_holds_it(
    key, owner, django_capture_on_commit_callbacks
):
    cached(key.raw)
    with django_capture_on_commit_callbacks(execute=True):
        assert api_key_revoke(key=key.key, by=owner)
    assert api_key_use(raw=key.raw) is None


def test_a_deleted_key_is_refused_at_once(key, django_capture_on_commit_callbacks):
    cached(key.raw)
    with django_capture_on_commit_callbacks(execute=True):
        ApiKey.objects.filter(pk=key.key.pk).delete()
    assert api_key_use(raw=key.raw) is None


def test_a_key_given_an_earlier_expiry_is_refused_once_it_passes(
    key, monkeypatch, django_capture_on_commit_callbacks
):
    cached(key.raw)
    with django_capture_on_commit_callbacks(execute=True):
        stored = ApiKey.objects.get(pk=key.key.pk)
        stored.expires_at = timezone.now() + timedelta(minutes=1)
        stored.save()
    later = timezone.now() + timedelta(minutes=2)
    monkeypatch.setattr(timezone, "now", lambda: later)
    assert api_key_use(raw=key.raw) is None


def test_a_cached_key_is_refused_when_it_expires(owner, organisation, monkeypatch):
    made = api_key_create(
        user=owner,
        organisation=organisation,
        name="short",
        expires_at=timezone.now() + timedelta(minutes=1),
    )
    cached(made.raw)
    later = timezone.now() + timedelta(minutes=2)
    monkeypatch.setattr(timezone, "now", lambda: later)
    assert api_key_use(raw=made.raw) is None


def test_a_deactivated_user_is_refused_at_once(key, owner, django_capture_on_commit_callbacks):
    cached(key.raw)
    with django_capture_on_commit_callbacks(execute=True):
        owner.is_active = False
        owner.save()
    assert api_key_use(raw=key.raw) is None


def test_a_user_removed_from_the_organisation_is_refused_at_once(
    key, owner, organisation, django_capture_on_commit_callbacks
):
    cached(key.raw)
    with django_capture_on_commit_callbacks(execute=True):
        Membership.objects.filter(user=owner, organisation=organisation).delete()
    assert api_key_use(raw=key.raw) is None


def test_a_look_up_after_a_change_is_kept_under_the_new_marks(
    key, owner, django_capture_on_commit_callbacks, django_assert_num_queries
):
    """A look-up after the marks changed is kept under the new marks, not answered from the
    entry kept before."""
    cached(key.raw)
    with django_capture_on_commit_callbacks(execute=True):
        owner.first_name = "Olivia"
        owner.save()
    found = api_key_use(raw=key.raw)  # marks changed: from the database
    assert found is not None and found.user.first_name == "Olivia"
    with django_assert_num_queries(0):
        assert api_key_use(raw=key.raw) is not None


def test_without_the_shared_cache_every_use_asks_the_database(
    key, settings, django_assert_num_queries
):
    settings.API_KEY_CACHE_SECONDS = 0.0
    cached(key.raw)
    with django_assert_num_queries(1):
        assert api_key_use(raw=key.raw) is not None


def test_an_unanswering_shared_cache_means_the_database(
    key, monkeypatch, django_assert_num_queries
):
    cached(key.raw)

    def down(*args: object, **kwargs: object) -> None:
        raise ConnectionError("cache down")

    from accounts import revocation

    monkeypatch.setattr(revocation.handshake_cache(), "get_many", down)
    with django_assert_num_queries(1):
        assert api_key_use(raw=key.raw) is not None
