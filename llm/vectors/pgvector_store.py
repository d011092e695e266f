"""PostgreSQL with pgvector: the vectors in a `vector(dim)` column, searched by the database
with an HNSW index (cosine distance), filtered by scope in the same query.

Used when the database has the extension (llm/vectors/select.py detects it at run time). The
table is created on first use, not by a migration, because most databases Parley runs on
(SQLite, PostgreSQL without the extension) cannot hold the column type.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence

import numpy as np
from django.db import connection

from llm.embeddings import Vectors
from llm.vectors.base import Hit, VectorItem

TABLE = "llm_pgvector_item"
_ready: set[int] = set()
_ready_lock = threading.Lock()


def literal(vector: Vectors) -> str:
    """pgvector's text form, '[0.1,0.2,…]' (sent as a parameter and cast with ::vector)."""
    return "[" + ",".join(f"{float(x):.7g}" for x in np.asarray(vector).ravel()) + "]"


class PgVectorStore:
    name = "pgvector"

    def __init__(self, namespace: str, *, dim: int = 384) -> None:
        self.namespace = namespace
        self.dim = dim

    def ensure(self) -> None:
        """Create the extension (if allowed), the table and its indexes once per process."""
        with _ready_lock:
            if self.dim in _ready:
                return
            with connection.cursor() as cursor:
                cursor.execute("CREATE EXTENSION IF NOT EXISTS vector")
                cursor.execute(
                    f"CREATE TABLE IF NOT EXISTS {TABLE} ("
                    "namespace varchar(32) NOT NULL, key bigint NOT NULL, "
                    f"scope varchar(64) NOT NULL, embedding vector({int(self.dim)}) NOT NULL, "
                    "PRIMARY KEY (namespace, key))"
                )
                cursor.execute(
                    f"CREATE INDEX IF NOT EXISTS {TABLE}_scope ON {TABLE} (namespace, scope)"
                )
                cursor.execute(
                    f"CREATE INDEX IF NOT EXISTS {TABLE}_hnsw ON {TABLE} "
                    "USING hnsw (embedding vector_cosine_ops)"
                )
            _ready.add(self.dim)

    def add(self, items: Sequence[VectorItem]) -> None:
        if not items:
            return
        self.ensure()
        with connection.cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO {TABLE} (namespace, key, scope, embedding) "  # noqa: S608
                "VALUES (%s, %s, %s, %s::vector) ON CONFLICT (namespace, key) DO UPDATE "
                "SET scope = EXCLUDED.scope, embedding = EXCLUDED.embedding",
                [(self.namespace, i.key, i.scope, literal(i.vector)) for i in items],
            )

    def delete(self, keys: Collection[int]) -> None:
        self._delete_where("key", list(keys))

    def delete_scopes(self, scopes: Collection[str]) -> None:
        self._delete_where("scope", list(scopes))

    def _delete_where(self, column: str, values: list[int] | list[str]) -> None:
        assert column in ("key", "scope")
        self.ensure()
        with connection.cursor() as cursor:
            cursor.execute(
                f"DELETE FROM {TABLE} WHERE namespace = %s AND {column} = ANY(%s)",  # noqa: S608
                [self.namespace, values],
            )

    def search(self, vector: Vectors, *, scopes: Collection[str], k: int) -> list[Hit]:
        self.ensure()
        query = literal(vector)
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT key, scope, 1 - (embedding <=> %s::vector) FROM {TABLE} "  # noqa: S608
                "WHERE namespace = %s AND scope = ANY(%s) "
                "ORDER BY embedding <=> %s::vector LIMIT %s",
                [query, self.namespace, list(scopes), query, k],
            )
            return [Hit(int(key), str(scope), float(score)) for key, scope, score in cursor]

    def count(self, scopes: Collection[str]) -> int:
        self.ensure()
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT count(*) FROM {TABLE} WHERE namespace = %s AND scope = ANY(%s)",  # noqa: S608
                [self.namespace, list(scopes)],
            )
            row = cursor.fetchone()
        return int(row[0]) if row else 0
