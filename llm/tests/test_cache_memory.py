"""Memory the cache holds: warming an FAQ file embeds it a bounded batch at a time (one pass over
4,726 questions peaked near 9 GB resident), and the lookup path's per-process caches stay
within their bounds however many distinct questions are asked."""

from __future__ import annotations

import json

import numpy as np
import pytest
from django.core.management import call_command
from langchain_core.messages import HumanMessage, SystemMessage

from llm.cache import lookup_start, lookup_stored
from llm.cache.lexical.profile import profile
from llm.cache.lexical.rewrite import normalise
from llm.cache.semantic import _indexes, indexes_forget
from llm.cache.service import _lookup_semantic
from llm.cache.warm import EMBED_BATCH, FaqItem, cache_warm
from llm.cache_models import CacheEntry
from llm.catalog import default_alias
from llm.embeddings import embed_one, embedder

TOPICS = ["password", "invoice", "refund", "account", "plan", "export", "team", "login"]


def faq(count: int) -> list[dict[str, str]]:
    return [
        {"question": f"How do I change the {TOPICS[i % 8]} of item {i}?", "answer": f"Answer {i}."}
        for i in range(count)
    ]


@pytest.mark.django_db
def test_warming_embeds_a_large_faq_file_a_bounded_batch_at_a_time(
    tmp_path, organisation, monkeypatch
):
    items = faq(2 * EMBED_BATCH + 10)
    path = tmp_path / "faq.json"
    path.write_text(json.dumps(items))
    model = embedder()
    real, batches = model.embed, []

    def counted(texts: list[str]):  # the real model, its batch sizes noted
        batches.append(len(texts))
        return real(texts)

    monkeypatch.setattr(model, "embed", counted)
    call_command("cache_warm", "--org", organisation.slug, "--file", str(path))
    monkeypatch.undo()

    assert sum(batches) == len(items)
    assert max(batches) <= EMBED_BATCH, f"{max(batches)} questions in one pass"
    entries = {e.question: e for e in CacheEntry.objects.filter(organisation=organisation)}
    assert len(entries) == len(items)
    for item in (items[0], items[EMBED_BATCH], items[-1]):  # each batch kept its own order
        stored = np.frombuffer(bytes(entries[item["question"]].embedding), dtype=np.float32)
        alone = embed_one(normalise(item["question"]))
        assert float(stored @ alone) > 0.9999


@pytest.mark.django_db
def test_distinct_lookups_keep_the_per_process_indexes_within_their_bound(
    owner, organisation, other_organisation, settings
):
    """Many distinct questions to more tenants than CACHE_SEMANTIC_INDEXES: the process keeps
    at most that many indexes, each with at most one profile per stored question."""
    settings.CACHE_SEMANTIC_INDEXES = 1
    indexes_forget()
    alias = default_alias()
    for org in (organisation, other_organisation):
        cache_warm(organisation=org, items=[FaqItem(q["question"], q["answer"]) for q in faq(12)])
    for i in range(120):
        org = (organisation, other_organisation)[i % 2]
        question = f"How can I change the {TOPICS[i % 8]} of item {i % 12} (case {i})?"
        messages = [SystemMessage(settings.LLM_SYSTEM_PROMPT), HumanMessage(question)]
        lookup = lookup_start(
            alias=alias, messages=messages, organisation_id=org.pk, owner_id=owner.pk
        )
        lookup_stored(lookup)
        assert lookup.index is not None and lookup.request is not None
        lookup.vector = embed_one(normalise(lookup.request.question))
        _lookup_semantic(lookup)  # what lookup_similar runs off the event loop
        assert len(_indexes) <= 1
        assert len(lookup.index._profiles) <= len(lookup.index) == 12
    assert profile.cache_info().currsize <= (profile.cache_info().maxsize or 0)
