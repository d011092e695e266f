"""Joining and leaving organisations with the member's consent.

An organisation admin invites a username or an email address; only the invitee, signed in,
accepts (which makes the membership) or declines. Nobody but a superuser adds members
directly, so nobody can pull a user into an organisation whose operators would then read their
sign-ins or whose admins could force two-factor on them. A member leaves any organisation but
their personal one; what it required of them (two-factor) and the keys they made there go
with it.

Who an invitation is addressed to:
- a username: that user sees it on their invitations page, and accepts it there;
- an email address: only through the invitation's link, signed in with that address. The
  link's token is the proof it reached the address (Parley does not verify addresses, so an
  address alone proves nothing).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from accounts.models import ApiKey, AuditLog, Invitation, Membership, Organisation, User
from accounts.services import api_key_revoke, audit_record, membership_set


@dataclass(frozen=True)
class NewInvitation:
    invitation: Invitation
    token: str  # the link's secret, shown once to the admin who invited


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def invitation_may_invite(*, user: User, organisation: Organisation) -> bool:
    """Admins of a shared organisation (and superusers) invite; personal ones take nobody."""
    if organisation.personal:
        return False
    if user.is_active and user.is_superuser:
        return True
    return Membership.objects.filter(
        user=user, organisation=organisation, role=Membership.Role.ADMIN
    ).exists()


def invitation_validate(*, organisation: Organisation, username: str, email: str) -> None:
    """The checks a new invitation must pass, as form errors (used by forms and the admin)."""
    if organisation.personal:
        raise ValidationError("A personal organisation takes no other members.")
    if bool(username.strip()) == bool(email.strip()):
        raise ValidationError("Invite either a username or an email address.")


def invitation_create(
    *,
    organisation: Organisation,
    by: User,
    username: str = "",
    email: str = "",
    role: str = Membership.Role.MEMBER,
    ip: str | None = None,
) -> NewInvitation:
    """Invite someone; it waits for them to accept. A newer invitation of the same person to
    the same organisation replaces a pending older one."""
    if not invitation_may_invite(user=by, organisation=organisation):
        raise PermissionDenied("Only the organisation's admins invite members.")
    username, email = username.strip(), email.strip().lower()
    invitation_validate(organisation=organisation, username=username, email=email)
    if role not in Membership.Role.values:
        raise ValidationError(f"Unknown role {role!r}.")
    token = secrets.token_urlsafe(32)
    now = timezone.now()
    with transaction.atomic():
        invitation_pending(organisation=organisation).filter(
            username=username, email=email
        ).delete()
        invitation = Invitation.objects.create(
            organisation=organisation,
            username=username,
            email=email,
            role=role,
            invited_by=by,
            token_hash=_token_hash(token),
            expires_at=now + timedelta(days=settings.INVITATION_TTL_DAYS),
        )
        audit_record(
            action=AuditLog.Action.INVITATION_SENT,
            actor=by,
            organisation=organisation,
            target=invitation.invitee,
            ip=ip,
            details={"invitation": invitation.pk, "role": role},
        )
    return NewInvitation(invitation=invitation, token=token)


def invitation_pending(*, organisation: Organisation | None = None) -> QuerySet[Invitation]:
    """Invitations nobody answered yet that have not expired."""
    pending = Invitation.objects.filter(
        accepted_at__isnull=True, declined_at__isnull=True, expires_at__gt=timezone.now()
    ).select_related("organisation", "invited_by")
    return pending if organisation is None else pending.filter(organisation=organisation)


def invitation_list(*, user: User) -> QuerySet[Invitation]:
    """The pending invitations addressed to the user's username (email invitations arrive as
    links: see the module docstring)."""
    return invitation_pending().filter(username=user.get_username())


def _addressed_to(invitation: Invitation, *, user: User, token: str | None) -> bool:
    if token is not None and not hmac.compare_digest(invitation.token_hash, _token_hash(token)):
        return False
    if invitation.username:
        return invitation.username == user.get_username()
    return token is not None and bool(user.email) and invitation.email == user.email.lower()


def invitation_access(
    *, user: User, invitation_id: int | None = None, token: str | None = None
) -> Invitation | None:
    """The pending invitation for this user, by id (username invitations) or by its link's
    token (either kind); None for anything else, someone else's invitations included."""
    pending = invitation_pending()
    if token is not None:
        invitation = pending.filter(token_hash=_token_hash(token)).first()
    elif invitation_id is not None:
        invitation = pending.filter(pk=invitation_id).first()
    else:
        return None
    if invitation is None or not _addressed_to(invitation, user=user, token=token):
        return None
    return invitation


def _answer_locked(invitation: Invitation) -> Invitation:
    """The invitation row locked for this transaction; refused once answered or expired."""
    locked = Invitation.objects.select_for_update().get(pk=invitation.pk)
    if locked.state != "pending":
        raise ValidationError(f"This invitation is {locked.state}.")
    return locked


def invitation_accept(
    *, invitation: Invitation, user: User, token: str | None = None, ip: str | None = None
) -> Membership:
    """The invitee's consent: they become a member with the invited role. An existing
    membership keeps its role (an invitation neither promotes nor demotes anyone)."""
    if not _addressed_to(invitation, user=user, token=token):
        raise PermissionDenied("This invitation is not addressed to you.")
    with transaction.atomic():
        locked = _answer_locked(invitation)
        existing = Membership.objects.filter(user=user, organisation=locked.organisation).first()
        membership = existing or membership_set(
            organisation=locked.organisation, user=user, role=locked.role, by=user, ip=ip
        )
        locked.accepted_at, locked.accepted_by = timezone.now(), user
        locked.save(update_fields=["accepted_at", "accepted_by"])
        audit_record(
            action=AuditLog.Action.INVITATION_ACCEPTED,
            actor=user,
            organisation=locked.organisation,
            target=user.get_username(),
            ip=ip,
            details={"invitation": locked.pk, "role": membership.role},
        )
    return membership


def invitation_decline(
    *, invitation: Invitation, user: User, token: str | None = None, ip: str | None = None
) -> None:
    if not _addressed_to(invitation, user=user, token=token):
        raise PermissionDenied("This invitation is not addressed to you.")
    with transaction.atomic():
        locked = _answer_locked(invitation)
        locked.declined_at = timezone.now()
        locked.save(update_fields=["declined_at"])
        audit_record(
            action=AuditLog.Action.INVITATION_DECLINED,
            actor=user,
            organisation=locked.organisation,
            target=user.get_username(),
            ip=ip,
            details={"invitation": locked.pk},
        )


def invitation_revoke(*, invitation: Invitation, by: User) -> None:
    """An admin takes back an invitation nobody answered yet."""
    if not invitation_may_invite(user=by, organisation=invitation.organisation):
        raise PermissionDenied("Only the organisation's admins revoke its invitations.")
    Invitation.objects.filter(
        Q(pk=invitation.pk), accepted_at__isnull=True, declined_at__isnull=True
    ).delete()


def membership_leave(*, user: User, organisation: Organisation, ip: str | None = None) -> None:
    """Leave an organisation (not your personal one). Your keys there are revoked, so they
    stay dead should you join again; its operators no longer see your sign-ins, and a
    two-factor it required is yours to turn off."""
    if organisation.personal_owner_id == user.pk:
        raise ValidationError("You cannot leave your personal organisation.")
    with transaction.atomic():
        membership = (
            Membership.objects.select_for_update()
            .filter(user=user, organisation=organisation)
            .first()
        )
        if membership is None:
            raise ValidationError("You are not a member of this organisation.")
        for key in ApiKey.objects.filter(
            user=user, organisation=organisation, revoked_at__isnull=True
        ):
            api_key_revoke(key=key, by=user, ip=ip)
        membership.delete()
        audit_record(
            action=AuditLog.Action.MEMBERSHIP_LEFT,
            actor=user,
            organisation=organisation,
            target=user.get_username(),
            ip=ip,
            details={"role": membership.role},
        )
