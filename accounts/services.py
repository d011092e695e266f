"""Writes of accounts: users and their personal organisations, roles, API keys, the audit log."""

from __future__ import annotations

import copy
import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone
from django.utils.text import slugify

from accounts.models import ApiKey, AuditLog, Membership, Organisation, User
from accounts.revocation import (
    EVERY_HANDSHAKE,
    api_key_ended,
    api_key_group,
    marks_read,
    user_group,
)

API_KEY_PREFIX = "pk"


def audit_record(
    *,
    action: str,
    actor: User | None = None,
    organisation: Organisation | None = None,
    target: str = "",
    ip: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditLog:
    return AuditLog.objects.create(
        action=action,
        actor=actor if actor is not None and actor.pk else None,
        organisation=organisation,
        target=target[:255],
        ip=ip or None,
        details=details or {},
    )


def _unique_slug(name: str) -> str:
    base = slugify(name)[:60] or "org"
    slug = base
    while Organisation.objects.filter(slug=slug).exists():
        slug = f"{base}-{secrets.token_hex(3)}"
    return slug


def organisation_create(*, name: str, admin: User, personal: bool = False) -> Organisation:
    """A new organisation with `admin` as its first admin (and owner, if `personal`)."""
    with transaction.atomic():
        organisation = Organisation.objects.create(
            name=name[:200], slug=_unique_slug(name), personal_owner=admin if personal else None
        )
        Membership.objects.create(user=admin, organisation=organisation, role=Membership.Role.ADMIN)
    return organisation


def organisation_personal_ensure(*, user: User) -> Organisation:
    """The user's personal organisation, created on first need (sign-up, ensure_admin, or a
    user made some other way, e.g. in the admin)."""
    existing = Organisation.objects.filter(personal_owner=user).first()
    if existing is not None:
        return existing
    try:
        return organisation_create(name=user.get_username(), admin=user, personal=True)
    except IntegrityError:  # created concurrently (two first requests at once)
        return Organisation.objects.get(personal_owner=user)


def account_create(
    *, username: str, password: str | None, email: str = "", is_superuser: bool = False
) -> User:
    """A user with their personal organisation: what sign-up, ensure_admin and tests use."""
    with transaction.atomic():
        if is_superuser:
            user = User.objects.create_superuser(username=username, email=email, password=password)
        else:
            user = User.objects.create_user(username=username, email=email, password=password)
        organisation_personal_ensure(user=user)
    return user


def membership_set(
    *, organisation: Organisation, user: User, role: str, by: User | None, ip: str | None = None
) -> Membership:
    """Add a member or change their role; audited."""
    membership, created = Membership.objects.get_or_create(
        organisation=organisation, user=user, defaults={"role": role}
    )
    old = None if created else membership.role
    if not created and membership.role != role:
        membership.role = role
        membership.save(update_fields=["role"])
    if old != role:
        audit_record(
            action=AuditLog.Action.ROLE_CHANGED,
            actor=by,
            organisation=organisation,
            target=user.get_username(),
            ip=ip,
            details={"from": old, "to": role},
        )
    return membership


# --- API keys ---------------------------------------------------------------------------


def api_key_hash(raw: str) -> str:
    """SHA-256 of the whole key. The secret part has 256 bits of entropy, so a plain fast hash
    is enough (nothing to brute-force, unlike passwords)."""
    return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True)
class NewApiKey:
    key: ApiKey
    raw: str  # shown once, never stored


def api_key_create(
    *,
    user: User,
    organisation: Organisation,
    name: str,
    expires_at: datetime | None = None,
    ip: str | None = None,
) -> NewApiKey:
    if not Membership.objects.filter(user=user, organisation=organisation).exists():
        raise PermissionError("Only members of an organisation can create its keys.")
    for _attempt in range(5):
        prefix = secrets.token_hex(5)
        raw = f"{API_KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
        try:
            with transaction.atomic():
                key = ApiKey.objects.create(
                    organisation=organisation,
                    user=user,
                    name=name[:100] or "API key",
                    prefix=prefix,
                    secret_hash=api_key_hash(raw),
                    expires_at=expires_at,
                )
        except IntegrityError:  # a prefix collision: draw again
            continue
        audit_record(
            action=AuditLog.Action.KEY_CREATED,
            actor=user,
            organisation=organisation,
            target=str(key),
            ip=ip,
            details={"key": key.pk, "expires_at": expires_at.isoformat() if expires_at else None},
        )
        return NewApiKey(key=key, raw=raw)
    raise RuntimeError("could not draw a unique API key prefix")


def api_key_revoke(*, key: ApiKey, by: User | None, ip: str | None = None) -> bool:
    """Revoke a key at once, on every replica (each request looks it up). False if it was
    revoked already."""
    revoked = ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    if revoked:
        key.refresh_from_db(fields=["revoked_at"])
        api_key_ended(key_id=key.pk)  # open sockets using it close (update() sends no signal)
        audit_record(
            action=AuditLog.Action.KEY_REVOKED,
            actor=by,
            organisation=key.organisation,
            target=str(key),
            ip=ip,
            details={"key": key.pk},
        )
    return bool(revoked)


API_KEY_TOUCH_EVERY_SECONDS = 60


def api_key_use(*, raw: str) -> ApiKey | None:
    """The active key `raw` is, with its organisation and user; None for anything else.

    Looks the key up by its public prefix, then compares hashes in constant time. A key works
    only while it is not revoked or expired and its user is active and still a member of the
    key's organisation. last_used_at is written at most once a minute per key (and process).
    A look-up is kept in this process (API_KEY_CACHE_SECONDS) and used only while the access
    marks it was looked up under hold: see _KeyCache.
    """
    parts = raw.split("_", 2)
    if len(parts) != 3 or parts[0] != API_KEY_PREFIX or not parts[1] or not parts[2]:
        return None
    digest = api_key_hash(raw)
    cached, marks = _key_cache.get(digest)
    key = cached or _api_key_look_up(prefix=parts[1], digest=digest)
    if key is None or not key.is_active:  # expiry is checked on every use
        return None
    if cached is None:
        _key_cache.put(digest, key, marks)
    now = timezone.now()
    if (
        key.last_used_at is None
        or (now - key.last_used_at).total_seconds() > API_KEY_TOUCH_EVERY_SECONDS
    ):
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    # The caller's own copy: the cached row (and its user and organisation) outlive a request.
    return copy.copy(key) if cached is not None else key


def _api_key_look_up(*, prefix: str, digest: str) -> ApiKey | None:
    """The key with this prefix and hash whose user is active and a member, else None."""
    # One statement: the key, its user and organisation, and whether the user is still a member.
    membership = Membership.objects.filter(
        user_id=OuterRef("user_id"), organisation_id=OuterRef("organisation_id")
    )
    key = (
        ApiKey.objects.select_related("organisation", "user")
        .annotate(member=Exists(membership))
        .filter(prefix=prefix)
        .first()
    )
    if key is None or not hmac.compare_digest(key.secret_hash, digest):
        return None
    if not key.is_active or not key.user.is_active or not key.member:
        return None
    return key


def _key_marks_groups(key_id: int, user_id: int) -> list[str]:
    # Whatever can change a key's answer marks one of these (accounts/revocation.py): the key
    # revoked, saved or deleted; its user saved or deactivated, a membership of theirs saved or
    # removed; any organisation saved.
    return [api_key_group(key_id), user_group(user_id), EVERY_HANDSHAKE]


class _KeyCache:
    """API key look-ups of this process, by the key's hash (the ORM statement and its
    compilation cost 2-4 ms of CPU per request; docs/benchmarks.md).

    An entry is used only while the marks of its key, its user and everyone, read from the
    shared cache on each use, are those read *before* the database look-up that made it: a
    change that commits after that read has changed a mark (accounts/revocation.py), so the
    entry is never used again, in any process. A key's id and user are learnt from a first
    look-up, so the marks can be read before the second; the third use is the first from the
    cache. Nothing is cached while the shared cache does not answer.
    """

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self.lock = threading.Lock()
        # digest → (key, marks it was looked up under, kept until); digest → (key id, user id)
        self.entries: OrderedDict[str, tuple[ApiKey, dict[str, str], float]] = OrderedDict()
        self.ids: dict[str, tuple[int, int]] = {}

    def get(self, digest: str) -> tuple[ApiKey | None, dict[str, str] | None]:
        """(the cached key if still valid, else None; the marks to keep a new look-up under)."""
        ttl = settings.API_KEY_CACHE_SECONDS
        if ttl <= 0:
            return None, None
        with self.lock:
            ids = self.ids.get(digest)
            entry = self.entries.get(digest)
        if ids is None:
            return None, None
        marks = marks_read(_key_marks_groups(*ids))
        if marks is None:
            return None, None
        if entry is not None and entry[1] == marks and entry[2] > time.monotonic():
            return entry[0], marks
        return None, marks

    def put(self, digest: str, key: ApiKey, marks: dict[str, str] | None) -> None:
        ttl = settings.API_KEY_CACHE_SECONDS
        if ttl <= 0:
            return
        with self.lock:
            known = self.ids.get(digest)
            self.ids[digest] = (key.pk, key.user_id)
            if marks is None or known != (key.pk, key.user_id):
                return
            self.entries[digest] = (key, marks, time.monotonic() + ttl)
            self.entries.move_to_end(digest)
            while len(self.entries) > self.size:
                evicted, _ = self.entries.popitem(last=False)
                self.ids.pop(evicted, None)
            if len(self.ids) > 4 * self.size:
                self.ids.clear()

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()
            self.ids.clear()


_key_cache = _KeyCache()
