"""Which provider answers a reply. Today: the configured default; routing policies grow here."""

from __future__ import annotations

from django.conf import settings

from llm.providers.base import ProviderConfig
from llm.registry import provider_config


def provider_choose(*, pinned: str = "") -> ProviderConfig:
    """The provider for a new reply: a pinned one if given, else the default."""
    return provider_config(pinned or settings.LLM_DEFAULT_PROVIDER)
