from __future__ import annotations

from django.apps import AppConfig


class LlmConfig(AppConfig):
    name = "llm"
    verbose_name = "LLM providers"

    def ready(self) -> None:
        from llm import catalog

        catalog.receivers_connect()
