"""Vector stores: one small interface over plain data (ids, vectors, a scope per vector).

`vector_store(namespace)` picks the store the settings and the database allow
(VECTORS_BACKEND): PostgreSQL's pgvector when the database has the extension, else the
embedded NumPy store, which keeps its vectors in ordinary rows and searches them in memory.
"""

from __future__ import annotations

from llm.vectors.base import Hit, VectorItem, VectorStore
from llm.vectors.select import pgvector_available, vector_store

__all__ = ["Hit", "VectorItem", "VectorStore", "pgvector_available", "vector_store"]
