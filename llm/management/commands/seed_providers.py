"""Create admin rows for the providers the settings configure, so operators can edit them."""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction

from llm.models import Deployment, Provider
from llm.registry import provider_configs

# Keys stay in the environment: the rows reference the variables, they do not copy the keys.
KEY_VARIABLES = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "openai-compatible": "OPENAI_COMPATIBLE_API_KEY",
}


class Command(BaseCommand):
    help = (
        "Create a Provider and a Deployment row (alias = its name) for each provider the "
        "settings configure. Existing providers are left alone."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        created = []
        with transaction.atomic():
            for name, config in provider_configs().items():
                if Provider.objects.filter(name=name).exists():
                    continue
                variable = KEY_VARIABLES.get(name, "")
                first_token = (
                    settings.LLM_LOCAL_FIRST_TOKEN_TIMEOUT
                    if config.is_local
                    else settings.LLM_FIRST_TOKEN_TIMEOUT
                )
                provider = Provider.objects.create(
                    name=name,
                    kind=config.kind,
                    base_url=config.base_url,
                    api_key_env=variable if os.environ.get(variable) else "",
                    connect_timeout=settings.LLM_CONNECT_TIMEOUT,
                    first_token_timeout=first_token,
                    inter_token_timeout=settings.LLM_INTER_TOKEN_TIMEOUT,
                )
                Deployment.objects.create(provider=provider, alias=name, model=config.model)
                created.append(name)
        self.stdout.write(f"Created: {', '.join(created) or 'nothing (all exist)'}")
