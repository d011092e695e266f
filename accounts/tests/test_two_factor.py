"""Optional TOTP two-factor that an organisation admin can require."""

from __future__ import annotations

import time

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.urls import reverse
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import AuditLog
from project.asgi import application


def code(device: TOTPDevice, offset_steps: int = 0) -> str:
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = time.time() + offset_steps * device.step
    return str(totp.token()).zfill(device.digits)


def sign_in(client: Client, username: str) -> None:
    response = client.post(
        reverse("accounts:login"), {"username": username, "password": "correct horse battery"}
    )
    assert response.status_code == 302


@pytest.fixture
def requiring(organisation):
    organisation.require_2fa = True
    organisation.save()
    return organisation


@pytest.mark.django_db
def test_a_user_turns_two_factor_on_with_a_first_code(client, owner):
    client.force_login(owner)
    page = client.get(reverse("accounts:two_factor")).content.decode()
    assert "otpauth://totp/" in page and "issuer=Parley" in page
    device = TOTPDevice.objects.get(user=owner, confirmed=False)
    response = client.post(reverse("accounts:two_factor"), {"token": code(device)})
    assert response.status_code == 302
    assert TOTPDevice.objects.get(user=owner).confirmed
    assert client.get(reverse("chat:home")).status_code == 200  # this session is verified
    assert AuditLog.objects.filter(action="2fa_enabled", actor=owner).exists()


@pytest.mark.django_db
def test_a_wrong_code_does_not_turn_it_on(client, owner):
    client.force_login(owner)
    client.get(reverse("accounts:two_factor"))
    device = TOTPDevice.objects.get(user=owner)
    wrong = str((int(code(device)) + 1) % 1_000_000).zfill(6)
    response = client.post(reverse("accounts:two_factor"), {"token": wrong})
    assert response.status_code == 200 and b"not right" in response.content
    assert not TOTPDevice.objects.get(user=owner).confirmed


@pytest.mark.django_db
def test_with_two_factor_on_a_new_sign_in_must_enter_a_code(client, owner):
    device = TOTPDevice.objects.create(user=owner, name="app", confirmed=True)
    sign_in(client, "olivia")
    response = client.get(reverse("chat:home"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("accounts:two_factor"))
    assert client.post(reverse("chat:new")).status_code == 403
    response = client.post(
        reverse("accounts:two_factor"), {"token": code(device), "next": reverse("chat:home")}
    )
    assert response["Location"] == reverse("chat:home")
    assert client.get(reverse("chat:home")).status_code == 200


@pytest.mark.django_db
def test_an_organisation_requiring_it_sends_members_to_set_it_up(client, member, requiring):
    sign_in(client, "marek")
    for name in ("chat:home", "accounts:keys"):
        response = client.get(reverse(name))
        assert response.status_code == 302 and "/accounts/2fa/" in response["Location"]
    page = client.get(reverse("accounts:two_factor")).content.decode()
    assert "requires two-factor" in page
    device = TOTPDevice.objects.get(user=member)
    client.post(reverse("accounts:two_factor"), {"token": code(device)})
    assert client.get(reverse("chat:home")).status_code == 200


@pytest.mark.django_db
def test_a_required_two_factor_cannot_be_turned_off(client, member, requiring):
    device = TOTPDevice.objects.create(user=member, name="app", confirmed=True)
    sign_in(client, "marek")
    client.post(reverse("accounts:two_factor"), {"token": code(device)})
    client.post(reverse("accounts:two_factor_disable"))
    assert TOTPDevice.objects.filter(user=member, confirmed=True).exists()


@pytest.mark.django_db
def test_an_unverified_session_gets_no_websocket_ticket(member, requiring):
    client = Client()
    client.force_login(member)
    assert client.post("/api/v1/ws-ticket").status_code == 403


@pytest.mark.django_db
def test_the_rest_api_refuses_an_unverified_session_in_its_error_shape(member, requiring):
    """docs/api.md: every REST error has one shape; a GET is refused too, not redirected to
    the 2FA page (a program cannot follow that)."""
    client = Client()
    client.force_login(member)
    for refused in (client.post("/api/v1/ws-ticket"), client.get("/api/v1/conversations")):
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "permission_denied"


@pytest.mark.django_db(transaction=True)
async def test_an_unverified_session_gets_no_socket_until_verified(member, requiring):
    device = await TOTPDevice.objects.acreate(user=member, name="app", confirmed=True)
    client = Client()
    await sync_to_async(sign_in)(client, "marek")
    headers = [
        (b"host", b"127.0.0.1:8000"),
        (b"origin", b"http://127.0.0.1:8000"),
        (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()),
    ]
    refused = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
    assert not (await refused.connect())[0]
    await sync_to_async(client.post)(reverse("accounts:two_factor"), {"token": code(device)})
    accepted = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
    assert (await accepted.connect())[0]
    await accepted.disconnect()
