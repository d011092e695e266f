"""WebSocket authentication through the full ASGI app: programs by one-time ticket or bearer
key (no Origin needed), browsers by session cookie (allowed Origin required)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.core.cache import cache
from django.db.backends.utils import CursorWrapper
from django.test import Client
from django.utils import timezone

from accounts import revocation, ws_auth
from accounts.models import ApiKey, Membership, Organisation
from accounts.selectors import ACTIVE_ORGANISATION_SESSION_KEY
from accounts.services import api_key_create, api_key_revoke
from accounts.tickets import ws_ticket_issue
from chat import services
from chat.models import Conversation
from project.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

HOST = (b"host", b"127.0.0.1:8000")
ORIGIN = (b"origin", b"http://127.0.0.1:8000")


async def handshake(path: str = "/ws/chat/", headers=()) -> tuple[bool, WebsocketCommunicator]:
    communicator = WebsocketCommunicator(application, path, headers=[HOST, *headers])
    connected, _ = await communicator.connect()
    return connected, communicator


async def session_cookie(user) -> tuple[bytes, bytes]:
    client = Client()
    await sync_to_async(client.force_login)(user)
    return (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())


@pytest.fixture
def key(owner, organisation):
    return api_key_create(user=owner, organisation=organisation, name="bot")


async def test_a_ticket_opens_a_socket_without_origin_once(owner, organisation):
    ticket = await sync_to_async(ws_ticket_issue)(
        user=owner, organisation=organisation, api_key=None
    )
    connected, ws = await handshake(f"/ws/chat/?ticket={ticket}")
    assert connected
    await ws.send_json_to({"type": "ping"})
    assert await ws.receive_json_from() == {"type": "pong"}
    await ws.disconnect()
    again, _ = await handshake(f"/ws/chat/?ticket={ticket}")
    assert not again  # used


async def test_an_expired_ticket_is_refused(owner, organisation, settings):
    settings.WS_TICKET_TTL_SECONDS = 1
    ticket = await sync_to_async(ws_ticket_issue)(
        user=owner, organisation=organisation, api_key=None
    )
    await asyncio.sleep(1.2)
    connected, _ = await handshake(f"/ws/chat/?ticket={ticket}")
    assert not connected


async def test_an_unknown_ticket_is_refused_even_with_a_valid_session(owner):
    # Explicit credentials decide alone: a bad ticket never falls back to the cookie.
    connected, _ = await handshake(
        "/ws/chat/?ticket=forged", headers=[await session_cookie(owner), ORIGIN]
    )
    assert not connected


async def test_a_bearer_key_opens_a_socket_without_origin(key):
    connected, ws = await handshake(headers=[(b"authorization", f"Bearer {key.raw}".encode())])
    assert connected
    await ws.disconnect()


@pytest.mark.parametrize("state", ["revoked", "expired"])
async def test_revoked_and_expired_keys_are_refused_at_the_handshake(key, owner, state):
    if state == "revoked":
        await sync_to_async(api_key_revoke)(key=key.key, by=owner)
    else:
        await ApiKey.objects.aupdate(expires_at=timezone.now() - timedelta(seconds=1))
    connected, _ = await handshake(headers=[(b"authorization", f"Bearer {key.raw}".encode())])
    assert not connected


async def test_a_ticket_from_a_foreign_origin_is_refused(owner, organisation):
    ticket = await sync_to_async(ws_ticket_issue)(
        user=owner, organisation=organisation, api_key=None
    )
    connected, _ = await handshake(
        f"/ws/chat/?ticket={ticket}", headers=[(b"origin", b"https://evil.example")]
    )
    assert not connected


async def test_a_session_socket_without_origin_is_refused(owner):
    """channels' OriginValidator refuses a missing Origin unless ALLOWED_HOSTS has "*": a
    cookie (ambient credential) is only accepted from a page of ours."""
    connected, _ = await handshake(headers=[await session_cookie(owner)])
    assert not connected
    connected, ws = await handshake(headers=[await session_cookie(owner), ORIGIN])
    assert connected
    await ws.disconnect()


async def test_a_key_socket_reaches_only_its_organisation(owner, organisation, key, no_dispatch):
    """The owner's key for the team organisation cannot read the owner's personal chats."""
    personal = await sync_to_async(services.message_send)(
        author=owner, conversation=None, text="private diary", client_id="p"
    )
    connected, ws = await handshake(headers=[(b"authorization", f"Bearer {key.raw}".encode())])
    assert connected
    await ws.send_json_to({"type": "subscribe", "conversation": personal.reply.conversation_id})
    assert (await ws.receive_json_from())["code"] == "not_found"
    await ws.send_json_to({"type": "resume", "message": personal.reply.pk, "after_seq": 0})
    assert (await ws.receive_json_from())["code"] == "not_found"
    # A new conversation from the key lands in the key's organisation.
    await ws.send_json_to({"type": "send", "conversation": None, "text": "hi", "client_id": "k"})
    ack = await ws.receive_json_from()
    assert ack["type"] == "ack"
    conversation = await Conversation.objects.aget(pk=ack["conversation"])
    assert conversation.organisation_id == organisation.pk
    await ws.disconnect()


async def test_outsider_key_cannot_touch_another_organisations_conversation(
    owner, outsider, other_organisation, organisation, no_dispatch
):
    theirs = await sync_to_async(services.message_send)(
        author=owner, conversation=None, text="plans", client_id="t", organisation=organisation
    )
    outsider_key = await sync_to_async(api_key_create)(
        user=outsider, organisation=other_organisation, name="x"
    )
    connected, ws = await handshake(
        headers=[(b"authorization", f"Bearer {outsider_key.raw}".encode())]
    )
    assert connected
    for frame in (
        {"type": "subscribe", "conversation": theirs.reply.conversation_id},
        {"type": "cancel", "message": theirs.reply.pk},
        {"type": "regenerate", "message": theirs.reply.pk},
        {"type": "edit", "message": theirs.user_message.pk, "text": "x", "client_id": "e"},
        {
            "type": "send",
            "conversation": theirs.reply.conversation_id,
            "text": "x",
            "client_id": "s",
        },
    ):
        await ws.send_json_to(frame)
        assert (await ws.receive_json_from())["code"] == "not_found", frame
    await ws.disconnect()


async def test_a_key_stops_opening_sockets_when_its_user_leaves(key, owner, organisation):
    await Membership.objects.filter(user=owner, organisation=organisation).adelete()
    connected, _ = await handshake(headers=[(b"authorization", f"Bearer {key.raw}".encode())])
    assert not connected


# --- the handshake cache: a reconnect needs no database, and nothing that ended gets in ------


@pytest.fixture
def handshake_cache(settings):
    settings.WS_HANDSHAKE_CACHE_SECONDS = 900
    cache.clear()  # marks left by an earlier test's users (ids are reused) would hide entries
    yield
    cache.clear()


@pytest.fixture
def statements(monkeypatch) -> list[str]:
    """Every SQL statement run from now on, by any thread (db_async runs them off the loop)."""
    seen: list[str] = []
    execute = CursorWrapper.execute

    def counted(self, sql, params=None):
        seen.append(sql)
        return execute(self, sql, params)

    monkeypatch.setattr(CursorWrapper, "execute", counted)
    return seen


async def test_a_reconnecting_browser_socket_opens_without_the_database(
    owner, handshake_cache, statements
):
    cookie = await session_cookie(owner)
    connected, first = await handshake(headers=[cookie, ORIGIN])
    assert connected and statements  # looked up once
    await first.disconnect()
    statements.clear()
    connected, again = await handshake(headers=[cookie, ORIGIN])
    assert connected
    await again.send_json_to({"type": "ping"})
    assert await again.receive_json_from() == {"type": "pong"}
    assert statements == []
    await again.disconnect()


async def test_a_reconnecting_browser_socket_reads_the_cache_in_two_round_trips(
    owner, handshake_cache, monkeypatch
):
    """The entry with its session's and everyone's marks, then its user's mark: a storm of
    reconnects costs each handshake two cache calls, and writes nothing."""
    cookie = await session_cookie(owner)
    connected, first = await handshake(headers=[cookie, ORIGIN])
    assert connected
    await first.disconnect()
    shared = revocation.handshake_cache()
    calls: list[str] = []  # the outermost calls (locmem's get_many calls its own get)
    depth = [0]

    def counted(name, method):
        def call(*args, **kwargs):
            if not depth[0]:
                calls.append(name)
            depth[0] += 1
            try:
                return method(*args, **kwargs)
            finally:
                depth[0] -= 1

        return call

    for name in ("get", "get_many", "set", "add", "delete"):
        monkeypatch.setattr(shared, name, counted(name, getattr(shared, name)))
    connected, again = await handshake(headers=[cookie, ORIGIN])
    assert connected
    assert calls == ["get_many", "get_many"]
    await again.disconnect()


async def test_a_browser_sockets_scope_holds_its_session_and_user_themselves(owner):
    """One middleware for cookie, session and user (no lazy wrappers, no `send` wrapped for the
    socket's life), and the same answers: the signed-in user, the session of the cookie."""
    cookie = await session_cookie(owner)
    seen: dict = {}

    async def inner(scope, receive, send):
        seen.update(scope)

    await ws_auth.session_auth_stack(inner)(
        {"type": "websocket", "headers": [HOST, cookie, ORIGIN]}, None, None
    )
    assert type(seen["user"]) is type(owner) and seen["user"].pk == owner.pk
    assert seen["session"].session_key == cookie[1].decode().split("=", 1)[1]
    anonymous: dict = {}

    async def inner_anonymous(scope, receive, send):
        anonymous.update(scope)

    await ws_auth.session_auth_stack(inner_anonymous)(
        {"type": "websocket", "headers": [HOST, ORIGIN]}, None, None
    )
    assert not anonymous["user"].is_authenticated


async def test_a_signed_out_session_stays_refused_when_its_mark_is_evicted(owner, handshake_cache):
    """A cache that evicts keys may drop the mark a sign-out set: the entry kept before it must
    not match again (as it would if "no mark" were a state entries could be kept under)."""
    client = Client()
    await sync_to_async(client.force_login)(owner)
    session_key = client.cookies["sessionid"].value
    cookie = (b"cookie", f"sessionid={session_key}".encode())
    mark = revocation.handshake_mark_key(revocation.session_group(session_key))
    revocation.handshake_cache().delete(mark)  # the sign-in's mark expired (they outlive no one)
    connected, first = await handshake(headers=[cookie, ORIGIN])
    assert connected
    await first.disconnect()
    await sync_to_async(client.logout)()
    assert revocation.handshake_cache().get(mark)
    revocation.handshake_cache().delete(mark)  # evicted
    connected, _ = await handshake(headers=[cookie, ORIGIN])
    assert not connected


async def test_a_cached_handshake_is_refused_once_its_session_signed_out(owner, handshake_cache):
    client = Client()
    await sync_to_async(client.force_login)(owner)
    cookie = (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())
    connected, ws = await handshake(headers=[cookie, ORIGIN])
    assert connected
    await ws.disconnect()
    await sync_to_async(client.logout)()
    connected, _ = await handshake(headers=[cookie, ORIGIN])
    assert not connected


async def test_a_cached_handshake_ends_with_its_session_expiring(
    owner, handshake_cache, monkeypatch
):
    """A session that merely runs out changes no mark: the cached handshake carries its expiry."""
    client = Client()
    await sync_to_async(client.force_login)(owner)
    session_key = client.cookies["sessionid"].value
    cookie = (b"cookie", f"sessionid={session_key}".encode())
    connected, ws = await handshake(headers=[cookie, ORIGIN])
    assert connected
    await ws.disconnect()
    expires = (await Session.objects.aget(session_key=session_key)).expire_date
    monkeypatch.setattr(timezone, "now", lambda: expires + timedelta(seconds=1))
    connected, _ = await handshake(headers=[cookie, ORIGIN])
    assert not connected


async def test_a_cached_handshake_is_refused_once_its_user_is_deactivated(owner, handshake_cache):
    cookie = await session_cookie(owner)
    connected, ws = await handshake(headers=[cookie, ORIGIN])
    assert connected
    await ws.disconnect()
    owner.is_active = False
    await owner.asave(update_fields=["is_active"])
    connected, _ = await handshake(headers=[cookie, ORIGIN])
    assert not connected


async def test_a_cached_handshake_follows_a_removed_membership(
    member, owner, organisation, handshake_cache
):
    """The session's active organisation is the team; once the member is removed, a new
    socket works in their personal organisation, not the cached team."""
    client = Client()
    await sync_to_async(client.force_login)(member)
    session_key = client.cookies["sessionid"].value
    await sync_to_async(_organisation_choose)(session_key, organisation)
    cookie = (b"cookie", f"sessionid={session_key}".encode())
    scope = {"session": SessionStore(session_key)}
    assert (await sync_to_async(_cached_or_looked_up)(scope, member)).pk == organisation.pk
    await Membership.objects.filter(user=member, organisation=organisation).adelete()
    connected, ws = await handshake(headers=[cookie, ORIGIN])
    assert connected  # still a user, in their personal organisation
    await ws.disconnect()
    assert (await sync_to_async(_cached_or_looked_up)(scope, member)).pk != organisation.pk


def _organisation_choose(session_key: str, organisation: Organisation) -> None:
    session = SessionStore(session_key)
    session[ACTIVE_ORGANISATION_SESSION_KEY] = organisation.pk
    session.save()


def _cached_or_looked_up(scope: dict, user) -> Organisation:
    """The organisation a handshake of this session gets now (through the cache if valid)."""
    scope = dict(scope, session=SessionStore(scope["session"].session_key))
    ws_auth._session_user_and_organisation(scope)
    organisation, _ = scope[ws_auth.SCOPE_ORGANISATION]
    return organisation
