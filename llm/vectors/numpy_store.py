"""The embedded store: vectors in ordinary database rows, searched in memory with NumPy.

Needs no server beyond the database Parley already has, so it works the same in embedded mode
(SQLite) and across production's processes (PostgreSQL): each process loads a scope's matrix
on first search and keeps it (LRU, VECTORS_MEMORY_SCOPES) until the scope's version stamp in
the shared cache changes, which every write bumps once its transaction commits. A search is
one matrix-vector product per scope: ~1 ms at 10,000 vectors and ~10 ms at 100,000 on one
core here (bench/retrieval_bench.py, docs/benchmarks.md).
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.db import transaction

from llm.embeddings import Vectors
from llm.vectors.base import Hit, VectorItem
from llm.vectors.models import StoredVector


@dataclass(frozen=True)
class ScopeMatrix:
    """One scope's vectors, as loaded: keys and a (n, dim) float32 matrix."""

    version: str
    keys: np.ndarray  # int64
    vectors: Vectors

    def top(self, vector: Vectors, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(keys, scores) of the k nearest rows, nearest first."""
        if not len(self.keys) or k <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        scores = self.vectors @ vector
        count = min(k, len(scores))
        rows = np.argpartition(-scores, count - 1)[:count]
        rows = rows[np.argsort(-scores[rows])]
        return self.keys[rows], scores[rows]

    @classmethod
    def of(cls, keys: Sequence[int], vectors: Vectors, version: str = "") -> ScopeMatrix:
        return cls(version, np.asarray(keys, dtype=np.int64), np.asarray(vectors, np.float32))


class NumpyVectorStore:
    name = "numpy"

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._matrices: OrderedDict[str, ScopeMatrix] = OrderedDict()
        self._lock = threading.Lock()

    # --- writes (in the caller's transaction) ------------------------------------------------

    def add(self, items: Sequence[VectorItem]) -> None:
        if not items:
            return
        StoredVector.objects.filter(
            namespace=self.namespace, key__in=[item.key for item in items]
        ).delete()
        StoredVector.objects.bulk_create(
            [
                StoredVector(
                    namespace=self.namespace,
                    key=item.key,
                    scope=item.scope,
                    vector=np.asarray(item.vector, dtype=np.float32).tobytes(),
                )
                for item in items
            ],
            batch_size=500,
        )
        self._bump({item.scope for item in items})

    def delete(self, keys: Collection[int]) -> None:
        rows = StoredVector.objects.filter(namespace=self.namespace, key__in=list(keys))
        scopes = set(rows.values_list("scope", flat=True).distinct())
        rows.delete()
        self._bump(scopes)

    def delete_scopes(self, scopes: Collection[str]) -> None:
        StoredVector.objects.filter(namespace=self.namespace, scope__in=list(scopes)).delete()
        self._bump(set(scopes))

    def _bump(self, scopes: set[str]) -> None:
        """New version stamps now (this transaction's own searches see its writes) and again
        once it commits (a process that reloaded in between read the rows without them)."""

        def bump() -> None:
            cache.set_many({self._version_key(s): uuid.uuid4().hex for s in scopes}, None)

        if scopes:
            bump()
            transaction.on_commit(bump)

    # --- reads -------------------------------------------------------------------------------

    def search(self, vector: Vectors, *, scopes: Collection[str], k: int) -> list[Hit]:
        hits: list[Hit] = []
        for scope in sorted(set(scopes)):
            keys, scores = self.matrix(scope).top(vector, k)
            hits += [Hit(int(key), scope, float(s)) for key, s in zip(keys, scores, strict=True)]
        hits.sort(key=lambda hit: -hit.score)
        return hits[:k]

    def count(self, scopes: Collection[str]) -> int:
        return StoredVector.objects.filter(namespace=self.namespace, scope__in=list(scopes)).count()

    def matrix(self, scope: str) -> ScopeMatrix:
        """The scope's vectors, from this process's memory while they are current."""
        version = str(cache.get(self._version_key(scope)) or "")
        with self._lock:
            held = self._matrices.get(scope)
            if held is not None and held.version == version and version:
                self._matrices.move_to_end(scope)
                return held
        rows = StoredVector.objects.filter(namespace=self.namespace, scope=scope).order_by("key")
        keys, blobs = [], []
        for key, blob in rows.values_list("key", "vector"):
            keys.append(key)
            blobs.append(bytes(blob))
        dim = len(blobs[0]) // 4 if blobs else 0
        vectors = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dim)
        if not version:  # nothing written since the cache was cleared: stamp it now
            version = uuid.uuid4().hex
            cache.add(self._version_key(scope), version, None)
            version = str(cache.get(self._version_key(scope)) or version)
        loaded = ScopeMatrix.of(keys, vectors, version)
        with self._lock:
            self._matrices[scope] = loaded
            self._matrices.move_to_end(scope)
            while len(self._matrices) > settings.VECTORS_MEMORY_SCOPES:
                self._matrices.popitem(last=False)
        return loaded

    def _version_key(self, scope: str) -> str:
        return f"vectors:ver:{self.namespace}:{scope}"
