"""The model aliases a caller may ask for, from the router's catalog (llm/catalog.py)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from accounts.selectors import organisation_allowed_models
from chat.errors import ChatError
from chat.protocol import SendFrame
from core.errors import ParleyError
from llm.catalog import (
    DeploymentConfig,
    all_deployments,
    default_alias,
    deployments_for,
    fallbacks_for,
    tenant_alias,
    tenant_aliases,
)
from llm.options import GenerationOptions, option_unsupported


@dataclass(frozen=True)
class ModelAlias:
    id: str
    default: bool
    fallbacks: list[str] = field(default_factory=list)


def _enabled_aliases() -> set[str]:
    """The aliases with at least one enabled deployment (one query)."""
    return {d.alias for d in all_deployments() if d.enabled and d.alias}


def model_aliases(*, organisation_id: int | None = None) -> list[ModelAlias]:
    """Every alias with at least one enabled deployment, the default first; with an
    organisation, only those it may use (its allow-list, llm/catalog.py tenant_aliases): the
    model lists and the page's model picker."""
    default = default_alias()
    aliases = sorted(_enabled_aliases())
    aliases.sort(key=lambda alias: alias != default)
    if organisation_id is not None:
        allowed = organisation_allowed_models(organisation_id=organisation_id)
        aliases = tenant_aliases(aliases, allowed=allowed)
        if default not in aliases:
            # What a send without a model runs on there (tenant_alias): the first allowed.
            default = aliases[0] if aliases else ""
    return [ModelAlias(id=a, default=a == default, fallbacks=fallbacks_for(a)) for a in aliases]


def model_alias_known(alias: str) -> bool:
    return any(model.id == alias for model in model_aliases())


DEFAULT_NAME = "default"


def model_alias_resolve(model: str, *, allowed: Collection[str] = ()) -> str | None:
    """The alias a request's `model` names, or None if none: an alias, or `default` for the
    default model when no alias has that name (so `model="default"` works on a fresh install).

    Under an organisation's allow-list (`allowed`), `default` is what a send without a model
    runs on there (llm/catalog.py tenant_alias): the default if allowed, else the first allowed
    alias, so the docs' examples work for a restricted organisation too. A named alias is
    returned as it is; the allow-list refuses it later, with its own code (model_not_allowed).
    """
    known = _enabled_aliases()  # not model_aliases(): no fallback chains needed here
    if model in known:
        return model
    if model != DEFAULT_NAME:
        return None
    if allowed:
        return tenant_alias("", allowed=allowed) or default_alias()
    if (fallback := default_alias()) in known:
        return fallback
    return None


def model_alias_visible(model: str, *, allowed: Collection[str]) -> bool:
    """Whether an organisation with this allow-list sees `model` (GET /v1/models/<id>): the
    model lists hide the others, so their detail is a 404 too."""
    try:
        alias = model_alias_resolve(model, allowed=allowed)
    except ParleyError:
        return False  # `default`, and none of its models is available
    return alias is not None and bool(tenant_aliases([alias], allowed=allowed))


def model_option_unsupported(alias: str, options: GenerationOptions) -> str | None:
    """The first option that some enabled deployment of the alias, or of its fallbacks, cannot
    honour: a request is refused rather than answered without it by whichever one serves it."""
    if not options.set_params():
        return None
    return options_unsupported_by(alias_deployments(alias), options)


def alias_deployments(alias: str) -> list[DeploymentConfig]:
    """Every enabled deployment that may serve a reply on `alias`: its own, then its fallback
    chain's (two queries)."""
    aliases = [alias, *fallbacks_for(alias)]
    return [d for found in deployments_for(aliases).values() for d in found if d.enabled]


def options_unsupported_by(
    deployments: list[DeploymentConfig], options: GenerationOptions
) -> str | None:
    """The first option one of `deployments` cannot honour, else None."""
    for deployment in deployments:
        if param := option_unsupported(options, deployment.kind):
            return param
    return None


def deployments_all_remote(deployments: list[DeploymentConfig]) -> bool:
    """No local model among them: a reply they serve may be generated outside the `llm-local`
    worker (chat/replies/dispatch.py generation_in_this_server)."""
    return bool(deployments) and not any(d.is_local for d in deployments)


def send_choices(frame: SendFrame) -> tuple[str, GenerationOptions]:
    """A socket send's model alias and generation options, or a bad_frame naming what cannot
    be honoured (an unknown model, an option its providers lack)."""
    alias = ""
    if frame.model:
        alias = model_alias_resolve(frame.model) or ""
        if not alias:
            raise ChatError("bad_frame", f"No model {frame.model!r} (GET /api/v1/models).")
        if frame.model == DEFAULT_NAME and alias != DEFAULT_NAME:
            # What a send without a model runs on: under the conversation's allow-list, the
            # first allowed model when the default is not (reply_create picks it).
            alias = ""
    options = GenerationOptions(max_tokens=frame.max_tokens, temperature=frame.temperature)
    if param := model_option_unsupported(alias or default_alias(), options):
        raise ChatError("bad_frame", f"The model's provider cannot honour `{param}`.")
    return alias, options
