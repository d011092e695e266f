"""How one reply meets the cache; llm/streaming.py reply_stream calls these three.

1. `reply_lookup`, once the prompt is built and before any provider is called: the exact key,
   then (first questions only, unless the organisation allows follow-ups) the nearest stored
   question of the same tenant and scope. Any failure here is logged and counts as a miss:
   the cache never stops a reply.
2. `reply_replay`, on a hit, instead of the provider: the stored text goes through the same
   coalescer as live tokens, at CACHE_REPLAY_CHARS_PER_SECOND, so clients see ordinary deltas
   and a `done` whose provider is "cache", cost 0 and `cached: true`.
3. `reply_settle`, after the reply is final: a hit is recorded with its savings; a miss is
   stored only if the reply completed (never failed, cancelled, empty or after a failover)
   and the request may be cached (temperature 0, or the organisation opted in).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone
from langchain_core.messages import BaseMessage

from chat.models import Message
from llm.cache.entries import entry_store, hit_record, stat_add
from llm.cache.exact import exact_get
from llm.cache.keys import CacheRequest, namespace_of, request_from
from llm.cache.policy import Policy, params_for, policy_for
from llm.cache.semantic import ScopeIndex, index_for, vector_bytes
from llm.cache.text import normalise, profile
from llm.cache_models import CacheEntry
from llm.catalog import DeploymentConfig, default_alias
from llm.embeddings import Vectors, embed_one
from llm.failover import RoutingRecord

logger = logging.getLogger(__name__)

REPLAY_PIECE_CHARS = 16  # what one "token" of a replayed answer is


@dataclass(frozen=True)
class Hit:
    entry_id: int
    kind: str  # exact | semantic
    answer: str
    model: str
    similarity: float | None = None
    saved_cost: Decimal | None = None
    saved_tokens: int | None = None


@dataclass
class Lookup:
    """What the cache knows about one reply, from lookup to settle."""

    request: CacheRequest | None = None
    policy: Policy | None = None
    replayable: bool = False  # model replies may be stored and replayed for this request
    semantic: bool = False  # semantic matching applies (policy, first turn, length)
    regenerate: bool = False  # the user asked for a fresh answer: no lookup
    index: ScopeIndex | None = None
    vector: Vectors | None = None
    hit: Hit | None = None


class _State(Protocol):
    """The part of llm.streaming.ReplyState a replay fills in."""

    routing: RoutingRecord | None
    prompt_tokens: int | None
    completion_tokens: int | None


@dataclass
class CacheRoutingRecord(RoutingRecord):
    """Routing of a reply served from the cache: provider "cache", zero prices, and the
    entry that answered (saved as Message.routing)."""

    hit: Hit | None = None

    def as_json(self) -> dict[str, Any]:
        hit = self.hit
        assert hit is not None
        return {
            "alias": self.alias,
            "cache": hit.kind,
            "entry": hit.entry_id,
            "similarity": round(hit.similarity, 4) if hit.similarity is not None else None,
            "saved_cost": str(hit.saved_cost) if hit.saved_cost is not None else None,
            "saved_tokens": hit.saved_tokens,
        }


def _alias_of(reply: Message) -> str:
    # The same alias llm/streaming.py routes the reply to.
    return str(reply.routing.get("alias") or reply.provider or default_alias())


def _embed(question: str) -> Vectors:
    return embed_one(normalise(question))


async def reply_lookup(*, reply: Message, messages: list[BaseMessage]) -> Lookup:
    """Look the reply's request up; `hit` is set when the cache can answer it."""
    try:
        lookup = await sync_to_async(_lookup_prepare)(reply, messages)
        if lookup.hit is None and lookup.index is not None and lookup.request is not None:
            # CPU work off the event loop, and off the thread Django keeps for the database.
            lookup.vector = await sync_to_async(_embed, thread_sensitive=False)(
                lookup.request.question
            )
            await sync_to_async(_lookup_semantic)(lookup)
        return lookup
    except Exception:
        logger.warning("cache lookup failed for reply %s; generating", reply.pk, exc_info=True)
        return Lookup()


def _lookup_prepare(reply: Message, messages: list[BaseMessage]) -> Lookup:
    if not settings.CACHE_ENABLED:
        return Lookup()  # off for everyone (policy_for): no need to read the policy row
    conversation = reply.conversation
    organisation_id = getattr(conversation, "organisation_id", None)
    policy = policy_for(organisation_id)
    if not policy.enabled:
        return Lookup()
    params = params_for(_alias_of(reply))
    request = request_from(
        messages,
        namespace=namespace_of(organisation_id=organisation_id, owner_id=conversation.owner_id),
        organisation_id=organisation_id,
        alias=_alias_of(reply),
        params=params,
    )
    if request is None:
        return Lookup()
    lookup = Lookup(
        request=request,
        policy=policy,
        replayable=params.deterministic or policy.cache_sampled,
        semantic=policy.semantic_enabled
        and (request.first_turn or policy.mid_conversation)
        and len(request.question) <= settings.CACHE_SEMANTIC_MAX_CHARS,
        regenerate=reply.reply_to_id is not None
        and Message.objects.filter(reply_to_id=reply.reply_to_id, role=Message.Role.ASSISTANT)
        .exclude(pk=reply.pk)
        .exists(),
    )
    if lookup.regenerate:
        return lookup
    payload = exact_get(request.namespace, request.key)
    if payload is not None and (lookup.replayable or payload["kind"] == CacheEntry.Kind.FAQ):
        # The record decides: a purged or expired entry whose key lingers is a miss.
        row = _live_entries(request).filter(pk=payload["entry"], key=request.key).first()
        if row is not None:
            lookup.hit = _hit(row, "exact", answer=payload["answer"])
            return lookup
    if lookup.semantic:
        index = index_for(request.namespace, request.scope)
        if len(index) and (lookup.replayable or bool(index.faq.any())):
            lookup.index = index
    return lookup


def _live_entries(request: CacheRequest) -> Any:
    return CacheEntry.objects.filter(namespace=request.namespace, expires_at__gt=timezone.now())


def _hit(row: CacheEntry, kind: str, *, answer: str, similarity: float | None = None) -> Hit:
    tokens = (row.prompt_tokens or 0) + (row.completion_tokens or 0)
    return Hit(
        entry_id=row.pk,
        kind=kind,
        answer=answer,
        model=row.model,
        similarity=similarity,
        saved_cost=row.cost,
        saved_tokens=tokens or None,
    )


def _lookup_semantic(lookup: Lookup) -> None:
    request, policy, index = lookup.request, lookup.policy, lookup.index
    if request is None or policy is None or index is None or lookup.vector is None:
        return
    found = index.search(
        lookup.vector,
        profile(request.question),
        threshold=policy.threshold,
        faq_only=not lookup.replayable,
    )
    if found is None:
        return
    entry_id, similarity = found
    row = _live_entries(request).filter(pk=entry_id, scope=request.scope).first()
    if row is not None:
        lookup.hit = _hit(row, "semantic", answer=row.answer, similarity=similarity)


async def reply_replay(
    lookup: Lookup, sink: Callable[[str], Awaitable[None]], state: _State
) -> None:
    """Stream the cached answer into `sink` (the reply's coalescer) like a live model."""
    hit = lookup.hit
    assert hit is not None and lookup.request is not None
    state.routing = CacheRoutingRecord(
        alias=lookup.request.alias,
        answered_by=DeploymentConfig(
            name="cache",
            kind="cache",
            model=hit.model,
            alias=lookup.request.alias,
            key="cache",
            input_price=Decimal(0),
            output_price=Decimal(0),
        ),
        hit=hit,
    )
    state.prompt_tokens, state.completion_tokens = 0, 0
    pace = settings.CACHE_REPLAY_CHARS_PER_SECOND
    text = hit.answer
    for start in range(0, len(text), REPLAY_PIECE_CHARS):
        piece = text[start : start + REPLAY_PIECE_CHARS]
        await sink(piece)
        if pace > 0:
            await asyncio.sleep(len(piece) / pace)


async def reply_settle(lookup: Lookup, finished: Message | None) -> None:
    """After the reply is final (`finished` is None if someone else finished it)."""
    if finished is None or lookup.request is None:
        return
    try:
        store = lookup.hit is None and _storable(lookup, finished)
        if store and lookup.semantic and lookup.vector is None:
            lookup.vector = await sync_to_async(_embed, thread_sensitive=False)(
                lookup.request.question
            )
        await sync_to_async(_settle)(lookup, finished, store)
    except Exception:
        logger.warning("cache not updated for reply %s", finished.pk, exc_info=True)


def _storable(lookup: Lookup, message: Message) -> bool:
    return (
        lookup.replayable
        and message.status == Message.Status.COMPLETE
        and not message.error_code
        and bool(message.content.strip())
        and len(message.content) <= settings.CACHE_MAX_ANSWER_CHARS
        # An answer from a fallback model is not what this alias would normally give.
        and not (message.routing or {}).get("failover")
    )


def _settle(lookup: Lookup, message: Message, store: bool) -> None:
    request, policy, hit = lookup.request, lookup.policy, lookup.hit
    assert request is not None and policy is not None
    counts: dict[str, int | Decimal] = {"lookups": 0 if lookup.regenerate else 1}
    if hit is not None and message.status == Message.Status.COMPLETE:
        hit_record(
            message_id=message.pk,
            entry_id=hit.entry_id,
            namespace=request.namespace,
            organisation_id=request.organisation_id,
            kind=hit.kind,
            similarity=hit.similarity,
            saved_cost=hit.saved_cost,
            saved_tokens=hit.saved_tokens,
        )
        counts[f"{hit.kind}_hits"] = 1
        counts["saved_cost"] = hit.saved_cost or Decimal(0)
        counts["saved_tokens"] = hit.saved_tokens or 0
    elif store:
        entry_store(
            request,
            answer=message.content,
            ttl=policy.ttl,
            max_entries=policy.max_entries,
            embedding=vector_bytes(lookup.vector) if lookup.vector is not None else None,
            replace=lookup.regenerate,
            provider=message.provider,
            model=message.model,
            cost=message.cost,
            prompt_tokens=message.prompt_tokens,
            completion_tokens=message.completion_tokens,
            source_message_id=message.pk,
        )
        counts["stores"] = 1
    stat_add(namespace=request.namespace, organisation_id=request.organisation_id, **counts)
