"""Reads of accounts, each for a given user."""

from __future__ import annotations

from django.db.models import QuerySet

from accounts.models import ApiKey, Membership, Organisation, User
from accounts.services import organisation_personal_ensure
from core.cache import cached_forget, cached_read

ACTIVE_ORGANISATION_SESSION_KEY = "active_organisation"
OPERATOR_ROLES = (Membership.Role.OPERATOR, Membership.Role.ADMIN)


def organisation_list(*, user: User) -> QuerySet[Organisation]:
    """The organisations the user is a member of."""
    return Organisation.objects.filter(memberships__user=user).order_by("name")


def membership_list(*, user: User) -> QuerySet[Membership]:
    """The user's memberships with their organisations, by organisation name."""
    return (
        Membership.objects.filter(user=user)
        .select_related("organisation")
        .order_by("organisation__name", "organisation_id")
    )


def organisation_access(*, user: User, organisation_id: int) -> Organisation | None:
    return Organisation.objects.filter(pk=organisation_id, memberships__user=user).first()


def organisation_active(*, user: User, requested_id: object = None) -> Organisation:
    """The organisation the user works in: the one asked for (the session's choice) if they
    are a member of it, else their personal organisation."""
    if isinstance(requested_id, int):
        organisation = organisation_access(user=user, organisation_id=requested_id)
        if organisation is not None:
            return organisation
    return organisation_personal_ensure(user=user)


def operated_organisation_ids(*, user: User) -> set[int]:
    """Organisations where the user is an operator or admin (what they see in the admin)."""
    return set(
        Membership.objects.filter(user=user, role__in=OPERATOR_ROLES).values_list(
            "organisation_id", flat=True
        )
    )


def administered_organisation_ids(*, user: User) -> set[int]:
    return set(
        Membership.objects.filter(user=user, role=Membership.Role.ADMIN).values_list(
            "organisation_id", flat=True
        )
    )


def api_key_list(*, user: User, organisation: Organisation) -> QuerySet[ApiKey]:
    """The user's own keys in an organisation (operators revoke others' keys in the admin)."""
    return ApiKey.objects.filter(user=user, organisation=organisation)


def api_key_access(*, user: User, key_id: int) -> ApiKey | None:
    return ApiKey.objects.select_related("organisation").filter(pk=key_id, user=user).first()


ALLOWED_MODELS_CACHE_KEY = "tenant:models:{organisation_id}"
ALLOWED_MODELS_CACHE_SECONDS = 300


def organisation_allowed_models(*, organisation_id: int) -> frozenset[str]:
    """The model aliases an organisation may use (empty: every model): plain data for the
    one check in llm/catalog.py (`tenant_alias`, `tenant_aliases`). From the cache when it
    has them (and can be reached), as budget rules are (every send asks); saving an
    organisation drops them."""

    def read() -> frozenset[str]:
        allowed = (
            Organisation.objects.filter(pk=organisation_id)
            .values_list("allowed_models", flat=True)
            .first()
        )
        return frozenset(str(alias) for alias in (allowed or []))

    return cached_read(
        ALLOWED_MODELS_CACHE_KEY.format(organisation_id=organisation_id),
        read,
        timeout=ALLOWED_MODELS_CACHE_SECONDS,
    )


def organisation_allowed_models_forget(*, organisation_id: int) -> None:
    """Called when an organisation is saved (accounts.signals)."""
    cached_forget(ALLOWED_MODELS_CACHE_KEY.format(organisation_id=organisation_id))
