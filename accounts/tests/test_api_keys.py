"""API keys: shown once, stored as prefix + hash, revocable, expiring, scoped to an
organisation; and the ws-ticket endpoint they (or a session) buy tickets from."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import ApiKey, AuditLog, Membership
from accounts.services import api_key_create, api_key_revoke, api_key_use
from accounts.tickets import ws_ticket_redeem

pytestmark = pytest.mark.django_db

TICKET_URL = "/api/v1/ws-ticket"


def bearer(raw: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


@pytest.fixture
def key(owner, organisation):
    return api_key_create(user=owner, organisation=organisation, name="ci bot")


def test_the_secret_is_not_recoverable_from_the_database(key):
    prefix, secret = key.raw.split("_", 2)[1:]
    assert len(secret) >= 40  # 256 bits, url-safe base64
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM accounts_apikey")
        columns = [str(value) for row in cursor.fetchall() for value in row]
    assert not any(secret in value for value in columns)
    assert not any(key.raw in value for value in columns)
    stored = ApiKey.objects.get()
    assert stored.prefix == prefix and len(stored.secret_hash) == 64


def test_a_key_authenticates_as_its_user_in_its_organisation(key, owner, organisation):
    found = api_key_use(raw=key.raw)
    assert found is not None and found.user == owner and found.organisation == organisation
    assert found.last_used_at is not None


@pytest.mark.parametrize(
    "mangle",
    [
        lambda raw: raw[:-1] + ("A" if raw[-1] != "A" else "B"),  # wrong secret, right prefix
        lambda raw: raw.replace("pk_", "sk_"),
        lambda raw: "pk_" + raw.split("_", 2)[1],  # no secret
        lambda raw: "",
    ],
)
def test_a_wrong_key_is_refused(key, mangle):
    assert api_key_use(raw=mangle(key.raw)) is None


def test_revoked_and_expired_keys_are_refused(key, owner, organisation):
    assert api_key_revoke(key=key.key, by=owner)
    assert api_key_use(raw=key.raw) is None
    expired = api_key_create(
        user=owner,
        organisation=organisation,
        name="old",
        expires_at=timezone.now() - timedelta(seconds=1),
    )
    assert api_key_use(raw=expired.raw) is None


def test_a_key_stops_working_when_its_user_leaves_the_organisation(key, owner, organisation):
    Membership.objects.filter(user=owner, organisation=organisation).delete()
    assert api_key_use(raw=key.raw) is None


def test_outsider_cannot_make_a_key_for_someone_elses_organisation(outsider, organisation):
    with pytest.raises(PermissionError):
        api_key_create(user=outsider, organisation=organisation, name="sneaky")


# --- the keys page ----------------------------------------------------------------------


def test_the_keys_page_shows_a_new_key_once_then_only_its_prefix(client, owner):
    client.force_login(owner)
    response = client.post(reverse("accounts:keys"), {"name": "laptop"}, follow=True)
    page = response.content.decode()
    key = ApiKey.objects.get()
    assert key.organisation.personal_owner == owner  # the active organisation
    raw = page.split('id="new-key"')[1].split("<code>")[1].split("</code>")[0]
    assert raw.startswith(f"pk_{key.prefix}_") and api_key_use(raw=raw) is not None
    again = client.get(reverse("accounts:keys")).content.decode()
    assert raw not in again and f"pk_{key.prefix}_…" in again
    assert AuditLog.objects.filter(action="key_created", actor=owner).exists()


def test_revoking_from_the_page_works_for_your_key_only(client, owner, outsider, key):
    client.force_login(outsider)
    assert client.post(reverse("accounts:key_revoke", args=[key.key.pk])).status_code == 404
    assert api_key_use(raw=key.raw) is not None
    client.force_login(owner)
    client.post(reverse("accounts:key_revoke", args=[key.key.pk]))
    assert api_key_use(raw=key.raw) is None
    assert AuditLog.objects.filter(action="key_revoked", actor=owner).exists()


# --- POST /api/v1/ws-ticket ----------------------------------------------------------------


def test_a_key_buys_a_one_time_ticket_for_its_organisation(client, key, owner, organisation):
    response = client.post(TICKET_URL, **bearer(key.raw))
    assert response.status_code == 201
    body = response.json()
    assert body["expires_in"] == 30 and body["organisation"] == organisation.pk
    principal = ws_ticket_redeem(ticket=body["ticket"])
    assert principal is not None and principal.user == owner
    assert principal.organisation == organisation
    assert ws_ticket_redeem(ticket=body["ticket"]) is None  # one use only


@pytest.mark.parametrize("state", ["revoked", "expired", "garbage", "missing"])
def test_the_ticket_endpoint_refuses_bad_keys(client, key, owner, state):
    headers = bearer(key.raw)
    if state == "revoked":
        api_key_revoke(key=key.key, by=owner)
    elif state == "expired":
        ApiKey.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    elif state == "garbage":
        headers = bearer("pk_nope_nope")
    else:
        headers = {}
    response = client.post(TICKET_URL, **headers)
    assert response.status_code in (401, 403) and "ticket" not in response.content.decode()


def test_a_ticket_dies_with_the_key_that_bought_it(client, key, owner):
    ticket = client.post(TICKET_URL, **bearer(key.raw)).json()["ticket"]
    api_key_revoke(key=key.key, by=owner)
    assert ws_ticket_redeem(ticket=ticket) is None


def test_a_session_needs_csrf_for_a_ticket(owner):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    assert client.post(TICKET_URL).status_code == 403
    client.get(reverse("accounts:keys"))  # sets the CSRF cookie
    token = client.cookies["csrftoken"].value
    response = client.post(TICKET_URL, HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 201
    assert response.json()["organisation"] == owner.personal_organisation.pk


def test_the_ticket_endpoint_is_rate_limited_with_retry_after(client, key, settings):
    settings.API_RATE_WS_TICKET = "3/m"
    # Fixed one-minute windows: 7 tries span at most two, so one of them exceeds 3/m.
    statuses = [client.post(TICKET_URL, **bearer(key.raw)) for _ in range(7)]
    assert statuses[0].status_code == 201
    limited = [r for r in statuses if r.status_code == 429]
    assert limited and all(1 <= int(r["Retry-After"]) <= 60 for r in limited)


def test_the_ticket_endpoints_refusals_are_counted_as_http_refusals(client, key, settings):
    """docs/operations.md: parley_refusals_total, scope `http` for view limits (the
    ParleyRateLimiting alert names API_RATE_*)."""
    from prometheus_client import REGISTRY

    def refused() -> float:
        labels = {"code": "rate_limited", "scope": "http"}
        return REGISTRY.get_sample_value("parley_refusals_total", labels) or 0.0

    settings.API_RATE_WS_TICKET = "1/h"
    before = refused()
    statuses = [client.post(TICKET_URL, **bearer(key.raw)).status_code for _ in range(3)]
    assert statuses == [201, 429, 429]
    assert refused() - before == 2


def test_an_expired_ticket_is_refused(client, key, settings):
    settings.WS_TICKET_TTL_SECONDS = 1
    ticket = client.post(TICKET_URL, **bearer(key.raw)).json()["ticket"]
    import time

    time.sleep(1.2)
    assert ws_ticket_redeem(ticket=ticket) is None
