"""WebSocket authentication: browsers by session cookie, programs by one-time ticket or API key.

project/asgi.py wraps the browser stack (origin check → session auth) in
`ProgramAuthMiddleware`:

- A handshake with `?ticket=…` or `Authorization: Bearer pk_…` is a program's. Its credentials
  alone decide: valid ones make scope["user"] (and scope["organisation_id"]); anything else is
  refused at the handshake (HTTP 403) — never a fall-back to the session cookie.
- Without them it goes to the browser stack as before.

Origin: channels' OriginValidator refuses a handshake *without* an Origin header unless
ALLOWED_HOSTS holds "*", so a cookie-authenticated socket always needs an allowed Origin
(which is what stops cross-site WebSocket hijacking: browsers always send Origin). Programs
send no Origin, and need none: their credential is explicit, not ambient. A program
handshake that does carry an Origin (a browser page using a ticket) must still have an
allowed one, so a foreign page cannot use a ticket against us either.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs, urlparse

from channels.auth import get_user
from channels.security.websocket import OriginValidator, WebsocketDenier
from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.contrib.sessions.backends.base import SessionBase
from django.contrib.sessions.models import Session
from django.http import parse_cookie
from django.utils import timezone
from django.utils.module_loading import import_string

from accounts.auth import bearer_token
from accounts.models import ApiKey, Membership, Organisation, User
from accounts.revocation import (
    CREDENTIAL_ENDED,
    EVERY_HANDSHAKE,
    MEMBERSHIP_ENDED,
    api_key_group,
    handshake_cache,
    handshake_mark_key,
    marks_read,
    session_group,
    user_group,
)
from accounts.selectors import ACTIVE_ORGANISATION_SESSION_KEY, organisation_active
from accounts.services import api_key_use
from accounts.tickets import Principal, ws_ticket_redeem
from accounts.two_factor import session_verified, two_factor_required
from core.db import db_async

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


def _program_credentials(scope: Scope) -> tuple[str | None, str | None]:
    """(ticket, api key) from the handshake; either may be None."""
    query = parse_qs(scope.get("query_string", b"").decode("latin1"))
    tickets = query.get("ticket") or [None]
    key = None
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            key = bearer_token(value)
    return tickets[0], key


def _origin_allowed_or_absent(scope: Scope) -> bool:
    validator = OriginValidator(None, settings.ALLOWED_HOSTS)
    for name, value in scope.get("headers", []):
        if name == b"origin":
            try:
                origin = urlparse(value.decode("latin1"))
            except UnicodeDecodeError:
                return False
            return bool(validator.valid_origin(origin))
    return True


def program_authenticate(*, ticket: str | None, api_key: str | None) -> Principal | None:
    if ticket:
        return ws_ticket_redeem(ticket=ticket)
    if api_key:
        key = api_key_use(raw=api_key)
        if key is not None:
            return Principal(
                user=key.user, organisation=key.organisation, via="api_key", api_key_id=key.pk
            )
    return None


class ProgramAuthMiddleware:
    """Route a handshake by its credentials: program (ticket / bearer key) or browser."""

    def __init__(self, browser: ASGIApp, *, programs: ASGIApp) -> None:
        self.browser = browser
        self.programs = programs

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        ticket, api_key = _program_credentials(scope)
        if not ticket and not api_key:
            return await self.browser(scope, receive, send)
        principal = None
        if _origin_allowed_or_absent(scope):
            principal = await db_async(program_authenticate)(ticket=ticket, api_key=api_key)
        if principal is None:
            return await WebsocketDenier()(scope, receive, send)
        scope = dict(
            scope,
            user=principal.user,
            organisation_id=principal.organisation.pk,
            auth_method=principal.via,
            api_key_id=principal.api_key_id,
        )
        return await self.programs(scope, receive, send)


class SessionAuthMiddleware:
    """A browser socket's session and user in the scope: what channels' AuthMiddlewareStack
    (CookieMiddleware → SessionMiddleware → AuthMiddleware) does for a WebSocket, in one step.

    channels' stack copies the scope four times, keeps a lazy wrapper around the session and
    another around the user, and wraps `send` for the socket's whole life to save the session
    on an HTTP response, which a WebSocket never sends: per open socket that was ~2 KB and
    three coroutine frames, and every frame sent paid for the wrapper. Here the session cookie
    is read, the session store made (loaded lazily, as channels does), and the user looked up
    on the database threads (core/db.py), not on Daphne's one sync thread, where every
    handshake of the process queued behind every other's; scope["session"] and scope["user"]
    are the objects themselves. WebSocket scopes only (project/asgi.py routes HTTP elsewhere).
    """

    def __init__(self, inner: ASGIApp) -> None:
        self.inner = inner
        self.session_store: type[SessionBase] = import_string(
            f"{settings.SESSION_ENGINE}.SessionStore"
        )

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        session_key = None
        for name, value in scope["headers"]:
            if name == b"cookie":
                session_key = parse_cookie(value.decode("latin1")).get(settings.SESSION_COOKIE_NAME)
                break
        scope = dict(scope, session=self.session_store(session_key))
        scope["user"] = await db_async(_session_user_and_organisation)(scope)
        return await self.inner(scope, receive, send)


# Where the session stack leaves `socket_organisation`'s answer, found in the same database
# call as the user: a handshake then makes one trip to the database threads, not two.
SCOPE_ORGANISATION = "parley_socket_organisation"


def _session_user_and_organisation(scope: Scope) -> Any:
    session = scope["session"]
    cached = handshake_cached(session=session)
    if cached is not None:
        user, organisation = cached
        scope[SCOPE_ORGANISATION] = (organisation, False)
        return user
    # Each mark is read before what it guards: a change committed after the read changes it.
    marks = _handshake_marks(session_key=session.session_key)
    if marks is not None and (user_id := session.get(SESSION_KEY)) is not None:
        user_marks = _handshake_marks(session_key=session.session_key, user_id=user_id)
        marks = None if user_marks is None else {**marks, **user_marks}
    user = get_user.func(scope)
    if user.is_authenticated:
        found = scope[SCOPE_ORGANISATION] = socket_organisation(scope=dict(scope, user=user))
        if found[0] is not None and marks is not None and user_group(user.pk) in marks:
            handshake_remember(session=session, user=user, organisation=found[0], marks=marks)
    return user


# --- the handshake cache --------------------------------------------------------------------
#
# After a replica dies its sockets all reconnect to the others at once (docs/benchmarks.md):
# four database statements per handshake (session, user, two-factor, organisation) made that
# storm last ~80 s. A browser handshake's answer (the user, the session's data and the
# organisation the socket works in) is kept in the shared cache for WS_HANDSHAKE_CACHE_SECONDS,
# under its session, so a socket that connected within that time reconnects without the
# database. It is used only while nothing that could change the answer happened since it was
# looked up: accounts/revocation.py gives the user, the session or everyone a new mark whenever
# such a change commits (the events that close open sockets, and more), and an entry is used
# only while the three marks are those read before its database reads. Programs (tickets, API
# keys) are not cached.


def _handshake_key(session_key: str) -> str:
    return f"ws-handshake:{session_group(session_key)}"


def _handshake_marks(*, session_key: str | None, user_id: Any = None) -> dict[str, Any] | None:
    """The current marks: the session's and everyone's, or the user's; None: no caching."""
    if settings.WS_HANDSHAKE_CACHE_SECONDS <= 0 or not session_key:
        return None
    if user_id is None:
        groups = [session_group(session_key), EVERY_HANDSHAKE]
    else:
        groups = [user_group(int(user_id))]
    return marks_read(groups)


def handshake_cached(*, session: Any) -> tuple[User, Organisation] | None:
    """(user, organisation) of a browser handshake looked up recently and still valid."""
    if settings.WS_HANDSHAKE_CACHE_SECONDS <= 0 or not session.session_key:
        return None
    key = _handshake_key(session.session_key)
    groups = [session_group(session.session_key), EVERY_HANDSHAKE]
    try:
        # Two round trips: the entry with the marks known before it, then its user's. A mark
        # missing here is a miss: the look-up then sets it (marks_read) before its reads.
        found = handshake_cache().get_many([key, *map(handshake_mark_key, groups)])
        entry = found.get(key)
        if entry is None or timezone.now() >= entry["expires"]:
            return None
        user, organisation = entry["user"], entry["organisation"]
        groups.append(user_group(user.pk))
        found.update(handshake_cache().get_many([handshake_mark_key(groups[-1])]))
    except Exception:
        logger.warning("handshake cache unavailable", exc_info=True)
        return None
    marks = {group: found.get(handshake_mark_key(group)) for group in groups}
    if None in marks.values() or marks != entry["marks"]:
        return None
    session._session_cache = entry["session"]  # what the database would have loaded
    return user, organisation


def handshake_remember(
    *, session: Any, user: User, organisation: Organisation, marks: dict[str, Any]
) -> None:
    """Keep a handshake looked up under `marks`, as read before its database reads, never past
    its session's expiry (a session that merely runs out changes no mark)."""
    expires = _session_expiry(session.session_key)
    if expires is None:
        return
    ttl = min(settings.WS_HANDSHAKE_CACHE_SECONDS, int((expires - timezone.now()).total_seconds()))
    if ttl <= 0:
        return
    entry = {
        "expires": expires,
        "user": user,
        "organisation": organisation,
        "session": dict(session.items()),
        "marks": marks,
    }
    try:
        handshake_cache().set(_handshake_key(session.session_key), entry, ttl)
    except Exception:
        logger.warning("handshake cache unavailable", exc_info=True)


def _session_expiry(session_key: str) -> Any:
    """When the stored session expires (None: no such session)."""
    return (
        Session.objects.filter(session_key=session_key)
        .values_list("expire_date", flat=True)
        .first()
    )


async def socket_organisation_of(scope: Scope) -> tuple[Organisation | None, bool]:
    """`socket_organisation` for an accepted handshake: found already by the session stack,
    else (programs) looked up now."""
    if SCOPE_ORGANISATION in scope:
        found: tuple[Organisation | None, bool] = scope[SCOPE_ORGANISATION]
        return found
    return await db_async(socket_organisation)(scope=scope)


def session_auth_stack(inner: ASGIApp) -> ASGIApp:
    """channels' AuthMiddlewareStack (cookies → session → user) in one step, its look-up
    pooled (`SessionAuthMiddleware`)."""
    return SessionAuthMiddleware(inner)


def _user_of(scope: Scope) -> User | None:
    # The session stack's user is a lazy proxy around the real one.
    user = getattr(scope.get("user"), "_wrapped", scope.get("user"))
    return user if isinstance(user, User) and user.is_authenticated else None


def socket_organisation(*, scope: Scope) -> tuple[Organisation | None, bool]:
    """(organisation the socket works in, whether it is limited to it); (None, _) refuses.

    Programs are limited to their credential's organisation. A browser works in the session's
    active organisation and reaches its own conversations in every organisation it belongs to,
    once two-factor is satisfied where required.
    """
    user = _user_of(scope)
    if user is None:
        return None, False
    if "organisation_id" in scope:
        organisation = Organisation.objects.filter(pk=scope["organisation_id"]).first()
        return organisation, True
    session = scope.get("session") or {}
    if two_factor_required(user=user) and not session_verified(user=user, session=session):
        return None, False
    requested = session.get(ACTIVE_ORGANISATION_SESSION_KEY)
    return organisation_active(user=user, requested_id=requested), False


def socket_access_groups(*, scope: Scope) -> list[str]:
    """The groups a socket joins to hear that its access ended (accounts/revocation.py): its
    user's, and its API key's (also through a ticket) or its browser session's."""
    user = _user_of(scope)
    assert user is not None  # called for accepted sockets only
    groups = [user_group(user.pk)]
    if scope.get("api_key_id") is not None:
        groups.append(api_key_group(scope["api_key_id"]))
    session_key = getattr(scope.get("session"), "session_key", None)
    if "organisation_id" not in scope and session_key:
        groups.append(session_group(session_key))
    return groups


def socket_access_lost(*, scope: Scope, organisation: Organisation) -> int | None:
    """None while the socket's credentials still hold, else the close code for it.

    The backstop for a missed `access.revoked` event (Redis down when access ended, or an
    expiry, which publishes nothing): the consumer asks before work that costs (a send).
    """
    user = _user_of(scope)
    if user is None or not User.objects.filter(pk=user.pk, is_active=True).exists():
        return CREDENTIAL_ENDED
    key_id = scope.get("api_key_id")
    if key_id is not None:
        key = ApiKey.objects.filter(pk=key_id).first()
        if key is None or not key.is_active:
            return CREDENTIAL_ENDED
    session = scope.get("session")
    if "organisation_id" not in scope and session is not None:
        stored = session.__class__(session.session_key).load() if session.session_key else {}
        if str(stored.get(SESSION_KEY, "")) != str(user.pk):
            return CREDENTIAL_ENDED
    if not Membership.objects.filter(user_id=user.pk, organisation_id=organisation.pk).exists():
        return MEMBERSHIP_ENDED
    return None
