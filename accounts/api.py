"""REST endpoints of accounts (one view per operation)."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import cast

from django.conf import settings
from django.utils import timezone
from django_ratelimit.core import get_usage
from rest_framework import exceptions
from rest_framework.authentication import SessionAuthentication
from rest_framework.parsers import BaseParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from accounts import selectors, services
from accounts.api_serializers import (
    ApiKeyCreateInputSerializer,
    ApiKeyOutputSerializer,
)
from accounts.auth import ApiKeyAuthentication
from accounts.models import ApiKey, Organisation, User
from accounts.selectors import ACTIVE_ORGANISATION_SESSION_KEY, organisation_active
from accounts.signals import client_ip
from accounts.tickets import ws_ticket_issue
from accounts.two_factor import session_verified, two_factor_required
from core.observability import metrics

logger = logging.getLogger(__name__)


def _rate_key(group: str, request: Request) -> str:
    return f"{request.user.pk}"


def _rate_check(request: Request, *, group: str, rate: str) -> None:
    """Count this POST against the user's `rate` in `group`; 429 (Throttled) past it. The
    counts live in Redis: while it is unreachable the POST is not counted (as the send limits
    go on without it, accounts/limits.py), rather than refused with a 500."""
    try:
        usage = get_usage(
            request._request, group=group, key=_rate_key, rate=rate, method="POST", increment=True
        )
    except Exception as error:
        logger.warning("rate counts unreachable (%r); %s not counted", error, group)
        return
    if usage is not None and usage["should_limit"]:
        # Counted as the views' own limits are (accounts/ratelimit.py): the ParleyRateLimiting
        # alert reads it for API_RATE_* as for WS_RATE_*.
        metrics.REFUSALS.labels("rate_limited", "http").inc()
        raise exceptions.Throttled(wait=usage["time_left"])


class WsTicketView(APIView):
    """POST /api/v1/ws-ticket: a one-time ticket for `ws/chat/?ticket=…`, valid 30 seconds.

    Session (with CSRF) or API key. The ticket acts in the key's organisation, or in the
    session's active organisation.
    """

    authentication_classes = [ApiKeyAuthentication, SessionAuthentication]
    permission_classes = [IsAuthenticated]

    def post(self, request: Request) -> Response:
        _rate_check(request, group="api.ws-ticket", rate=settings.API_RATE_WS_TICKET)
        user = request.user
        assert isinstance(user, User)
        api_key = request.auth if isinstance(request.auth, ApiKey) else None
        if api_key is not None:
            organisation = api_key.organisation
        else:
            if two_factor_required(user=user) and not session_verified(
                user=user, session=request.session
            ):
                raise exceptions.PermissionDenied("Verify with your authenticator app first.")
            organisation = organisation_active(
                user=user, requested_id=request.session.get(ACTIVE_ORGANISATION_SESSION_KEY)
            )
        ticket = ws_ticket_issue(user=user, organisation=organisation, api_key=api_key)
        return Response(
            {
                "ticket": ticket,
                "expires_in": settings.WS_TICKET_TTL_SECONDS,
                "url": f"/ws/chat/?ticket={ticket}",
                "organisation": organisation.pk,
            },
            status=201,
        )


# --- API keys -------------------------------------------------------------------------------


class _SignedIn(APIView):
    authentication_classes = [ApiKeyAuthentication, SessionAuthentication]
    permission_classes = [IsAuthenticated]
    # JSON only, as the schema says (the API's bounded JSON parser, from the settings): a form
    # or multipart body is a 415 in the API's error shape.
    parser_classes = [
        parser
        for parser in cast(list[type[BaseParser]], api_settings.DEFAULT_PARSER_CLASSES)
        if parser.media_type == "application/json"
    ]

    def user(self) -> User:
        user = self.request.user
        assert isinstance(user, User)
        return user

    def api_key(self) -> ApiKey | None:
        return self.request.auth if isinstance(self.request.auth, ApiKey) else None

    def organisation(self) -> Organisation:
        """The key's organisation, else the session's active one."""
        key = self.api_key()
        if key is not None:
            return key.organisation
        return organisation_active(
            user=self.user(),
            requested_id=self.request.session.get(ACTIVE_ORGANISATION_SESSION_KEY),
        )


class ApiKeyListCreateView(_SignedIn):
    """GET /api/v1/keys: your keys in the organisation (a key: its own organisation's).
    POST /api/v1/keys: a new key, for a signed-in person only (session with CSRF, two-factor
    verified when required): an API key cannot make keys, so a leaked key cannot multiply
    itself or outlive its revocation."""

    def get(self, request: Request) -> Response:
        keys = selectors.api_key_list(user=self.user(), organisation=self.organisation())
        return Response(ApiKeyOutputSerializer(keys, many=True).data)

    def post(self, request: Request) -> Response:
        if self.api_key() is not None:
            raise exceptions.PermissionDenied(
                "API keys cannot create API keys: sign in (session) to make one."
            )
        user = self.user()
        if two_factor_required(user=user) and not session_verified(
            user=user, session=request.session
        ):
            raise exceptions.PermissionDenied("Verify with your authenticator app first.")
        _rate_check(request, group="api.keys", rate=settings.API_RATE_KEY_CREATE)
        data = ApiKeyCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        days = data.validated_data.get("expires_in_days")
        created = services.api_key_create(
            user=user,
            organisation=self.organisation(),
            name=data.validated_data["name"],
            expires_at=timezone.now() + timedelta(days=days) if days else None,
            ip=client_ip(request._request),
        )
        body = {**ApiKeyOutputSerializer(created.key).data, "key": created.raw}
        return Response(body, status=201)


class ApiKeyRevokeView(_SignedIn):
    """DELETE /api/v1/keys/<id>: revoke one of your keys at once (204; again: 204). A
    signed-in person may revoke any of their own keys; an API key only itself. Anyone else's
    key is a 404."""

    def delete(self, request: Request, key_id: int) -> Response:
        key = selectors.api_key_access(user=self.user(), key_id=key_id)
        if key is None:
            raise exceptions.NotFound("No such key.")
        acting = self.api_key()
        if acting is not None and acting.pk != key.pk:
            raise exceptions.PermissionDenied(
                "An API key can revoke only itself; sign in to revoke your other keys."
            )
        services.api_key_revoke(key=key, by=self.user(), ip=client_ip(request._request))
        return Response(status=204)
