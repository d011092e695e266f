"""The one way events reach sockets: a conversation's channel-layer group.

Publishing from a transaction waits for the commit, so a socket never hears of a row that a
rollback then removes.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)


def conversation_group(conversation_id: int) -> str:
    return f"conversation.{conversation_id}"


async def event_publish(conversation_id: int, event: dict[str, Any]) -> None:
    """Send an event (its `type` names the consumer handler, e.g. chat.delta) to a group."""
    layer = get_channel_layer()
    if layer is not None:
        await layer.group_send(conversation_group(conversation_id), event)


def event_publish_on_commit(conversation_id: int, event: dict[str, Any]) -> None:
    """From sync code: publish once the current transaction commits (at once outside one).

    The row is already saved when this runs, so a channel-layer outage only costs the live
    event: it is logged, and clients recover the state by resuming.
    """

    def publish() -> None:
        try:
            async_to_sync(event_publish)(conversation_id, event)
        except Exception:
            logger.warning(
                "event %s for conversation %s not published",
                event.get("type"),
                conversation_id,
                exc_info=True,
            )

    transaction.on_commit(publish)
