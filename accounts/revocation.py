"""Access that ends reaches open sockets: a revoked or deleted API key, a removed membership, a
deactivated user, a session that signed out.

Credentials are checked at the handshake, so without this an open socket outlived them. Each
socket joins channel-layer groups named here (chat/consumers.py: its user's, its API key's, its
session's); when access ends, `access_revoke` publishes one `access.revoked` event to the group
after the transaction commits, and every socket in it, on every replica (Redis), closes with
the event's code. accounts never imports chat: the group names and the event are the seam.

Close codes (docs/protocol.md): 4401 the credential ended (key revoked, expired or deleted,
signed out, user deactivated); 4403 the user was removed from an organisation.

The same events make the handshake cache (accounts/ws_auth.py) and the API key cache
(accounts/services.py api_key_use) forget: `handshakes_forget`
gives a group a new mark (a random token) in the shared cache once the change commits, and a
cached handshake is used only while its user's, its session's and the global mark are still
the ones it read before its own database reads. Besides what
closes sockets, anything that can change a handshake's answer marks: a session saved or
deleted (sign-in, sign-out, switching organisation, two-factor verified), a user saved
(password, deactivation), a membership or two-factor device changed, an organisation saved
(its two-factor requirement: the global mark).
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth.signals import user_logged_out
from django.contrib.sessions.models import Session
from django.core.cache import BaseCache, caches
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.http import HttpRequest
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import ApiKey, Membership, Organisation, User

logger = logging.getLogger(__name__)

EVENT = "access.revoked"
CREDENTIAL_ENDED = 4401
MEMBERSHIP_ENDED = 4403


def user_group(user_id: int) -> str:
    return f"access.user.{user_id}"


def api_key_group(key_id: int) -> str:
    return f"access.key.{key_id}"


def session_group(session_key: str) -> str:
    # A digest: session keys are bearer secrets and group names travel through Redis.
    return f"access.session.{hashlib.sha256(session_key.encode()).hexdigest()[:40]}"


# The global mark: an organisation's two-factor requirement changed, which reaches all of its
# members' handshakes.
EVERY_HANDSHAKE = "access.all"


def access_revoke(*, group: str, code: int, reason: str) -> None:
    """Close every socket in `group`, on every replica, once the transaction commits."""

    def revoke() -> None:
        _forget(group)
        _publish(group=group, code=code, reason=reason)

    transaction.on_commit(revoke)


_handshake_cache: BaseCache | None = None


def handshake_cache() -> BaseCache:
    """The process's one client of the default cache, for the handshake cache.

    `django.core.cache.cache` is one client per async context: in Daphne every socket has its
    own, so each handshake built a connection pool and a Redis connection that lived as long
    as its socket (bench/socket_bench.py: +90 KB per socket, and a storm of new connections).
    """
    global _handshake_cache
    if _handshake_cache is None:
        _handshake_cache = caches.create_connection("default")
    return _handshake_cache


def handshake_mark_key(group: str) -> str:
    return f"ws-handshake:mark:{group}"


def handshakes_forget(*, group: str) -> None:
    """No handshake of `group` cached before the transaction commits is used again."""
    transaction.on_commit(lambda: _forget(group))


def marks_lifetime() -> float:
    """How long a mark is kept (seconds): past the longest-lived entry kept under it (the
    handshake cache, the API key cache); 0 when neither caches."""
    ttl = max(settings.WS_HANDSHAKE_CACHE_SECONDS, settings.API_KEY_CACHE_SECONDS)
    return ttl + 60 if ttl > 0 else 0


def marks_read(groups: list[str]) -> dict[str, str] | None:
    """The current mark of each group (a missing one is set to a fresh one first); None when
    the shared cache does not answer, so nothing may be cached or used from a cache."""
    keys = [handshake_mark_key(group) for group in groups]
    try:
        found = handshake_cache().get_many(keys)
        if missing := [key for key in keys if found.get(key) is None]:
            # Never "no mark": a mark evicted or expired would then match entries kept before
            # it was set. A fresh one (kept only if none was set meanwhile) matches none.
            for key in missing:
                handshake_cache().add(key, uuid.uuid4().hex, marks_lifetime())
            found.update(handshake_cache().get_many(missing))
    except Exception:
        logger.warning("access marks unavailable", exc_info=True)
        return None
    if any(found.get(key) is None for key in keys):
        return None
    return {group: found[handshake_mark_key(group)] for group in groups}


def _forget(group: str) -> None:
    lifetime = marks_lifetime()
    if lifetime <= 0:
        return
    try:
        # A new mark matches no entry kept before it. Entries are only kept under marks that
        # exist (marks_read sets a missing one), so a mark evicted or expired later is
        # replaced by another that matches nothing either.
        handshake_cache().set(handshake_mark_key(group), uuid.uuid4().hex, lifetime)
    except Exception:
        # Cache down: entries in it cannot be read either; one cached just before the outage
        # may still be used until it expires (WS_HANDSHAKE_CACHE_SECONDS).
        logger.warning("could not forget cached handshakes (%s)", group, exc_info=True)


def _publish(*, group: str, code: int, reason: str) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group, {"type": EVENT, "code": code, "reason": reason})
    except Exception:
        # Redis is down: the sockets miss the event, and their own re-check on the next send
        # (chat/consumers.py) closes them instead.
        logger.warning("could not tell open sockets that access ended (%s)", group, exc_info=True)


# --- every way access ends, wherever it is done (services, admin, deletes) ----------------


@receiver(user_logged_out, dispatch_uid="accounts.revocation.signed_out")
def _signed_out(sender: Any, request: HttpRequest | None, **kwargs: Any) -> None:
    # Sent before the session is flushed: its key still names the sockets it opened.
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    if session_key:
        access_revoke(group=session_group(session_key), code=CREDENTIAL_ENDED, reason="signed out")


@receiver(post_save, sender=ApiKey, dispatch_uid="accounts.revocation.key_saved")
def _key_saved(sender: Any, instance: ApiKey, created: bool, **kwargs: Any) -> None:
    if created:
        return
    if not instance.is_active:
        api_key_ended(key_id=instance.pk)
    else:  # e.g. a new expiry: a cached look-up of the key (accounts/services.py) is stale
        handshakes_forget(group=api_key_group(instance.pk))


@receiver(post_delete, sender=ApiKey, dispatch_uid="accounts.revocation.key_deleted")
def _key_deleted(sender: Any, instance: ApiKey, **kwargs: Any) -> None:
    api_key_ended(key_id=instance.pk)


@receiver(post_delete, sender=Membership, dispatch_uid="accounts.revocation.membership_deleted")
def _membership_deleted(sender: Any, instance: Membership, **kwargs: Any) -> None:
    # Every socket of the user closes, whichever organisation it works in: a browser's socket
    # reaches all of its user's organisations, and reconnecting costs a resume.
    access_revoke(
        group=user_group(instance.user_id),
        code=MEMBERSHIP_ENDED,
        reason="removed from an organisation",
    )


@receiver(post_save, sender=User, dispatch_uid="accounts.revocation.user_saved")
def _user_saved(sender: Any, instance: User, created: bool, **kwargs: Any) -> None:
    if not created and not instance.is_active:
        access_revoke(
            group=user_group(instance.pk), code=CREDENTIAL_ENDED, reason="account deactivated"
        )


def api_key_ended(*, key_id: int) -> None:
    """The key was revoked or deleted (services call this where no model signal fires)."""
    access_revoke(group=api_key_group(key_id), code=CREDENTIAL_ENDED, reason="API key revoked")


# --- what changes a handshake's answer without closing sockets: forget cached handshakes ---


@receiver(post_save, sender=Session, dispatch_uid="accounts.revocation.session_saved")
@receiver(post_delete, sender=Session, dispatch_uid="accounts.revocation.session_deleted")
def _session_changed(sender: Any, instance: Session, **kwargs: Any) -> None:
    handshakes_forget(group=session_group(instance.session_key))


@receiver(post_save, sender=User, dispatch_uid="accounts.revocation.user_changed")
def _user_changed(sender: Any, instance: User, created: bool, **kwargs: Any) -> None:
    if not created:
        handshakes_forget(group=user_group(instance.pk))


@receiver(post_save, sender=Membership, dispatch_uid="accounts.revocation.membership_saved")
@receiver(post_save, sender=TOTPDevice, dispatch_uid="accounts.revocation.device_saved")
@receiver(post_delete, sender=TOTPDevice, dispatch_uid="accounts.revocation.device_deleted")
def _users_access_changed(sender: Any, instance: Membership | TOTPDevice, **kwargs: Any) -> None:
    handshakes_forget(group=user_group(instance.user_id))


@receiver(post_save, sender=Organisation, dispatch_uid="accounts.revocation.organisation_saved")
def _organisation_saved(sender: Any, instance: Organisation, created: bool, **kwargs: Any) -> None:
    if not created:
        handshakes_forget(group=EVERY_HANDSHAKE)
