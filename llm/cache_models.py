"""The reply cache as PostgreSQL sees it (llm/cache/ has the logic, docs/caching.md the design).

Redis holds what a lookup reads on the hot path (exact entries, with their TTL); these rows
are the durable record behind it: every entry (for the admin, LRU eviction, purges and the
semantic index's vectors), every answer served from the cache (savings per message), and
daily counters per tenant (hit rate). Imported into llm/models.py so Django finds them.
"""

from __future__ import annotations

from decimal import Decimal

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models


class CachePolicy(models.Model):
    """An organisation's cache settings; without a row the CACHE_* settings apply."""

    organisation = models.OneToOneField(
        "accounts.Organisation", on_delete=models.CASCADE, related_name="cache_policy"
    )
    enabled = models.BooleanField(default=True, help_text="Look up and store replies at all.")
    cache_sampled = models.BooleanField(
        "cache sampled replies",
        default=False,
        help_text="Also store and replay replies of models that sample (temperature > 0). "
        "Off: only deterministic requests (temperature 0) are cached; FAQ entries are "
        "served either way.",
    )
    semantic_enabled = models.BooleanField(
        "semantic matching",
        default=True,
        help_text="Answer a differently worded first question from the cache.",
    )
    semantic_threshold = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Cosine similarity a match needs; empty for CACHE_SEMANTIC_THRESHOLD.",
    )
    semantic_mid_conversation = models.BooleanField(
        default=False,
        help_text="Also match reworded follow-ups, when the conversation before them is "
        "identical. Off: semantic matching only for first questions.",
    )
    ttl_seconds = models.PositiveIntegerField(
        "time to live (seconds)", null=True, blank=True, help_text="Empty for CACHE_TTL."
    )
    max_entries = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Least recently used entries go beyond this; empty for CACHE_MAX_ENTRIES.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "cache policy"
        verbose_name_plural = "cache policies"

    def __str__(self) -> str:
        return f"cache policy of {self.organisation}"


class CacheEntry(models.Model):
    class Kind(models.TextChoices):
        REPLY = "reply", "model reply"
        FAQ = "faq", "FAQ (warmed)"

    # "org:<id>" (or "user:<id>" for a conversation without one): nothing crosses it.
    namespace = models.CharField(max_length=64)
    organisation = models.ForeignKey(
        "accounts.Organisation",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="cache_entries",
    )
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.REPLY)
    key = models.CharField(max_length=64, help_text="Hash of the whole normalised request.")
    # Hash of everything but the last question (model, system prompt, parameters, history
    # before it); entries with an embedding are matched semantically within their scope only.
    scope = models.CharField(max_length=64, blank=True, default="")
    question = models.TextField()
    answer = models.TextField()
    embedding = models.BinaryField(null=True, blank=True, editable=False)
    alias = models.CharField(max_length=128, blank=True, default="")
    provider = models.CharField(max_length=64, blank=True, default="")
    model = models.CharField(max_length=128, blank=True, default="")
    cost = models.DecimalField(
        max_digits=14,
        decimal_places=8,
        null=True,
        blank=True,
        help_text="What the original reply cost: each hit saves this much.",
    )
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    source_message = models.ForeignKey(
        "chat.Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    hits = models.PositiveIntegerField(default=0)
    saved_cost = models.DecimalField(max_digits=16, decimal_places=8, default=Decimal(0))
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField()
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        verbose_name = "cache entry"
        verbose_name_plural = "cache entries"
        ordering = ["-last_used_at"]
        constraints = [
            models.UniqueConstraint(fields=["namespace", "key"], name="cache_entry_unique_key")
        ]
        indexes = [
            models.Index(fields=["namespace", "scope"], name="cache_entry_scope"),
            models.Index(fields=["namespace", "last_used_at"], name="cache_entry_lru"),
        ]

    def __str__(self) -> str:
        return self.question[:80]


class CacheHit(models.Model):
    """One reply answered from the cache: what it would have cost (usage savings)."""

    class Kind(models.TextChoices):
        EXACT = "exact"
        SEMANTIC = "semantic"

    message = models.OneToOneField(
        "chat.Message", on_delete=models.CASCADE, related_name="cache_hit"
    )
    entry = models.ForeignKey(
        CacheEntry, null=True, blank=True, on_delete=models.SET_NULL, related_name="served"
    )
    namespace = models.CharField(max_length=64)
    organisation = models.ForeignKey(
        "accounts.Organisation", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    kind = models.CharField(max_length=8, choices=Kind.choices)
    similarity = models.FloatField(null=True, blank=True)
    saved_cost = models.DecimalField(
        max_digits=14,
        decimal_places=8,
        null=True,
        blank=True,
        help_text="The original reply's cost; empty when it had no price.",
    )
    saved_tokens = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        verbose_name = "reply served from the cache"
        verbose_name_plural = "replies served from the cache"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.kind} hit for message {self.message_id}"


class CacheStat(models.Model):
    """Per tenant and day: lookups, hits and savings (the admin's hit rate)."""

    namespace = models.CharField(max_length=64)
    organisation = models.ForeignKey(
        "accounts.Organisation", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    day = models.DateField()
    lookups = models.PositiveIntegerField(default=0)
    exact_hits = models.PositiveIntegerField(default=0)
    semantic_hits = models.PositiveIntegerField(default=0)
    stores = models.PositiveIntegerField(default=0)
    saved_cost = models.DecimalField(max_digits=16, decimal_places=8, default=Decimal(0))
    saved_tokens = models.PositiveBigIntegerField(default=0)

    class Meta:
        verbose_name = "cache statistics per day"
        verbose_name_plural = "cache statistics per day"
        ordering = ["-day", "namespace"]
        constraints = [
            models.UniqueConstraint(fields=["namespace", "day"], name="cache_stat_unique_day")
        ]

    def __str__(self) -> str:
        return f"{self.namespace} {self.day}"

    @property
    def hits(self) -> int:
        return self.exact_hits + self.semantic_hits

    @property
    def hit_rate(self) -> float | None:
        return self.hits / self.lookups if self.lookups else None


__all__ = ["CacheEntry", "CacheHit", "CachePolicy", "CacheStat"]
