"""/api/v1/usage…: tokens and cost, the caller's own and (for its operators) the whole
organisation's."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.selectors import operated_organisation_ids
from chat.api.serializers import (
    OrganisationUsageOutputSerializer,
    UsageInputSerializer,
    UsageOutputSerializer,
)
from chat.api.usage import usage_by_member, usage_summary
from chat.api.views.base import ApiView, errors, query_dict
from chat.errors import ChatError


class UsageApi(ApiView):
    @extend_schema(
        operation_id="usage",
        tags=["usage"],
        parameters=[UsageInputSerializer],
        responses={(200, "application/json"): UsageOutputSerializer, **errors(400)},
    )
    def get(self, request: Request) -> Response:
        """Your tokens and cost in your (or your key's) organisation: today, this month, and
        per day."""
        query = UsageInputSerializer(data=query_dict(request))
        query.is_valid(raise_exception=True)
        caller = self.caller()
        summary = usage_summary(
            organisation=caller.organisation, user=caller.user, days=query.validated_data["days"]
        )
        return Response(UsageOutputSerializer(summary).data)


class OrganisationUsageApi(ApiView):
    @extend_schema(
        operation_id="usage_organisation",
        tags=["usage"],
        parameters=[UsageInputSerializer],
        responses={(200, "application/json"): OrganisationUsageOutputSerializer, **errors(400)},
    )
    def get(self, request: Request) -> Response:
        """The whole organisation's tokens and cost, and each member's this month: for its
        operators and admins."""
        query = UsageInputSerializer(data=query_dict(request))
        query.is_valid(raise_exception=True)
        caller = self.caller()
        if caller.organisation.pk not in operated_organisation_ids(user=caller.user):
            raise ChatError("forbidden", "Only the organisation's operators and admins see this.")
        summary = usage_summary(
            organisation=caller.organisation, user=None, days=query.validated_data["days"]
        )
        summary["members"] = usage_by_member(organisation=caller.organisation)
        return Response(OrganisationUsageOutputSerializer(summary).data)
