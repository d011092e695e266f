"""The model aliases a caller may ask for, from the router's catalog (llm/catalog.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from llm.catalog import all_deployments, default_alias, fallbacks_for


@dataclass(frozen=True)
class ModelAlias:
    id: str
    default: bool
    fallbacks: list[str] = field(default_factory=list)


def model_aliases() -> list[ModelAlias]:
    """Every alias with at least one enabled deployment, the default first."""
    default = default_alias()
    aliases = sorted({d.alias for d in all_deployments() if d.enabled and d.alias})
    aliases.sort(key=lambda alias: alias != default)
    return [ModelAlias(id=a, default=a == default, fallbacks=fallbacks_for(a)) for a in aliases]


def model_alias_known(alias: str) -> bool:
    return any(model.id == alias for model in model_aliases())
