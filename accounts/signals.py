"""Audit entries for sign-in events and admin edits; budget and allowed-models cache
invalidation."""

from __future__ import annotations

from functools import partial
from typing import Any

from django.contrib.admin.models import LogEntry
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.http import HttpRequest

from accounts.models import AuditLog, Budget, Organisation, User
from accounts.quotas import budgets_forget
from accounts.selectors import organisation_allowed_models_forget
from accounts.services import audit_record


def client_ip(request: HttpRequest | None) -> str | None:
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None


@receiver(user_logged_in)
def _signed_in(sender: Any, request: HttpRequest | None, user: User, **kwargs: Any) -> None:
    audit_record(
        action=AuditLog.Action.SIGN_IN,
        actor=user,
        target=user.get_username(),
        ip=client_ip(request),
    )


@receiver(user_logged_out)
def _signed_out(sender: Any, request: HttpRequest | None, user: User | None, **kwargs: Any) -> None:
    if user is not None:
        audit_record(
            action=AuditLog.Action.SIGN_OUT,
            actor=user,
            target=user.get_username(),
            ip=client_ip(request),
        )


@receiver(user_login_failed)
def _sign_in_failed(
    sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    username = str(credentials.get("username", ""))[:150]  # never the password (it is masked)
    actor = User.objects.filter(username=username).first() if username else None
    audit_record(
        action=AuditLog.Action.SIGN_IN_FAILED,
        actor=actor,
        target=username,
        ip=client_ip(request),
    )


@receiver(post_save, sender=LogEntry)
def _admin_edit(sender: Any, instance: LogEntry, created: bool, **kwargs: Any) -> None:
    """Every add, change and delete made in the admin, with who made it. (Django bulk-creates
    the entries of a multi-object delete, without signals: OrganisationScopedAdmin passes
    those to audit_admin_edit itself.)"""
    if created:
        audit_admin_edit(instance)


def audit_admin_edit(instance: LogEntry) -> None:
    content_type = (
        ContentType.objects.get_for_id(instance.content_type_id)
        if instance.content_type_id
        else None
    )
    what = f"{content_type.app_label}.{content_type.model}" if content_type else "?"
    audit_record(
        action=AuditLog.Action.ADMIN_EDIT,
        actor=instance.user,  # type: ignore[arg-type]
        target=f"{what} #{instance.object_id}: {instance.object_repr}",
        details={
            "flag": {1: "added", 2: "changed", 3: "deleted"}.get(instance.action_flag, "?"),
            "change": instance.get_change_message(),
        },
    )


@receiver([post_save, post_delete], sender=Budget)
def _budget_changed(sender: Any, instance: Budget, **kwargs: Any) -> None:
    # Now, and again after the commit, so no reader caches the old rules in between.
    budgets_forget(organisation_id=instance.organisation_id)
    transaction.on_commit(partial(budgets_forget, organisation_id=instance.organisation_id))


@receiver(post_save, sender=Organisation)
def _organisation_changed(sender: Any, instance: Organisation, **kwargs: Any) -> None:
    """Its allowed models (a tenant feature) are cached per send: drop them now and after
    the commit (a send in between may have cached the old ones)."""
    organisation_allowed_models_forget(organisation_id=instance.pk)
    transaction.on_commit(partial(organisation_allowed_models_forget, organisation_id=instance.pk))
