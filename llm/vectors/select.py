"""Which store serves: VECTORS_BACKEND = auto (pgvector when the database has it, else NumPy),
numpy, or pgvector (refused at first use when the database cannot)."""

from __future__ import annotations

import logging
from functools import cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection

from llm.vectors.base import VectorStore
from llm.vectors.numpy_store import NumpyVectorStore
from llm.vectors.pgvector_store import PgVectorStore

logger = logging.getLogger(__name__)


# The server's packages: the extension is installed there (CREATE EXTENSION can then succeed).
PGVECTOR_PROBE = "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"


def pgvector_available() -> bool:
    """Whether the database is PostgreSQL with the `vector` extension installed, or available
    to install (pg_available_extensions lists the server's packages)."""
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute(PGVECTOR_PROBE)
        return cursor.fetchone() is not None


@cache
def _store(backend: str, namespace: str) -> VectorStore:
    if backend == "pgvector" or (backend == "auto" and pgvector_available()):
        if backend == "pgvector" and not pgvector_available():
            raise ImproperlyConfigured(
                "VECTORS_BACKEND=pgvector, but the database has no pgvector extension "
                "(PostgreSQL with the `vector` extension is needed; use auto or numpy)."
            )
        return PgVectorStore(namespace)
    if backend not in ("auto", "numpy", "pgvector"):
        raise ImproperlyConfigured(f"VECTORS_BACKEND={backend!r}: use auto, numpy or pgvector")
    return NumpyVectorStore(namespace)


def vector_store(namespace: str) -> VectorStore:
    """The process's store for a namespace (decided once per process and backend)."""
    return _store(settings.VECTORS_BACKEND, namespace)


def vector_stores_forget() -> None:
    """Decide again at the next use (tests that change VECTORS_BACKEND or the database)."""
    _store.cache_clear()
