"""Which deployments serve a model alias: admin rows first, settings as the zero-row default.

An alias that any Deployment row names (enabled or not) is served by rows only. An alias no
row names falls back to the providers the settings configure (llm/registry.py), each under its
own name as alias ("local", "simulated", "openai", ...). So a fresh clone with no rows keeps
working, and an operator takes an alias over simply by adding rows for it.

Every send asks (its price ceiling, its likely deployment), so each process keeps the whole
catalogue in memory (`catalog()`): the rows and chains, read in two queries, and what is
worked out from them. It is valid while the cache key CATALOG_VERSION_KEY (Redis in
production, shared by every process) holds the version it was read under: one cache GET per
lookup and no query; a send holds one catalogue for all its lookups (`catalog_held()`), so one
GET per send. Not a local time-to-live instead: a deployment disabled in the admin would still
take traffic until it ran out, in every process. Every save or delete of a Provider,
Deployment or FallbackChain (signals, connected in LlmConfig.ready) and every bulk write
(llm/models.py CatalogQuerySet) sets a new version, so every process sees an admin change at
its next lookup. A change the cache never hears of (raw SQL, a restored dump) is read within
CATALOG_MAX_AGE. A changed setting (tests) drops the copy; keys named by an environment
variable are read from the environment at each lookup. Breaker, health and rate state are not
kept here: they live in the cache, read at every attempt (llm/router.py).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Hashable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal
from typing import Any, TypeVar

from django.conf import settings
from django.core.cache import cache
from django.core.signals import setting_changed
from django.db import transaction
from django.db.models.signals import post_delete, post_save

from core.errors import ParleyError
from llm import crypto
from llm.models import (
    CATALOG_VERSION_KEY,
    Deployment,
    FallbackChain,
    Provider,
    catalog_changed,
    written_here,
)
from llm.providers.base import ProviderConfig
from llm.registry import provider_configs

logger = logging.getLogger(__name__)

CATALOG_MAX_AGE = 60.0  # seconds: the longest a change made behind the cache's back goes unseen
_clock = time.monotonic  # tests move it


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
    context_window: int | None = None  # tokens, prompt and reply together; None: not known

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
            context_window=_window(config.kind, config.options),
        )
    return out


def _window(kind: str, options: dict[str, Any], configured: int | None = None) -> int | None:
    """A deployment's context window: as configured, else its options' `context_window`, else
    the bundled model's `n_ctx` (llm/context.py fits prompts to it)."""
    window = configured or options.get("context_window")
    if not window and kind == "local":
        window = options.get("n_ctx")
    return int(window) if window else None


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
    options = {**base, **(provider.options or {})}
    return DeploymentConfig(
        name=provider.name,
        kind=provider.kind,
        model=row.model,
        base_url=provider.base_url,
        api_key=api_key,
        timeout=settings.LLM_REQUEST_TIMEOUT,
        options=options,
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
        context_window=_window(provider.kind, options, row.context_window),
    )


_T = TypeVar("_T")


@dataclass
class _Row:
    """A deployment row as the catalogue keeps it; `env` names the variable its key is read
    from at each lookup (so the environment decides, as it did when rows were read per send)."""

    config: DeploymentConfig
    env: str = ""
    env_seen: str | None = None

    def current(self) -> DeploymentConfig:
        if not self.env:
            return self.config
        value = os.environ.get(self.env)
        if value != self.env_seen:
            problem = "" if value is not None else f"its API key variable {self.env} is not set"
            self.config = replace(self.config, api_key=value or "", problem=problem)
            self.env_seen = value
        return self.config


@dataclass
class Catalog:
    """Every deployment row by alias (the model's ordering), every fallback chain, the
    settings' deployments, and what callers work out from them (`derived`)."""

    version: int
    read_at: float
    rows: dict[str, list[_Row]]
    chains: dict[str, list[str]]
    seeded: dict[str, DeploymentConfig]
    derived: dict[Hashable, Any] = field(default_factory=dict)

    def deployments_for(self, aliases: list[str]) -> dict[str, list[DeploymentConfig]]:
        out = {}
        for alias in aliases:
            rows = self.rows.get(alias)
            if rows:
                out[alias] = [row.current() for row in rows]
            else:
                out[alias] = [self.seeded[alias]] if alias in self.seeded else []
        return out

    def fallbacks_for(self, alias: str) -> list[str]:
        chain = self.chains.get(alias)
        if chain is None:
            chain = list(settings.LLM_FALLBACKS.get(alias, []))
        return [a for a in dict.fromkeys(chain) if a != alias]

    def all_deployments(self) -> list[DeploymentConfig]:
        rows = [row.current() for found in self.rows.values() for row in found]
        return rows + [d for alias, d in self.seeded.items() if alias not in self.rows]

    def memo(self, key: Hashable, compute: Callable[[], _T]) -> _T:
        """`compute()` once per catalogue version (e.g. an alias's price ceiling)."""
        try:
            value: _T = self.derived[key]
        except KeyError:
            value = self.derived[key] = compute()
        return value


_current: Catalog | None = None
_reading = threading.Lock()


def _version() -> int:
    version = cache.get(CATALOG_VERSION_KEY)
    if version is None:  # a new or flushed cache: start a version every process will share
        cache.add(CATALOG_VERSION_KEY, time.time_ns(), None)
        version = cache.get(CATALOG_VERSION_KEY)
    return int(version or 0)


def _read(version: int) -> Catalog:
    defaults = provider_configs()
    rows: dict[str, list[_Row]] = defaultdict(list)
    for row in Deployment.objects.select_related("provider"):
        env = row.provider.api_key_env
        rows[row.alias].append(_Row(_from_row(row, defaults), env, os.environ.get(env)))
    chains = {chain.alias: chain.chain() for chain in FallbackChain.objects.all()}
    return Catalog(
        version=version,
        read_at=_clock(),
        rows=dict(rows),
        chains=chains,
        seeded=settings_deployments(),
    )


_held: ContextVar[Catalog | None] = ContextVar("catalog_held", default=None)


@contextmanager
def catalog_held(*, version: int | None = None) -> Iterator[Catalog]:
    """Inside, every lookup sees one catalogue, its version checked once: a send asks for its
    price ceiling and its deployment (and its options' providers) with one cache GET, and
    prices and routes from the same rows. `version`: read from the cache already (a socket's
    send reads it with its rate limits: chat/services/prefetch.py), so no GET at all."""
    held = _held.get()
    if held is not None:
        yield held
        return
    held = catalog(version=version)
    token = _held.set(held)
    try:
        yield held
    finally:
        _held.reset(token)


def catalog(*, version: int | None = None) -> Catalog:
    """The catalogue as the database holds it now (see the module docstring); `version`: the
    cache's, read by the caller just before."""
    global _current
    if (held := _held.get()) is not None:
        return held
    if getattr(written_here, "pending", False):
        if transaction.get_connection().in_atomic_block:
            return _read(0)  # this transaction's own changes: not for the other threads
        written_here.pending = False  # that transaction ended (a rollback: no commit hook)
    current = _current
    try:
        version = _version() if version is None else version
    except Exception:
        # The cache is down: the copy in hand, for CATALOG_MAX_AGE (routing fails open too).
        logger.warning("catalogue version unreadable; using this process's copy", exc_info=True)
        version = current.version if current is not None else 0
    if (
        current is not None
        and current.version == version
        and _clock() - current.read_at < CATALOG_MAX_AGE
    ):
        return current
    with _reading:  # one thread of a process reads the rows; the others wait for them
        current = _current
        if (
            current is None
            or current.version != version
            or _clock() - current.read_at >= CATALOG_MAX_AGE
        ):
            current = _current = _read(version)
    return current


def catalog_forget(**kwargs: Any) -> None:
    """Drop this process's copy (a setting it was worked out from changed: tests)."""
    global _current
    _current = None


def _changed(sender: Any, **kwargs: Any) -> None:
    catalog_changed()


def receivers_connect() -> None:
    """Called once from LlmConfig.ready: every process drops the catalogue an admin changes."""
    for model in (Provider, Deployment, FallbackChain):
        for signal in (post_save, post_delete):
            signal.connect(_changed, sender=model, dispatch_uid=f"catalog-{model.__name__}")
    setting_changed.connect(catalog_forget, dispatch_uid="catalog-settings")


def deployments_for(aliases: list[str]) -> dict[str, list[DeploymentConfig]]:
    """Every deployment (enabled or not) of each alias."""
    return catalog().deployments_for(aliases)


def fallbacks_for(alias: str) -> list[str]:
    """The alias's fallback chain: its admin row, else LLM_FALLBACKS, else none."""
    return catalog().fallbacks_for(alias)


def all_deployments() -> list[DeploymentConfig]:
    """Every deployment: the rows, then the settings ones whose alias no row takes."""
    return catalog().all_deployments()


# Context windows providers stated refusing a longer prompt (llm/failover.py), by deployment
# key: this process fits later prompts to them. Not shared: each process learns with one refusal.
_learnt_windows: dict[str, int] = {}
_learnt_count = 0  # windows learnt so far: part of alias_window's memo key


def window_learnt(key: str, window: int) -> None:
    """Remember that deployment `key`'s model reads at most `window` tokens (its provider said
    so): from now on prompts on the aliases it serves are fitted to it, in this process."""
    global _learnt_count
    if window > 0 and window < _learnt_windows.get(key, window + 1):
        _learnt_windows[key] = window
        _learnt_count += 1


def deployment_window(deployment: DeploymentConfig) -> int | None:
    """The deployment's context window: the smaller of the configured one and the one learnt."""
    known = [w for w in (deployment.context_window, _learnt_windows.get(deployment.key)) if w]
    return min(known) if known else None


def alias_window(alias: str) -> int | None:
    """The smallest known context window among the enabled deployments a reply on `alias` may
    be sent to (its own, then its fallbacks'): a prompt fitted to it fits any of them. None
    when no deployment's window is known."""

    def smallest() -> int | None:
        current = catalog()
        aliases = [alias, *current.fallbacks_for(alias)]
        windows = [
            window
            for found in current.deployments_for(aliases).values()
            for d in found
            if d.enabled and (window := deployment_window(d))
        ]
        return min(windows) if windows else None

    # Keyed by what was learnt too: a window learnt later is seen at once.
    return catalog().memo(("alias_window", alias, _learnt_count), smallest)


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
