"""Writes of accounts: users and their personal organisations, roles, API keys, the audit log."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone
from django.utils.text import slugify

from accounts.models import ApiKey, AuditLog, Membership, Organisation, User
from accounts.revocation import api_key_ended

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
    key's organisation. last_used_at is written at most once a minute per key.
    """
    parts = raw.split("_", 2)
    if len(parts) != 3 or parts[0] != API_KEY_PREFIX or not parts[1] or not parts[2]:
        return None
    # One statement: the key, its user and organisation, and whether the user is still a member.
    membership = Membership.objects.filter(
        user_id=OuterRef("user_id"), organisation_id=OuterRef("organisation_id")
    )
    key = (
        ApiKey.objects.select_related("organisation", "user")
        .annotate(member=Exists(membership))
        .filter(prefix=parts[1])
        .first()
    )
    if key is None or not hmac.compare_digest(key.secret_hash, api_key_hash(raw)):
        return None
    if not key.is_active or not key.user.is_active or not key.member:
        return None
    now = timezone.now()
    if (
        key.last_used_at is None
        or (now - key.last_used_at).total_seconds() > API_KEY_TOUCH_EVERY_SECONDS
    ):
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key
