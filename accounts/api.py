"""REST endpoints of accounts (one view per operation)."""

from __future__ import annotations

from django.conf import settings
from django_ratelimit.core import get_usage
from rest_framework import exceptions
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.auth import ApiKeyAuthentication
from accounts.models import ApiKey, User
from accounts.selectors import ACTIVE_ORGANISATION_SESSION_KEY, organisation_active
from accounts.tickets import ws_ticket_issue
from accounts.two_factor import session_verified, two_factor_required


def _rate_key(group: str, request: Request) -> str:
    return f"{request.user.pk}"


class WsTicketView(APIView):
    """POST /api/v1/ws-ticket: a one-time ticket for `ws/chat/?ticket=…`, valid 30 seconds.

    Session (with CSRF) or API key. The ticket acts in the key's organisation, or in the
    session's active organisation.
    """

    authentication_classes = [ApiKeyAuthentication, SessionAuthentication]
    permission_classes = [IsAuthenticated]

    def post(self, request: Request) -> Response:
        usage = get_usage(
            request._request,
            group="api.ws-ticket",
            key=_rate_key,
            rate=settings.API_RATE_WS_TICKET,
            method="POST",
            increment=True,
        )
        if usage is not None and usage["should_limit"]:
            raise exceptions.Throttled(wait=usage["time_left"])
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
