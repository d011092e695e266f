"""FAQ entries, written by an operator, put in an organisation's cache ahead of any question.

The file (YAML or JSON) is a list of items, or {"entries": [...]}, each
`{question: ..., answer: ..., paraphrases: [...]}` (`q`/`a` also accepted). Every question and
paraphrase becomes an entry under the alias and system prompt first questions are asked with,
so a verbatim question hits exactly and a reworded one semantically. FAQ entries are served
even where model replies are not cached (temperature > 0): an operator wrote them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings

from accounts.models import Organisation
from llm.cache.entries import entry_store
from llm.cache.keys import CacheRequest, namespace_of
from llm.cache.lexical.rewrite import normalise
from llm.cache.policy import params_for, policy_for
from llm.cache.semantic import vector_bytes
from llm.cache_models import CacheEntry
from llm.catalog import default_alias
from llm.embeddings import Vectors, embedder

FAQ_TTL = 30 * 86400
# Questions embedded per forward pass. One pass over a whole FAQ file held ~2 MB of activations
# per question at once (bench/cache_bench.py's 4,726 questions: over 5 GB resident and rising
# when stopped); 64 at a time add ~0.2 GB to the loaded model, whatever the file's length.
EMBED_BATCH = 64


@dataclass(frozen=True)
class FaqItem:
    question: str
    answer: str
    paraphrases: tuple[str, ...] = field(default_factory=tuple)


class FaqFileError(ValueError):
    pass


def faq_read(path: Path) -> list[FaqItem]:
    """Items of an FAQ file; FaqFileError says what is wrong with it."""
    text = path.read_text(encoding="utf-8")
    try:
        data: Any = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise FaqFileError(
            f"{path}: not valid {path.suffix.lstrip('.') or 'YAML'}: {exc}"
        ) from None
    if isinstance(data, dict):
        data = data.get("entries")
    if not isinstance(data, list):
        raise FaqFileError(f"{path}: expected a list of {{question, answer}} items")
    items = []
    for number, raw in enumerate(data, start=1):
        if not isinstance(raw, dict):
            raise FaqFileError(f"{path}: item {number} is not a mapping")
        question, answer = raw.get("question", raw.get("q")), raw.get("answer", raw.get("a"))
        paraphrases = raw.get("paraphrases", [])
        if not isinstance(question, str) or not question.strip():
            raise FaqFileError(f"{path}: item {number} has no question")
        if not isinstance(answer, str) or not answer.strip():
            raise FaqFileError(f"{path}: item {number} has no answer")
        if not isinstance(paraphrases, list) or not all(isinstance(p, str) for p in paraphrases):
            raise FaqFileError(f"{path}: item {number}: paraphrases must be a list of strings")
        items.append(
            FaqItem(question.strip(), answer.strip(), tuple(p for p in paraphrases if p.strip()))
        )
    return items


def _embed_all(questions: list[str]) -> dict[str, Vectors]:
    """Each question's vector, EMBED_BATCH questions per pass of the model."""
    model = embedder()
    vectors: dict[str, Vectors] = {}
    for at in range(0, len(questions), EMBED_BATCH):
        batch = questions[at : at + EMBED_BATCH]
        vectors.update(zip(batch, model.embed([normalise(q) for q in batch]), strict=True))
    return vectors


def cache_warm(
    *, organisation: Organisation, items: list[FaqItem], alias: str = "", ttl: int = FAQ_TTL
) -> int:
    """Store the items as FAQ entries of `organisation`; returns how many questions."""
    alias = alias or default_alias()
    params = params_for(alias)
    policy = policy_for(organisation.pk)
    pairs = [(q, item.answer) for item in items for q in (item.question, *item.paraphrases)]
    semantic = [q for q, _ in pairs if len(q) <= settings.CACHE_SEMANTIC_MAX_CHARS]
    vectors = _embed_all(semantic)
    for question, answer in pairs:
        request = CacheRequest(
            namespace=namespace_of(organisation_id=organisation.pk, owner_id=None),
            organisation_id=organisation.pk,
            alias=alias,
            params=params,
            system=settings.LLM_SYSTEM_PROMPT,
            history=(),
            question=question,
        )
        vector = vectors.get(question)
        entry_store(
            request,
            answer=answer,
            ttl=ttl,
            max_entries=policy.max_entries,
            embedding=vector_bytes(vector) if vector is not None else None,
            kind=CacheEntry.Kind.FAQ,
            replace=True,
            provider="faq",
        )
    return len(pairs)
