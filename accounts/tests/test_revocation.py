"""Access that ends closes the sockets that hold it (accounts/revocation.py), through the full
ASGI app. Across replicas (Redis): tests/integration/test_hostile.py."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.utils import timezone

from accounts.invitations import membership_leave
from accounts.models import ApiKey, Membership
from accounts.revocation import CREDENTIAL_ENDED, MEMBERSHIP_ENDED
from accounts.services import api_key_create, api_key_revoke
from chat.models import Message
from project.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

HOST = (b"host", b"127.0.0.1:8000")
ORIGIN = (b"origin", b"http://127.0.0.1:8000")


async def signed_in(user) -> tuple[Client, WebsocketCommunicator]:
    client = Client()
    await sync_to_async(client.force_login)(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    ws = WebsocketCommunicator(
        application, "/ws/chat/", headers=[(b"cookie", cookie), HOST, ORIGIN]
    )
    connected, _ = await ws.connect()
    assert connected
    return client, ws


async def with_key(raw: str) -> WebsocketCommunicator:
    ws = WebsocketCommunicator(
        application, "/ws/chat/", headers=[(b"authorization", f"Bearer {raw}".encode()), HOST]
    )
    connected, _ = await ws.connect()
    assert connected
    return ws


async def closed_with(ws: WebsocketCommunicator) -> int:
    message = await ws.receive_output(timeout=5)
    assert message["type"] == "websocket.close", message
    return int(message["code"])


async def still_open(ws: WebsocketCommunicator) -> None:
    await ws.send_json_to({"type": "ping"})
    assert await ws.receive_json_from(timeout=5) == {"type": "pong"}


async def test_revoking_a_key_closes_its_sockets_and_no_other(owner, organisation):
    key = await sync_to_async(api_key_create)(user=owner, organisation=organisation, name="a")
    other = await sync_to_async(api_key_create)(user=owner, organisation=organisation, name="b")
    ws, ws_other = await with_key(key.raw), await with_key(other.raw)
    await sync_to_async(api_key_revoke)(key=key.key, by=owner)
    assert await closed_with(ws) == CREDENTIAL_ENDED
    await still_open(ws_other)
    await ws_other.disconnect()


async def test_a_socket_on_a_ticket_bought_with_a_key_closes_with_the_key(owner, organisation):
    key = await sync_to_async(api_key_create)(user=owner, organisation=organisation, name="t")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {key.raw}")
    ticket = (await sync_to_async(client.post)("/api/v1/ws-ticket")).json()["ticket"]
    ws = WebsocketCommunicator(application, f"/ws/chat/?ticket={ticket}", headers=[HOST])
    assert (await ws.connect())[0]
    await sync_to_async(api_key_revoke)(key=key.key, by=owner)
    assert await closed_with(ws) == CREDENTIAL_ENDED


async def test_removing_a_membership_closes_the_members_sockets(member, organisation, owner):
    _, browser = await signed_in(member)
    key = await sync_to_async(api_key_create)(user=member, organisation=organisation, name="m")
    program = await with_key(key.raw)
    _, owners = await signed_in(owner)
    await Membership.objects.filter(user=member, organisation=organisation).adelete()
    assert await closed_with(browser) == MEMBERSHIP_ENDED
    assert await closed_with(program) == MEMBERSHIP_ENDED
    await still_open(owners)
    await owners.disconnect()


async def test_signing_out_closes_that_sessions_sockets_only(owner):
    client, ws = await signed_in(owner)
    _, other_session = await signed_in(owner)
    response = await sync_to_async(client.post)("/accounts/logout/")
    assert response.status_code == 302
    assert await closed_with(ws) == CREDENTIAL_ENDED
    await still_open(other_session)
    await other_session.disconnect()


async def test_deactivating_a_user_closes_their_sockets(owner):
    _, ws = await signed_in(owner)
    owner.is_active = False
    await owner.asave()
    assert await closed_with(ws) == CREDENTIAL_ENDED


async def test_a_send_after_a_missed_revocation_closes_the_socket(owner, organisation, settings):
    """The backstop: a key revoked without the event reaching the socket (here: a plain
    update, as if Redis had been down) is caught by the re-check before the next send."""
    settings.ACCESS_RECHECK_INTERVAL = 0
    key = await sync_to_async(api_key_create)(user=owner, organisation=organisation, name="x")
    ws = await with_key(key.raw)
    await ApiKey.objects.filter(pk=key.key.pk).aupdate(revoked_at=timezone.now())
    await still_open(ws)  # nothing told it yet
    await ws.send_json_to({"type": "send", "conversation": None, "text": "hi", "client_id": "c"})
    assert await closed_with(ws) == CREDENTIAL_ENDED
    assert not await Message.objects.aexists()


async def test_leaving_an_organisation_closes_the_members_sockets(member, organisation):
    _, ws = await signed_in(member)
    await sync_to_async(membership_leave)(user=member, organisation=organisation)
    assert await closed_with(ws) == MEMBERSHIP_ENDED
