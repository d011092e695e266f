"""How one model request meets the cache, in plain data: chat/replies/cache.py calls these for
every reply and decides in between what only the chat knows (a regenerate wants a fresh answer).

1. `lookup_start`, once the prompt is built and before any provider is called: is the cache on
   for this tenant, and what is the request (key, scope, question)?
2. `lookup_stored` (not for a regenerate): the exact key, then (first questions only, unless
   the organisation allows follow-ups) whether the semantic index may hold an answer;
   `lookup_similar` then finds the nearest stored question of the same tenant and scope.
   The caller counts any failure as a miss: the cache never stops a reply.
3. `cache_replay`, on a hit, instead of the provider: the stored text goes through the same
   sink (the reply's coalescer) as live tokens, at CACHE_REPLAY_CHARS_PER_SECOND, so clients
   see ordinary deltas and a `done` whose provider is "cache", cost 0 and `cached: true`.
4. `cache_settle`, once the reply is final: a hit is recorded with its savings; a miss is
   stored only if the answer completed (never failed, cancelled, empty or after a failover)
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

from llm.cache.entries import entry_store, hit_record, stat_add
from llm.cache.exact import exact_get
from llm.cache.keys import CacheRequest, namespace_of, request_from
from llm.cache.lexical.profile import profile
from llm.cache.lexical.rewrite import normalise
from llm.cache.policy import Policy, params_for, policy_for
from llm.cache.semantic import ScopeIndex, index_for, vector_bytes
from llm.cache_models import CacheEntry
from llm.catalog import DeploymentConfig
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
    """What the cache knows about one request, from lookup to settle."""

    request: CacheRequest | None = None
    policy: Policy | None = None
    replayable: bool = False  # model replies may be stored and replayed for this request
    semantic: bool = False  # semantic matching applies (policy, first turn, length)
    regenerate: bool = False  # the user asked for a fresh answer: no lookup (the caller says)
    index: ScopeIndex | None = None
    vector: Vectors | None = None
    hit: Hit | None = None


@dataclass(frozen=True)
class Answer:
    """A final reply as the cache sees it: what it said, how it ended, what it cost."""

    source_id: int  # the reply's message id (CacheEntry.source_message, CacheHit.message)
    text: str
    complete: bool  # ended complete, with no error
    failed_over: bool  # answered by a fallback deployment, not the alias's usual one
    provider: str
    model: str
    cost: Decimal | None
    prompt_tokens: int | None
    completion_tokens: int | None


class _State(Protocol):
    """The part of a reply's state a replay fills in (chat/replies/stream.py ReplyState)."""

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


def _embed(question: str) -> Vectors:
    return embed_one(normalise(question))


# --- lookup -------------------------------------------------------------------------------


def lookup_start(
    *, alias: str, messages: list[BaseMessage], organisation_id: int | None, owner_id: int
) -> Lookup:
    """The request to `alias` with `messages`, as the cache of its tenant (the organisation,
    else the owner) keys it; an empty Lookup when the cache is off for that tenant."""
    if not settings.CACHE_ENABLED:
        return Lookup()  # off for everyone (policy_for): no need to read the policy row
    policy = policy_for(organisation_id)
    if not policy.enabled:
        return Lookup()
    params = params_for(alias)
    request = request_from(
        messages,
        namespace=namespace_of(organisation_id=organisation_id, owner_id=owner_id),
        organisation_id=organisation_id,
        alias=alias,
        params=params,
    )
    if request is None:
        return Lookup()
    return Lookup(
        request=request,
        policy=policy,
        replayable=params.deterministic or policy.cache_sampled,
        semantic=policy.semantic_enabled
        and (request.first_turn or policy.mid_conversation)
        and len(request.question) <= settings.CACHE_SEMANTIC_MAX_CHARS,
    )


def lookup_stored(lookup: Lookup) -> None:
    """Find the request by its exact key (sets `hit`), else note the semantic index that may
    hold a near question (`lookup_similar` searches it). Nothing for a regenerate."""
    request = lookup.request
    if request is None or lookup.regenerate:
        return
    payload = exact_get(request.namespace, request.key)
    if payload is not None and (lookup.replayable or payload["kind"] == CacheEntry.Kind.FAQ):
        # The record decides: a purged or expired entry whose key lingers is a miss.
        row = _live_entries(request).filter(pk=payload["entry"], key=request.key).first()
        if row is not None:
            lookup.hit = _hit(row, "exact", answer=payload["answer"])
            return
    if lookup.semantic:
        index = index_for(request.namespace, request.scope)
        if len(index) and (lookup.replayable or bool(index.faq.any())):
            lookup.index = index


async def lookup_similar(lookup: Lookup) -> None:
    """After an exact miss, the nearest stored question of the index `lookup_stored` noted."""
    if lookup.hit is None and lookup.index is not None and lookup.request is not None:
        # CPU work off the event loop, and off the thread Django keeps for the database.
        lookup.vector = await sync_to_async(_embed, thread_sensitive=False)(lookup.request.question)
        await sync_to_async(_lookup_semantic)(lookup)


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
    # The judge's threshold was chosen for the default bar: an organisation that asks for closer
    # matches than that (a higher threshold) is not second-guessed by it.
    judging = settings.CACHE_JUDGE_ENABLED and policy.threshold <= settings.CACHE_SEMANTIC_THRESHOLD
    found = index.search(
        lookup.vector,
        profile(request.question),
        threshold=policy.threshold,
        faq_only=not lookup.replayable,
        judge_threshold=settings.CACHE_JUDGE_THRESHOLD if judging else None,
    )
    if found is None:
        return
    entry_id, similarity = found
    row = _live_entries(request).filter(pk=entry_id, scope=request.scope).first()
    if row is not None:
        lookup.hit = _hit(row, "semantic", answer=row.answer, similarity=similarity)


# --- replay -------------------------------------------------------------------------------


async def cache_replay(
    lookup: Lookup,
    sink: Callable[[str], Awaitable[None]],
    state: _State,
    stop: asyncio.Event | None = None,
) -> None:
    """Stream the cached answer into `sink` (the reply's coalescer) like a live model, until
    `stop` is set (the reply was cancelled)."""
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
        if stop is not None and stop.is_set():
            return
        piece = text[start : start + REPLAY_PIECE_CHARS]
        await sink(piece)
        if pace > 0:
            await asyncio.sleep(len(piece) / pace)


# --- settle -------------------------------------------------------------------------------


async def cache_settle(lookup: Lookup, answer: Answer | None) -> None:
    """Once the reply is final (`answer` is None if someone else finished it)."""
    if answer is None or lookup.request is None:
        return
    try:
        store = lookup.hit is None and _storable(lookup, answer)
        if store and lookup.semantic and lookup.vector is None:
            lookup.vector = await sync_to_async(_embed, thread_sensitive=False)(
                lookup.request.question
            )
        await sync_to_async(_settle)(lookup, answer, store)
    except Exception:
        logger.warning("cache not updated for reply %s", answer.source_id, exc_info=True)


def _storable(lookup: Lookup, answer: Answer) -> bool:
    return (
        lookup.replayable
        and answer.complete
        and bool(answer.text.strip())
        and len(answer.text) <= settings.CACHE_MAX_ANSWER_CHARS
        # An answer from a fallback model is not what this alias would normally give.
        and not answer.failed_over
    )


def _settle(lookup: Lookup, answer: Answer, store: bool) -> None:
    request, policy, hit = lookup.request, lookup.policy, lookup.hit
    assert request is not None and policy is not None
    counts: dict[str, int | Decimal] = {"lookups": 0 if lookup.regenerate else 1}
    if hit is not None and answer.complete:
        hit_record(
            message_id=answer.source_id,
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
            answer=answer.text,
            ttl=policy.ttl,
            max_entries=policy.max_entries,
            embedding=vector_bytes(lookup.vector) if lookup.vector is not None else None,
            replace=lookup.regenerate,
            provider=answer.provider,
            model=answer.model,
            cost=answer.cost,
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens,
            source_message_id=answer.source_id,
        )
        counts["stores"] = 1
    stat_add(namespace=request.namespace, organisation_id=request.organisation_id, **counts)
