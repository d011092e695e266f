"""The reply cache (llm/cache/) from a reply's side: chat gives it plain data and decides what
only chat knows: the reply's model alias and tenant, that a regenerate wants a fresh answer
(never one from the cache; its answer replaces the stored one), and how a final reply ended."""

from __future__ import annotations

import logging

from asgiref.sync import sync_to_async
from django.conf import settings
from langchain_core.messages import BaseMessage

from chat.models import Message
from chat.replies.prompt import reply_alias, reply_options
from core.observability import metrics
from llm.cache import Answer, Lookup, cache_settle, lookup_similar, lookup_start, lookup_stored

logger = logging.getLogger(__name__)


async def reply_lookup(*, reply: Message, messages: list[BaseMessage]) -> Lookup:
    """Look the reply's request up; `hit` is set when the cache can answer it. Any failure is
    logged and counts as a miss: the cache never stops a reply."""
    if not settings.CACHE_ENABLED:
        # Off for everyone (llm/cache/service.py lookup_start): no trip to a thread to learn it.
        metrics.cache_looked_up(None, cacheable=False)
        return Lookup()
    try:
        lookup = await sync_to_async(_lookup_prepare)(reply, messages)
        await lookup_similar(lookup)
        metrics.cache_looked_up(lookup.hit, cacheable=lookup.request is not None)
        return lookup
    except Exception:
        logger.warning("cache lookup failed for reply %s; generating", reply.pk, exc_info=True)
        return Lookup()


def _lookup_prepare(reply: Message, messages: list[BaseMessage]) -> Lookup:
    if reply_options(reply).shapes_text:
        # The caller asked for its own limits or sampling: an answer given under other choices
        # cannot stand in, and this one is not stored for requests that made none.
        return Lookup()
    conversation = reply.conversation  # loaded with the reply (reply_start)
    lookup = lookup_start(
        alias=reply_alias(reply),
        messages=messages,
        organisation_id=conversation.organisation_id,
        owner_id=conversation.owner_id,
    )
    if lookup.request is None:
        return lookup
    lookup.regenerate = _regenerating(reply)
    lookup_stored(lookup)
    return lookup


def _regenerating(reply: Message) -> bool:
    """The reply answers a question that was answered before (reply_regenerate)."""
    return (
        reply.reply_to_id is not None
        and Message.objects.filter(reply_to_id=reply.reply_to_id, role=Message.Role.ASSISTANT)
        .exclude(pk=reply.pk)
        .exists()
    )


async def reply_settle(lookup: Lookup, finished: Message | None) -> None:
    """After the reply is final (`finished` is None if someone else finished it): record a
    hit, or store a complete answer."""
    answer = None
    if finished is not None:
        answer = Answer(
            source_id=finished.pk,
            text=finished.content,
            complete=finished.status == Message.Status.COMPLETE and not finished.error_code,
            failed_over=bool((finished.routing or {}).get("failover")),
            provider=finished.provider,
            model=finished.model,
            cost=finished.cost,
            prompt_tokens=finished.prompt_tokens,
            completion_tokens=finished.completion_tokens,
        )
    await cache_settle(lookup, answer)
