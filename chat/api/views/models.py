"""/api/v1/models: the model aliases a caller may ask for."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from chat.api.catalog import model_aliases
from chat.api.serializers import ModelOutputSerializer
from chat.api.views.base import ApiView, errors


class ModelListApi(ApiView):
    @extend_schema(
        operation_id="model_list",
        tags=["models"],
        responses={(200, "application/json"): ModelOutputSerializer(many=True), **errors()},
    )
    def get(self, request: Request) -> Response:
        """The model aliases you can use (the router picks a deployment for each)."""
        organisation_id = self.caller().organisation.pk
        aliases = model_aliases(organisation_id=organisation_id)
        return Response(ModelOutputSerializer(aliases, many=True).data)
