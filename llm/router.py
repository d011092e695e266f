"""Which deployment answers a reply: rotation, tiers, fallbacks, breakers and budgets.

`provider_choose` names the likely deployment when a reply is created (its queue, and the
provider shown until it answers). `route_plan` orders every deployment that may answer it:
the alias's tiers (best first; weighted round-robin within a tier), then each fallback alias
the same way. `gate` decides, just before an attempt, whether a deployment may be tried now
(breaker, Retry-After pause, rpm/tpm budgets); `attempt_succeeded` / `attempt_failed` report
back. llm/failover.py walks the plan.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from itertools import groupby

from llm import health, limits
from llm.breaker import CircuitBreaker, Permit, counter_incr
from llm.catalog import DeploymentConfig, default_alias, deployments_for, fallbacks_for
from llm.providers.base import ProviderError

logger = logging.getLogger(__name__)

_ROTATION_TTL = 86400


@dataclass(frozen=True)
class Skip:
    """Why a deployment was passed over, and when it may take traffic again."""

    reason: str  # circuit_open | retry_after | rpm_limit | tpm_limit
    retry_in: float | None = None


@dataclass(frozen=True)
class RoutePlan:
    alias: str
    chain: list[str] = field(default_factory=list)  # the alias, then its fallbacks
    candidates: list[DeploymentConfig] = field(default_factory=list)


def _unknown(alias: str) -> ProviderError:
    return ProviderError("provider_rejected", f"No model named {alias!r} is configured.")


def provider_choose(*, pinned: str = "") -> DeploymentConfig:
    """The deployment a new reply will most likely use: of its alias (a pinned model, else
    the default), the best tier's heaviest enabled deployment. Health is not consulted here;
    the generation routes afresh when it starts."""
    alias = pinned or default_alias()
    found = [d for d in deployments_for([alias])[alias] if d.enabled]
    if not found:
        raise _unknown(alias)
    return min(found, key=lambda d: (d.priority, -d.weight))


def weighted_pick(weights: list[int], turn: int) -> int:
    """Which of the weighted slots turn `turn` lands on: in every run of sum(weights) turns,
    slot i gets exactly weights[i] of them."""
    position = turn % sum(weights)
    for index, weight in enumerate(weights):
        if position < weight:
            return index
        position -= weight
    raise AssertionError("unreachable: position < sum(weights)")


def rotation(alias: str, deployments: list[DeploymentConfig]) -> list[DeploymentConfig]:
    """Enabled deployments by tier; in each tier, starting where the shared round-robin
    counter says, then the rest of the tier in order (what to try when that one fails)."""
    ordered: list[DeploymentConfig] = []
    enabled = sorted((d for d in deployments if d.enabled), key=lambda d: (d.priority, d.key))
    for priority, tier_iter in groupby(enabled, key=lambda d: d.priority):
        tier = list(tier_iter)
        if len(tier) > 1:
            try:
                turn = counter_incr(f"llm:rr:{alias}:{priority}", _ROTATION_TTL) - 1
            except Exception:
                logger.warning("rotation counter unreadable for %s", alias, exc_info=True)
                turn = 0
            start = weighted_pick([max(1, d.weight) for d in tier], turn)
            tier = tier[start:] + tier[:start]
        ordered.extend(tier)
    return ordered


def route_plan(alias: str, *, allowed: Collection[str] = ()) -> RoutePlan:
    """Every deployment that may answer `alias`, in the order to try them. `allowed` is the
    organisation's model allow-list (empty: every model): a fallback it lacks is skipped, so a
    failover never answers from a model the tenant may not use."""
    chain = [alias, *(f for f in fallbacks_for(alias) if not allowed or f in allowed)]
    found = deployments_for(chain)
    if not found[alias] and not any(found.values()):
        raise _unknown(alias)
    candidates: list[DeploymentConfig] = []
    seen: set[str] = set()
    for name in chain:
        for deployment in rotation(name, found[name]):
            if deployment.key not in seen:
                seen.add(deployment.key)
                candidates.append(deployment)
    return RoutePlan(alias=alias, chain=chain, candidates=candidates)


# Breakers, limits, rotation and health live in the cache (Redis in production). If it cannot
# be reached, routing fails open — every breaker closed, no limits, rotation from the top — and
# says so in the log: an outage of the bookkeeping must not stop replies too.


def gate(deployment: DeploymentConfig, *, prompt_tokens: int) -> Permit | Skip:
    """May this deployment be tried now? A breaker permit, or why not."""
    breaker = CircuitBreaker(deployment.key)
    try:
        permit = breaker.allow()
        if permit is None:
            return Skip("circuit_open", breaker.status().retry_in)
        limited = limits.limit_check(deployment, prompt_tokens=prompt_tokens)
    except Exception:
        logger.warning("routing state unreadable; %s goes ungated", deployment.key, exc_info=True)
        return Permit(deployment.key)
    if limited is not None:
        breaker.release(permit)
        return Skip(*limited)
    return permit


def attempt_succeeded(deployment: DeploymentConfig, permit: Permit, *, first_token_ms: int) -> None:
    try:
        CircuitBreaker(deployment.key).record_success(permit)
        health.health_success(deployment, first_token_ms=first_token_ms)
    except Exception:
        logger.warning("routing state not saved for %s", deployment.key, exc_info=True)


def attempt_failed(deployment: DeploymentConfig, permit: Permit, error: ProviderError) -> None:
    """Count a failure against the deployment, unless the request itself was at fault (400)."""
    breaker = CircuitBreaker(deployment.key)
    try:
        if error.retryable or error.deployment_fault:
            breaker.record_failure(permit)
        else:
            breaker.release(permit)
        if error.retry_after:
            limits.pause(deployment, error.retry_after)
        health.health_failure(deployment, error)
    except Exception:
        logger.warning("routing state not saved for %s", deployment.key, exc_info=True)


def attempt_abandoned(deployment: DeploymentConfig, permit: Permit) -> None:
    """Neither success nor failure (the reply was cancelled): free a probe slot."""
    try:
        CircuitBreaker(deployment.key).release(permit)
    except Exception:
        logger.warning("probe slot of %s not released", deployment.key, exc_info=True)
