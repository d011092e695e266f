"""The embedded store's rows (llm/vectors/numpy_store.py); imported into llm/models.py."""

from __future__ import annotations

from django.db import models


class StoredVector(models.Model):
    """One vector of the embedded store: float32 bytes, searched in memory per scope."""

    namespace = models.CharField(max_length=32)
    key = models.BigIntegerField()
    scope = models.CharField(max_length=64)
    vector = models.BinaryField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["namespace", "key"], name="unique_vector_key")
        ]
        indexes = [models.Index(fields=["namespace", "scope"], name="vector_scope")]

    def __str__(self) -> str:
        return f"{self.namespace}:{self.key} ({self.scope})"
