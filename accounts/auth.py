"""REST authentication for programs: `Authorization: Bearer pk_<prefix>_<secret>`."""

from __future__ import annotations

from typing import Any

from rest_framework import authentication, exceptions
from rest_framework.request import Request

from accounts.models import ApiKey, User
from accounts.services import API_KEY_PREFIX, api_key_use


def bearer_token(header: str | bytes | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value, else None."""
    if not header:
        return None
    if isinstance(header, bytes):
        header = header.decode("latin1")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """request.user is the key's user, request.auth the ApiKey (its organisation scopes it)."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[User, ApiKey] | None:
        token = bearer_token(request.META.get("HTTP_AUTHORIZATION"))
        if token is None or not token.startswith(f"{API_KEY_PREFIX}_"):
            return None  # not ours: let other authenticators try
        key = api_key_use(raw=token)
        if key is None:
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked API key.")
        return key.user, key

    def authenticate_header(self, request: Any) -> str:
        return self.keyword
