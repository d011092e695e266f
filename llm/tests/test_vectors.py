"""Vector stores: the embedded NumPy store (rows + in-memory matrices per scope), the choice of
store, and pgvector's detection against this machine's real PostgreSQL."""

from __future__ import annotations

import numpy as np
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection

from llm.vectors import VectorItem, pgvector_available
from llm.vectors.numpy_store import NumpyVectorStore, ScopeMatrix
from llm.vectors.pgvector_store import PgVectorStore, literal
from llm.vectors.select import PGVECTOR_PROBE, vector_store, vector_stores_forget
from tests.harness.services import (
    POSTGRES_ADMIN_URL,
    POSTGRES_HOST,
    POSTGRES_PORT,
    postgres_database,
    require_service,
)


def unit(*values: float) -> np.ndarray:
    v = np.asarray(values, dtype=np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture
def store(db) -> NumpyVectorStore:
    return NumpyVectorStore("test")


def test_search_finds_the_nearest_within_the_scopes_asked_only(store):
    store.add(
        [
            VectorItem(1, "a", unit(1, 0, 0)),
            VectorItem(2, "a", unit(0, 1, 0)),
            VectorItem(3, "b", unit(1, 0.01, 0)),  # nearer to the query, but another scope
        ]
    )
    hits = store.search(unit(1, 0.02, 0), scopes=["a"], k=2)
    assert [h.key for h in hits] == [1, 2] and {h.scope for h in hits} == {"a"}
    assert hits[0].score == pytest.approx(1.0, abs=1e-3)
    assert [h.key for h in store.search(unit(1, 0, 0), scopes=["a", "b"], k=1)] == [1]
    assert store.search(unit(1, 0, 0), scopes=["nobody"], k=5) == []


def test_writes_reach_a_scope_already_held_in_memory(store):
    store.add([VectorItem(1, "a", unit(1, 0))])
    assert [h.key for h in store.search(unit(0, 1), scopes=["a"], k=5)] == [1]
    store.add([VectorItem(2, "a", unit(0, 1))])
    assert store.search(unit(0, 1), scopes=["a"], k=1)[0].key == 2
    store.delete([2])
    assert [h.key for h in store.search(unit(0, 1), scopes=["a"], k=5)] == [1]
    store.delete_scopes(["a"])
    assert store.search(unit(0, 1), scopes=["a"], k=5) == [] and store.count(["a"]) == 0


def test_adding_a_key_again_replaces_it(store):
    store.add([VectorItem(7, "a", unit(1, 0))])
    store.add([VectorItem(7, "b", unit(0, 1))])
    assert store.count(["a"]) == 0 and store.count(["b"]) == 1


def test_a_scope_matrix_returns_the_top_k_in_order():
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(1000, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    matrix = ScopeMatrix.of(range(1000), vectors)
    keys, scores = matrix.top(vectors[42], 5)
    assert keys[0] == 42 and list(scores) == sorted(scores, reverse=True)
    assert list(keys) == list(np.argsort(-(vectors @ vectors[42]))[:5])


def test_the_embedded_store_serves_without_pgvector(db, settings):
    vector_stores_forget()
    settings.VECTORS_BACKEND = "auto"
    assert connection.vendor == "sqlite" and not pgvector_available()
    assert vector_store("x").name == "numpy"
    settings.VECTORS_BACKEND = "pgvector"
    with pytest.raises(ImproperlyConfigured, match="no pgvector extension"):
        vector_store("y")
    settings.VECTORS_BACKEND = "faiss"
    with pytest.raises(ImproperlyConfigured, match="use auto, numpy or pgvector"):
        vector_store("z")
    vector_stores_forget()


def test_pgvector_literal_is_its_text_form():
    assert literal(np.array([0.5, -1.0, 0.25], dtype=np.float32)) == "[0.5,-1,0.25]"
    assert PgVectorStore("n", dim=3).dim == 3


def test_detection_matches_what_this_postgresql_can_do():
    """The probe says yes exactly when CREATE EXTENSION vector works on the real server."""
    import psycopg

    require_service("PostgreSQL", POSTGRES_HOST, POSTGRES_PORT)
    with postgres_database(POSTGRES_ADMIN_URL, prefix="parley_vectors") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            probed = conn.execute(PGVECTOR_PROBE).fetchone() is not None
            try:
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                creatable = True
            except psycopg.Error:
                creatable = False
            assert probed == creatable
            if not creatable:
                pytest.skip("this PostgreSQL has no pgvector: the SQL path is not testable here")
            # pgvector is there: the store's own SQL, on a real server.
            conn.execute(
                "CREATE TABLE t (namespace varchar(32), key bigint, scope varchar(64), "
                "embedding vector(3), PRIMARY KEY (namespace, key))"
            )
            conn.execute(
                "INSERT INTO t VALUES ('n', 1, 'a', %s::vector), ('n', 2, 'b', %s::vector)",
                [literal(unit(1, 0, 0)), literal(unit(0, 1, 0))],
            )
            row = conn.execute(
                "SELECT key, 1 - (embedding <=> %s::vector) FROM t WHERE namespace = 'n' "
                "AND scope = ANY(%s) ORDER BY embedding <=> %s::vector LIMIT 1",
                [literal(unit(1, 0, 0)), ["a"], literal(unit(1, 0, 0))],
            ).fetchone()
            assert row is not None and row[0] == 1 and row[1] == pytest.approx(1.0)
