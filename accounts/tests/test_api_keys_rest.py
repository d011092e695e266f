"""API keys through the REST API: a signed-in person (session + CSRF) makes and revokes their
keys; a key cannot make keys, and can revoke only itself; an outsider cannot touch them."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from accounts.models import ApiKey, AuditLog
from accounts.services import api_key_create

pytestmark = pytest.mark.django_db

KEYS = "/api/v1/keys"


def signed_in(user) -> tuple[Client, str]:
    """A browser session with CSRF enforced, and its CSRF token."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    client.get(reverse("accounts:keys"))
    return client, client.cookies["csrftoken"].value


def test_a_signed_in_person_makes_a_key_that_works_and_revokes_it(owner):
    client, token = signed_in(owner)
    made = client.post(
        KEYS,
        {"name": "ci", "expires_in_days": 30},
        content_type="application/json",
        HTTP_X_CSRFTOKEN=token,
    )
    assert made.status_code == 201, made.content
    body = made.json()
    assert body["key"].startswith(f"pk_{body['prefix']}_") and body["active"]
    assert body["expires_at"] is not None and body["organisation"] == owner.personal_organisation.pk
    program = Client(HTTP_AUTHORIZATION=f"Bearer {body['key']}")
    assert program.get("/api/v1/conversations").status_code == 200
    listed = client.get(KEYS).json()
    assert [k["id"] for k in listed] == [body["id"]] and "key" not in listed[0]
    revoked = client.delete(f"{KEYS}/{body['id']}", HTTP_X_CSRFTOKEN=token)
    assert revoked.status_code == 204
    assert program.get("/api/v1/conversations").status_code == 401
    assert AuditLog.objects.filter(action=AuditLog.Action.KEY_REVOKED).exists()


def test_a_session_write_needs_csrf(owner):
    client, _token = signed_in(owner)
    refused = client.post(KEYS, {"name": "no csrf"}, content_type="application/json")
    assert refused.status_code == 403
    assert not ApiKey.objects.exists()


def test_an_api_key_cannot_make_keys(owner):
    key = api_key_create(user=owner, organisation=owner.personal_organisation, name="program")
    program = Client(HTTP_AUTHORIZATION=f"Bearer {key.raw}")
    refused = program.post(KEYS, {"name": "more"}, content_type="application/json")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "permission_denied"
    assert ApiKey.objects.count() == 1
    # It lists its user's keys in its own organisation only.
    assert [k["id"] for k in program.get(KEYS).json()] == [key.key.pk]


def test_a_key_revokes_only_itself(owner):
    one = api_key_create(user=owner, organisation=owner.personal_organisation, name="one")
    two = api_key_create(user=owner, organisation=owner.personal_organisation, name="two")
    program = Client(HTTP_AUTHORIZATION=f"Bearer {one.raw}")
    assert program.delete(f"{KEYS}/{two.key.pk}").status_code == 403
    assert program.delete(f"{KEYS}/{one.key.pk}").status_code == 204
    two.key.refresh_from_db()
    assert two.key.is_active and program.get(KEYS).status_code == 401


def test_an_outsider_cannot_see_or_revoke_anothers_key(owner, outsider):
    key = api_key_create(user=owner, organisation=owner.personal_organisation, name="mine")
    client, token = signed_in(outsider)
    assert client.delete(f"{KEYS}/{key.key.pk}", HTTP_X_CSRFTOKEN=token).status_code == 404
    assert client.get(KEYS).json() == []
    theirs = api_key_create(
        user=outsider, organisation=outsider.personal_organisation, name="theirs"
    )
    program = Client(HTTP_AUTHORIZATION=f"Bearer {theirs.raw}")
    assert program.delete(f"{KEYS}/{key.key.pk}").status_code == 404
    key.key.refresh_from_db()
    assert key.key.is_active


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "scopes": ["all"]}, "scopes"),
        ({"name": 5}, "name"),
        ({}, "name"),
        ({"name": "x", "expires_in_days": 0}, "expires_in_days"),
    ],
)
def test_a_bad_key_request_is_a_400_naming_the_field(owner, body, field):
    client, token = signed_in(owner)
    refused = client.post(KEYS, body, content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert refused.status_code == 400 and field in refused.json()["error"]["fields"]
    assert not ApiKey.objects.exists()
