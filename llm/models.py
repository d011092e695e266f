"""Providers and deployments as operators edit them in the admin (llm/catalog.py reads them).

A Provider is an endpoint and its credentials; a Deployment is one model on a provider, served
under a public model alias that users and conversations pin ("default", "gpt-4o-mini"). Several
deployments may share an alias (several keys, several providers): the router rotates across
them by weight within the best priority tier, then walks the alias's fallback chain.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterable
from typing import Any, TypeVar

from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models, transaction

from llm import crypto

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Every process keeps the catalogue (these rows, llm/catalog.py) in memory while this cache key
# keeps the value it was read under.
CATALOG_VERSION_KEY = "llm:catalog:version"


# Set in a thread whose open transaction changed catalogue rows: only it sees them, so it
# reads the catalogue afresh and keeps it to itself until that transaction ends.
written_here = threading.local()


def catalog_changed() -> None:
    """Every process's catalogue is stale. Now, and again after the commit: a process that
    reads the rows in between (the old ones: the change is not committed yet) keeps them under
    the first new version only."""
    cache.set(CATALOG_VERSION_KEY, time.time_ns(), None)
    if transaction.get_connection().in_atomic_block:
        written_here.pending = True
    transaction.on_commit(_committed)


def _committed() -> None:
    written_here.pending = False
    cache.set(CATALOG_VERSION_KEY, time.time_ns(), None)


_M = TypeVar("_M", bound=models.Model)


class CatalogQuerySet(models.QuerySet[_M]):
    """Bulk writes send no post_save: they mark the catalogue stale themselves (signals in
    llm/catalog.py cover save and delete)."""

    def update(self, **kwargs: Any) -> int:
        rows = super().update(**kwargs)
        catalog_changed()
        return rows

    def bulk_create(self, objs: Iterable[_M], *args: Any, **kwargs: Any) -> list[_M]:
        created = super().bulk_create(objs, *args, **kwargs)
        catalog_changed()
        return created

    def bulk_update(self, objs: Iterable[_M], *args: Any, **kwargs: Any) -> int:
        rows = super().bulk_update(objs, *args, **kwargs)
        catalog_changed()
        return rows


class Provider(models.Model):
    class Kind(models.TextChoices):
        LOCAL = "local", "local llama.cpp (bundled model)"
        OPENAI = "openai", "OpenAI"
        OPENAI_COMPATIBLE = "openai-compatible", "OpenAI-compatible server"
        ANTHROPIC = "anthropic", "Anthropic"
        SIMULATED = "simulated", "simulated (tests, load tests)"

    name = models.SlugField(max_length=64, unique=True)
    kind = models.CharField(max_length=32, choices=Kind.choices)
    base_url = models.URLField(
        blank=True, default="", help_text="Empty for the vendor's own API (or local/simulated)."
    )
    # Write-only: the admin form never renders it back. A Fernet token (llm/crypto.py).
    api_key_encrypted = models.TextField(blank=True, default="", editable=False)
    api_key_env = models.CharField(
        "API key environment variable",
        max_length=128,
        blank=True,
        default="",
        help_text="Read the key from this environment variable instead of storing it.",
    )
    connect_timeout = models.FloatField(default=10.0, validators=[MinValueValidator(0.1)])
    first_token_timeout = models.FloatField(
        default=60.0,
        validators=[MinValueValidator(0.1)],
        help_text="Seconds from the request to the first text before trying elsewhere.",
    )
    inter_token_timeout = models.FloatField(
        default=30.0,
        validators=[MinValueValidator(0.1)],
        help_text="Seconds of silence mid-reply before the reply ends with a retryable error.",
    )
    options = models.JSONField(
        default=dict, blank=True, help_text='Kind-specific, e.g. {"temperature": 0.3}.'
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = CatalogQuerySet["Provider"].as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.api_key_env and not ENV_NAME.match(self.api_key_env):
            raise ValidationError({"api_key_env": "Use an environment variable name."})
        if self.kind == self.Kind.OPENAI_COMPATIBLE and not self.base_url:
            raise ValidationError({"base_url": "An OpenAI-compatible provider needs a URL."})

    def api_key_set(self, plaintext: str) -> None:
        """Store a key encrypted (an empty string removes it)."""
        self.api_key_encrypted = crypto.encrypt(plaintext) if plaintext else ""

    @property
    def key_source(self) -> str:
        if self.api_key_env:
            return f"env {self.api_key_env}"
        return "stored (encrypted)" if self.api_key_encrypted else "none"

    def api_key(self) -> str:
        """The plaintext key; raises crypto.KeyUnreadable or KeyError (env var unset)."""
        if self.api_key_env:
            return os.environ[self.api_key_env]
        return crypto.decrypt(self.api_key_encrypted) if self.api_key_encrypted else ""


class Deployment(models.Model):
    provider = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="deployments")
    alias = models.CharField(
        max_length=128,
        db_index=True,
        help_text="The public model name users and conversations pin, e.g. default.",
    )
    model = models.CharField(max_length=128, help_text="The provider's own model name.")
    weight = models.PositiveIntegerField(
        default=1,
        validators=[MinValueValidator(1)],
        help_text="Share of traffic among deployments of the same alias and priority.",
    )
    priority = models.PositiveSmallIntegerField(
        default=0, help_text="Tier: 0 is tried first; higher tiers only when lower ones fail."
    )
    rpm_limit = models.PositiveIntegerField(
        "requests per minute", null=True, blank=True, help_text="Empty for no limit."
    )
    tpm_limit = models.PositiveIntegerField(
        "tokens per minute", null=True, blank=True, help_text="Empty for no limit."
    )
    input_price = models.DecimalField(
        "input price per 1M tokens",
        max_digits=12,
        decimal_places=6,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
    )
    output_price = models.DecimalField(
        "output price per 1M tokens",
        max_digits=12,
        decimal_places=6,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
    )
    context_window = models.PositiveIntegerField(
        "context window (tokens)",
        null=True,
        blank=True,
        validators=[MinValueValidator(256)],
        help_text=(
            "The model's context length, prompt and reply together (e.g. 2048 for a llama.cpp "
            "server started with -c 2048). Parley then leaves the oldest turns out of a "
            "prompt that would not fit, and refuses a message too long on its own. Empty: "
            "unknown, nothing is fitted (the bundled local model's is its n_ctx)."
        ),
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = CatalogQuerySet["Deployment"].as_manager()

    class Meta:
        ordering = ["alias", "priority", "-weight", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "model", "alias"], name="unique_deployment_per_alias"
            )
        ]

    def __str__(self) -> str:
        return f"{self.alias} → {self.provider.name}/{self.model}"

    @property
    def key(self) -> str:
        """The id its breaker, health and rate counters live under (llm/catalog.py)."""
        return f"db-{self.pk}"


class FallbackChain(models.Model):
    """When every deployment of `alias` fails before the first token, try these aliases."""

    alias = models.CharField(max_length=128, unique=True)
    fallbacks = models.CharField(
        max_length=512, help_text="Aliases tried in order, comma-separated, e.g. claude, local."
    )

    objects = CatalogQuerySet["FallbackChain"].as_manager()

    class Meta:
        ordering = ["alias"]

    def __str__(self) -> str:
        return f"{self.alias} → {', '.join(self.chain())}"

    def chain(self) -> list[str]:
        return [a.strip() for a in self.fallbacks.split(",") if a.strip()]

    def clean(self) -> None:
        if self.alias in self.chain():
            raise ValidationError({"fallbacks": "An alias cannot fall back to itself."})


from llm.cache_models import *  # noqa: E402, F403 - the reply cache (llm/cache/)
from llm.vectors.models import *  # noqa: E402, F403 - the embedded vector store
