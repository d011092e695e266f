"""Replies as operators watch them: the ones running now and the ones that failed, within the
organisations an operator may see (None: every organisation, for superusers)."""

from __future__ import annotations

from collections.abc import Collection
from datetime import date

from django.db.models import QuerySet

from chat.models import Message


def _scoped(organisation_ids: Collection[int] | None) -> QuerySet[Message]:
    replies = Message.objects.filter(role=Message.Role.ASSISTANT)
    if organisation_ids is not None:
        replies = replies.filter(conversation__organisation_id__in=list(organisation_ids))
    return replies


def replies_live(*, organisation_ids: Collection[int] | None) -> QuerySet[Message]:
    """Replies waiting for or streaming from a model now, oldest first."""
    return (
        _scoped(organisation_ids)
        .filter(status__in=[Message.Status.PENDING, Message.Status.STREAMING])
        .select_related("conversation__organisation", "conversation__owner")
        .order_by("created_at", "id")
    )


def replies_failed(
    *, organisation_ids: Collection[int] | None, since: date, until: date
) -> QuerySet[Message]:
    """Failed replies between two UTC days, newest first, with their error code and message."""
    return (
        _scoped(organisation_ids)
        .filter(
            status=Message.Status.FAILED,
            created_at__date__gte=since,
            created_at__date__lte=until,
        )
        .select_related("conversation__organisation", "conversation__owner")
        .order_by("-created_at", "-id")
    )
