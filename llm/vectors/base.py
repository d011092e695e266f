"""What every vector store offers: add, delete, delete a scope, and top-k within scopes.

Plain data only: an item is an integer key chosen by the caller (e.g. a document chunk's id),
a scope string (whose access the caller has already checked; e.g. "collection:4") and an
L2-normalised float32 vector, so the inner product is the cosine similarity. Writes happen in
the caller's database transaction: a rolled-back ingestion leaves no vector behind.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from llm.embeddings import Vectors


@dataclass(frozen=True)
class VectorItem:
    key: int
    scope: str
    vector: Vectors  # one row, L2-normalised


@dataclass(frozen=True)
class Hit:
    key: int
    scope: str
    score: float  # cosine similarity, higher is nearer


class VectorStore(Protocol):
    name: str
    namespace: str

    def add(self, items: Sequence[VectorItem]) -> None:
        """Store items (a key already stored is replaced)."""

    def delete(self, keys: Collection[int]) -> None:
        """Forget these keys (unknown keys are ignored)."""

    def delete_scopes(self, scopes: Collection[str]) -> None:
        """Forget every item of these scopes."""

    def search(self, vector: Vectors, *, scopes: Collection[str], k: int) -> list[Hit]:
        """The k items nearest `vector` among these scopes only, nearest first."""

    def count(self, scopes: Collection[str]) -> int:
        """How many items these scopes hold."""
