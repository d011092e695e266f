"""The most a reply may cost per token, for budget reservations (accounts/quotas/).

A reply is reserved before it is routed, and the router may answer it from any deployment of
its alias or of the alias's fallbacks, so the reservation is priced at the highest input and
output prices among all of them (disabled ones too: they may be enabled before it runs).
Deployments without prices (those the settings serve) add nothing here; QUOTA_COST_PER_TOKEN
still bounds them.

Asked on every send, so the answer is kept with the catalogue it was worked out from
(llm/catalog.py: per process, until a provider, deployment or fallback chain changes).
"""

from __future__ import annotations

from decimal import Decimal

from accounts.quotas import TokenPrices
from llm.catalog import Catalog, catalog, default_alias


def price_ceiling(*, alias: str = "") -> TokenPrices:
    """The highest prices per million tokens a reply to `alias` (default: the default model)
    may be charged, whichever deployment ends up answering it."""
    alias = alias or default_alias()
    current = catalog()
    return current.memo(("price-ceiling", alias), lambda: _ceiling(current, alias))


def _ceiling(current: Catalog, alias: str) -> TokenPrices:
    found = current.deployments_for([alias, *current.fallbacks_for(alias)])
    candidates = [d for ds in found.values() for d in ds]
    zero = Decimal(0)
    return TokenPrices(
        input_per_million=max((d.input_price or zero for d in candidates), default=zero),
        output_per_million=max((d.output_price or zero for d in candidates), default=zero),
    )
