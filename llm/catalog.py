"""Which deployments serve a model alias: admin rows first, settings as the zero-row default.

An alias that any Deployment row names (enabled or not) is served by rows only. An alias no
row names falls back to the providers the settings configure (llm/registry.py), each under its
own name as alias ("local", "simulated", "openai", ...). So a fresh clone with no rows keeps
working, and an operator takes an alias over simply by adding rows for it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any

from django.conf import settings

from core.errors import ParleyError
from llm import crypto
from llm.models import Deployment, FallbackChain
from llm.providers.base import ProviderConfig
from llm.registry import provider_configs


@dataclass(frozen=True)
class DeploymentConfig(ProviderConfig):
    """A provider config plus what the router needs: alias, share, tier, limits, prices."""

    alias: str = ""
    key: str = ""  # breaker, health and rate counters live under it: "db-12", "settings-local"
    weight: int = 1
    priority: int = 0
    enabled: bool = True
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    input_price: Decimal | None = None  # per 1M tokens
    output_price: Decimal | None = None
    first_token_timeout: float = 60.0
    inter_token_timeout: float = 30.0
    problem: str = ""  # why it cannot be used as configured (its key is missing, ...)

    @property
    def label(self) -> str:
        return f"{self.name}/{self.model}"


def default_alias() -> str:
    return str(settings.LLM_DEFAULT_MODEL or settings.LLM_DEFAULT_PROVIDER)


def _provider_fields(config: ProviderConfig) -> dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in fields(ProviderConfig)}


def settings_deployments() -> dict[str, DeploymentConfig]:
    """The providers the settings configure, one deployment each, by alias (= name)."""
    out = {}
    for name, config in provider_configs().items():
        first_token = (
            settings.LLM_LOCAL_FIRST_TOKEN_TIMEOUT
            if config.is_local
            else settings.LLM_FIRST_TOKEN_TIMEOUT
        )
        out[name] = DeploymentConfig(
            **{**_provider_fields(config), "connect_timeout": settings.LLM_CONNECT_TIMEOUT},
            alias=name,
            key=f"settings-{name}",
            first_token_timeout=first_token,
            inter_token_timeout=settings.LLM_INTER_TOKEN_TIMEOUT,
        )
    return out


def _from_row(row: Deployment, defaults: dict[str, ProviderConfig]) -> DeploymentConfig:
    provider = row.provider
    problem = ""
    try:
        api_key = provider.api_key()
    except KeyError:
        api_key, problem = "", f"its API key variable {provider.api_key_env} is not set"
    except crypto.KeyUnreadable:
        api_key, problem = "", "its stored API key cannot be decrypted (enter it again)"
    # Kind defaults from the settings (n_ctx, tokens_per_second, temperature...), then the row's.
    base = next((c.options for c in defaults.values() if c.kind == provider.kind), {})
    return DeploymentConfig(
        name=provider.name,
        kind=provider.kind,
        model=row.model,
        base_url=provider.base_url,
        api_key=api_key,
        timeout=settings.LLM_REQUEST_TIMEOUT,
        options={**base, **(provider.options or {})},
        connect_timeout=provider.connect_timeout,
        alias=row.alias,
        key=row.key,
        weight=row.weight,
        priority=row.priority,
        enabled=row.enabled and provider.enabled,
        rpm_limit=row.rpm_limit,
        tpm_limit=row.tpm_limit,
        input_price=row.input_price,
        output_price=row.output_price,
        first_token_timeout=provider.first_token_timeout,
        inter_token_timeout=provider.inter_token_timeout,
        problem=problem,
    )


def deployments_for(aliases: list[str]) -> dict[str, list[DeploymentConfig]]:
    """Every deployment (enabled or not) of each alias, in one query."""
    defaults = provider_configs()
    found: dict[str, list[DeploymentConfig]] = defaultdict(list)
    for row in Deployment.objects.filter(alias__in=aliases).select_related("provider"):
        found[row.alias].append(_from_row(row, defaults))
    seeded = settings_deployments() if any(a not in found for a in aliases) else {}
    return {
        alias: found.get(alias) or ([seeded[alias]] if alias in seeded else []) for alias in aliases
    }


def fallbacks_for(alias: str) -> list[str]:
    """The alias's fallback chain: its admin row, else LLM_FALLBACKS, else none."""
    row = FallbackChain.objects.filter(alias=alias).first()
    chain = row.chain() if row is not None else list(settings.LLM_FALLBACKS.get(alias, []))
    return [a for a in dict.fromkeys(chain) if a != alias]


def all_deployments() -> list[DeploymentConfig]:
    """Every deployment: the rows, then the settings ones whose alias no row takes."""
    defaults = provider_configs()
    rows = [_from_row(r, defaults) for r in Deployment.objects.select_related("provider")]
    taken = {d.alias for d in rows}
    return rows + [d for alias, d in settings_deployments().items() if alias not in taken]


# --- tenant features: the models an organisation may use ---------------------------------


def enabled_aliases() -> list[str]:
    """Every alias with at least one enabled deployment, the default first, then by name."""
    default = default_alias()
    aliases = sorted({d.alias for d in all_deployments() if d.enabled and d.alias})
    aliases.sort(key=lambda alias: alias != default)
    return aliases


def tenant_aliases(aliases: Iterable[str], *, allowed: Collection[str]) -> list[str]:
    """The aliases among `aliases` an organisation with this allow-list may use (an empty
    allow-list allows every model). The model pickers and model lists show these."""
    return [alias for alias in aliases if not allowed or alias in allowed]


def tenant_alias(alias: str, *, allowed: Collection[str]) -> str:
    """The alias a tenant's reply runs on, or model_not_allowed: `alias` if the allow-list
    has it; for "" (the default model) the default if allowed, else the first allowed alias
    that is available. The one check every way of choosing a model goes through (the reply
    is created by chat/replies/dispatch.py reply_create whatever the edge)."""
    if not allowed:
        return alias
    if alias:
        if alias in allowed:
            return alias
        raise ParleyError(
            "model_not_allowed",
            f"Your organisation may not use the model {alias!r} "
            f"(it may use: {', '.join(sorted(allowed))}).",
        )
    usable = tenant_aliases(enabled_aliases(), allowed=allowed)
    if not usable:
        raise ParleyError(
            "model_not_allowed", "None of the models your organisation may use is available."
        )
    return "" if usable[0] == default_alias() else usable[0]
