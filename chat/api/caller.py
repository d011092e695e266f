"""Who is calling the API, and which organisation(s) they reach."""

from __future__ import annotations

from dataclasses import dataclass

from rest_framework.request import Request

from accounts.models import ApiKey, Organisation, User
from accounts.selectors import ACTIVE_ORGANISATION_SESSION_KEY, organisation_active


@dataclass(frozen=True)
class Caller:
    user: User
    # Where new conversations start and whose rate limits and budgets count.
    organisation: Organisation
    # What reads are limited to: the key's organisation for a program, None (every
    # organisation the user belongs to) for a signed-in person, as on the socket.
    only_organisation: Organisation | None
    api_key: ApiKey | None

    @property
    def idempotency_scope(self) -> str:
        """Idempotency keys are the caller's own: per API key, else per user."""
        if self.api_key is not None:
            return f"key:{self.api_key.pk}"
        return f"user:{self.user.pk}"


def caller_of(request: Request) -> Caller:
    user = request.user
    assert isinstance(user, User), "views require an authenticated user"
    if isinstance(request.auth, ApiKey):
        key = request.auth
        return Caller(
            user=user,
            organisation=key.organisation,
            only_organisation=key.organisation,
            api_key=key,
        )
    organisation = organisation_active(
        user=user, requested_id=request.session.get(ACTIVE_ORGANISATION_SESSION_KEY)
    )
    return Caller(user=user, organisation=organisation, only_organisation=None, api_key=None)
