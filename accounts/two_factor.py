"""Optional TOTP two-factor (django-otp), required for users who turned it on and for every
member of an organisation whose admin requires it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db.models import Q
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.models import Device
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import AuditLog, Organisation, User
from accounts.services import audit_record


def two_factor_enabled(*, user: User) -> bool:
    return TOTPDevice.objects.filter(user=user, confirmed=True).exists()


def two_factor_required_by_organisation(*, user: User) -> bool:
    """Any of the user's organisations requires it: one verified session covers them all, so
    switching organisations cannot step around the requirement."""
    return Organisation.objects.filter(memberships__user=user, require_2fa=True).exists()


def two_factor_required(*, user: User) -> bool:
    """The user must verify with a device: they turned it on, or an organisation requires it.
    One query; asked on every page view."""
    return (
        User.objects.filter(pk=user.pk)
        .filter(Q(totpdevice__confirmed=True) | Q(memberships__organisation__require_2fa=True))
        .exists()
    )


def session_verified(*, user: User, session: Mapping[str, Any]) -> bool:
    """The session was verified with one of the user's confirmed devices (as OTPMiddleware
    decides for HTTP; this is the same check for WebSocket handshakes)."""
    persistent_id = session.get(DEVICE_ID_SESSION_KEY)
    if not persistent_id:
        return False
    device = Device.from_persistent_id(persistent_id)
    return device is not None and device.user_id == user.pk and device.confirmed


def totp_device_pending(*, user: User) -> TOTPDevice:
    """The unconfirmed device a user is setting up (one at a time)."""
    device = TOTPDevice.objects.filter(user=user, confirmed=False).order_by("-pk").first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name="Authenticator app", confirmed=False)
    return device


def totp_confirm(*, user: User, token: str, ip: str | None = None) -> TOTPDevice | None:
    """Confirm the pending device with a first code; None if the code is wrong."""
    device = TOTPDevice.objects.filter(user=user, confirmed=False).order_by("-pk").first()
    if device is None or not device.verify_token(token):
        return None
    device.confirmed = True
    device.save(update_fields=["confirmed"])
    audit_record(action=AuditLog.Action.TWO_FACTOR_ENABLED, actor=user, target=str(user), ip=ip)
    return device


def totp_verify(*, user: User, token: str) -> TOTPDevice | None:
    """The confirmed device that accepts `token` (throttled by django-otp), or None."""
    for device in TOTPDevice.objects.filter(user=user, confirmed=True):
        if device.verify_token(token):
            return device
    return None


def totp_disable(*, user: User, ip: str | None = None) -> bool:
    """Turn two-factor off, unless an organisation requires it."""
    if two_factor_required_by_organisation(user=user):
        return False
    deleted, _ = TOTPDevice.objects.filter(user=user).delete()
    if deleted:
        audit_record(
            action=AuditLog.Action.TWO_FACTOR_DISABLED, actor=user, target=str(user), ip=ip
        )
    return bool(deleted)
