"""The semantic layer: nearest stored question in the same tenant and prompt scope.

Vectors are kept in the database with their entries (CacheEntry.embedding, 384 float32) and
searched in-process by brute force: one matrix-vector product with NumPy. At the sizes a
tenant's cache is bounded to (CACHE_MAX_ENTRIES, 2,000 by default) that takes well under a
millisecond, and 10,000 vectors take ~1 ms — less than embedding the question itself (see
docs/caching.md). Each process keeps the matrices it has used (LRU, CACHE_SEMANTIC_INDEXES)
and reloads one when its tenant's version stamp in the shared cache has changed, i.e. after
any store, eviction or purge by any process.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from llm.cache.exact import PREFIX
from llm.cache.judge import judge
from llm.cache.lexical.profile import Profile, profile
from llm.cache.lexical.verdict import JUDGE_CANDIDATES, floor, judge_may_overrule, match
from llm.cache_models import CacheEntry
from llm.embeddings import Vectors

TOP_K = 8  # candidates above the threshold checked lexically, best first


def _version_key(namespace: str) -> str:
    return f"{PREFIX}:ver:{namespace}"


def version_get(namespace: str) -> str:
    return str(cache.get(_version_key(namespace)) or "")


def version_bump(namespace: str) -> None:
    """Tell every process its semantic index of this tenant is stale."""
    cache.set(_version_key(namespace), uuid.uuid4().hex, timeout=None)


@dataclass
class ScopeIndex:
    """The entries of one tenant and scope that have a vector."""

    version: str
    ids: np.ndarray  # int64
    faq: np.ndarray  # bool: operator-written entries (served even to sampled requests)
    vectors: Vectors  # (n, dim), rows L2-normalised
    questions: list[str]
    _profiles: dict[int, Profile] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def profile_at(self, row: int) -> Profile:
        if row not in self._profiles:
            self._profiles[row] = profile(self.questions[row])
        return self._profiles[row]

    def search(
        self,
        vector: Vectors,
        question: Profile,
        *,
        threshold: float,
        faq_only: bool,
        judge_threshold: float | None = None,
    ) -> tuple[int, float] | None:
        """(entry id, similarity) of the most similar question that passes the lexical check
        at its similarity (llm/cache/lexical/: at or above the threshold, or a little below it
        when every content word pairs), else None. With a `judge_threshold`, candidates the
        check refused for a soft reason get a second look from the cross-encoder judge
        (llm/cache/judge.py), in one batch: the most similar it scores at or above the
        threshold wins."""
        if not len(self):
            return None
        similarities = self.vectors @ vector
        if faq_only:
            similarities = np.where(self.faq, similarities, -1.0)
        count = min(TOP_K, len(similarities))
        top = np.argpartition(-similarities, count - 1)[:count]
        second_look: list[tuple[int, float]] = []
        for row in top[np.argsort(-similarities[top])]:
            similarity = float(similarities[row])
            if similarity < floor(threshold):
                break
            stored = self.profile_at(int(row))
            if not match(question, stored, similarity, threshold):
                return int(self.ids[row]), similarity
            if (
                judge_threshold is not None
                and len(second_look) < JUDGE_CANDIDATES
                and judge_may_overrule(question, stored, similarity)
            ):
                second_look.append((int(row), similarity))
        if second_look:
            scores = judge().scores(
                [(self.questions[row], question.text) for row, _ in second_look]
            )
            for (row, similarity), score in zip(second_look, scores, strict=True):
                if score >= (judge_threshold or 0.0):
                    return int(self.ids[row]), similarity
        return None


_lock = threading.Lock()
_indexes: OrderedDict[tuple[str, str], ScopeIndex] = OrderedDict()


def index_for(namespace: str, scope: str) -> ScopeIndex:
    """This process's index of a tenant's scope, reloaded from the database when stale."""
    version = version_get(namespace)
    with _lock:
        index = _indexes.get((namespace, scope))
        if index is not None and index.version == version:
            _indexes.move_to_end((namespace, scope))
            return index
    index = _load(namespace, scope, version)
    with _lock:
        _indexes[(namespace, scope)] = index
        _indexes.move_to_end((namespace, scope))
        while len(_indexes) > max(1, settings.CACHE_SEMANTIC_INDEXES):
            _indexes.popitem(last=False)
    return index


def _load(namespace: str, scope: str, version: str) -> ScopeIndex:
    rows = list(
        CacheEntry.objects.filter(
            namespace=namespace,
            scope=scope,
            embedding__isnull=False,
            expires_at__gt=timezone.now(),
        ).values_list("id", "kind", "question", "embedding")
    )
    vectors = [np.frombuffer(bytes(row[3] or b""), dtype=np.float32) for row in rows]
    dim = vectors[0].shape[0] if vectors else 0
    return ScopeIndex(
        version=version,
        ids=np.array([row[0] for row in rows], dtype=np.int64),
        faq=np.array([row[1] == CacheEntry.Kind.FAQ for row in rows], dtype=bool),
        vectors=np.vstack(vectors) if vectors else np.zeros((0, dim), dtype=np.float32),
        questions=[row[2] for row in rows],
    )


def indexes_forget() -> None:
    """Drop every in-process index (tests; a process that wants its memory back)."""
    with _lock:
        _indexes.clear()


def vector_bytes(vector: Vectors) -> bytes:
    return np.asarray(vector, dtype=np.float32).tobytes()
