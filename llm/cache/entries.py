"""Writes of the cache: store an entry (both layers), evict beyond the bound (LRU), purge
(entry, organisation, all), and count hits, savings and lookups."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from llm.cache.exact import Payload, exact_delete, exact_put
from llm.cache.keys import CacheRequest
from llm.cache.semantic import version_bump
from llm.cache_models import CacheEntry, CacheHit, CacheStat

logger = logging.getLogger(__name__)


def entry_store(
    request: CacheRequest,
    *,
    answer: str,
    ttl: int,
    max_entries: int,
    embedding: bytes | None = None,
    kind: str = CacheEntry.Kind.REPLY,
    replace: bool = False,
    **fields: Any,
) -> CacheEntry:
    """Save an answer for `request` in its tenant: the record (with the vector, for semantic
    matching) and the exact key. An entry already stored for the same request is kept unless
    `replace` (a regenerated reply, an FAQ warmed again). Then the tenant's bound holds."""
    now = timezone.now()
    values: dict[str, Any] = {
        "organisation_id": request.organisation_id,
        "kind": kind,
        "scope": request.scope if embedding is not None else "",
        "question": request.question,
        "answer": answer,
        "embedding": embedding,
        "alias": request.alias,
        "last_used_at": now,
        "expires_at": now + timedelta(seconds=ttl),
        **fields,
    }
    entry = CacheEntry.objects.filter(namespace=request.namespace, key=request.key).first()
    if entry is None or replace or entry.expires_at <= now:
        try:
            with transaction.atomic():
                entry, _ = CacheEntry.objects.update_or_create(
                    namespace=request.namespace, key=request.key, defaults=values
                )
        except IntegrityError:  # a concurrent twin stored the same request first
            entry = CacheEntry.objects.get(namespace=request.namespace, key=request.key)
    remaining = max(1, int((entry.expires_at - now).total_seconds()))
    exact_put(
        request.namespace,
        request.key,
        Payload(entry=entry.pk, kind=entry.kind, answer=entry.answer, model=entry.model),
        ttl=remaining,
    )
    if entry.embedding is not None:
        version_bump(request.namespace)
    entries_evict(namespace=request.namespace, max_entries=max_entries)
    return entry


def entries_evict(*, namespace: str, max_entries: int) -> int:
    """Drop the tenant's expired entries, then its least recently used replies beyond
    `max_entries` (FAQ entries are bounded by their file and kept). Returns how many went."""
    now = timezone.now()
    entries = CacheEntry.objects.filter(namespace=namespace)
    doomed = list(entries.filter(expires_at__lte=now).values_list("pk", "namespace", "key"))
    replies = entries.filter(expires_at__gt=now, kind=CacheEntry.Kind.REPLY)
    excess = replies.count() - max_entries
    if excess > 0:
        doomed += list(
            replies.order_by("last_used_at", "pk").values_list("pk", "namespace", "key")[:excess]
        )
    return _delete(doomed)


def _delete(rows: Iterable[tuple[int, str, str]]) -> int:
    rows = list(rows)
    if not rows:
        return 0
    # Redis first: a key whose record is gone is a miss anyway (hits are checked against the
    # record), but a record whose key survived would be counted as an entry that no longer is.
    exact_delete((namespace, key) for _, namespace, key in rows)
    deleted, _ = CacheEntry.objects.filter(pk__in=[pk for pk, _, _ in rows]).delete()
    for namespace in {namespace for _, namespace, _ in rows}:
        version_bump(namespace)
    return deleted


def entries_purge(
    *,
    entries: QuerySet[CacheEntry] | None = None,
    organisation_id: int | None = None,
    namespace: str | None = None,
    everything: bool = False,
    expired_only: bool = False,
) -> int:
    """Invalidate: the given entries, one organisation's (or namespace's), or all of them;
    `expired_only` keeps what is still fresh. Returns how many entries were removed."""
    if entries is None:
        if everything:
            entries = CacheEntry.objects.all()
        elif organisation_id is not None:
            entries = CacheEntry.objects.filter(
                Q(organisation_id=organisation_id) | Q(namespace=f"org:{organisation_id}")
            )
        elif namespace is not None:
            entries = CacheEntry.objects.filter(namespace=namespace)
        else:
            raise ValueError("say what to purge: entries, an organisation, a namespace or all")
    if expired_only:
        entries = entries.filter(expires_at__lte=timezone.now())
    removed = 0
    batch: list[tuple[int, str, str]] = []
    for row in entries.values_list("pk", "namespace", "key").iterator(chunk_size=1000):
        batch.append(row)
        if len(batch) >= 1000:
            removed += _delete(batch)
            batch = []
    return removed + _delete(batch)


def hit_record(
    *,
    message_id: int,
    entry_id: int,
    namespace: str,
    organisation_id: int | None,
    kind: str,
    similarity: float | None,
    saved_cost: Decimal | None,
    saved_tokens: int | None,
) -> None:
    """A reply was answered from the cache: count it on the entry (LRU, savings) and keep
    the savings of this message."""
    now = timezone.now()
    CacheEntry.objects.filter(pk=entry_id).update(
        hits=F("hits") + 1,
        last_used_at=now,
        saved_cost=F("saved_cost") + (saved_cost or Decimal(0)),
    )
    CacheHit.objects.get_or_create(
        message_id=message_id,
        defaults={
            "entry_id": entry_id,
            "namespace": namespace,
            "organisation_id": organisation_id,
            "kind": kind,
            "similarity": similarity,
            "saved_cost": saved_cost,
            "saved_tokens": saved_tokens,
        },
    )


def stat_add(*, namespace: str, organisation_id: int | None, **counts: int | Decimal) -> None:
    """Add to today's counters of a tenant (lookups, exact_hits, semantic_hits, stores,
    saved_cost, saved_tokens)."""
    counts = {name: value for name, value in counts.items() if value}
    if not counts:
        return
    day = timezone.now().date()
    updates = {name: F(name) + value for name, value in counts.items()}
    rows = CacheStat.objects.filter(namespace=namespace, day=day)
    if rows.update(**updates):
        return
    try:
        with transaction.atomic():
            CacheStat.objects.create(
                namespace=namespace, organisation_id=organisation_id, day=day, **counts
            )
    except IntegrityError:  # created meanwhile by another reply
        rows.update(**updates)
