"""drf-spectacular extensions: how the schema shows Parley's API keys, and annotations for
API views that live in other apps (accounts' ws-ticket), so the one schema covers /api/v1/."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiViewExtension
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers

from accounts.api_serializers import (
    ApiKeyCreatedSerializer,
    ApiKeyCreateInputSerializer,
    ApiKeyOutputSerializer,
)
from chat.api.errors import ErrorSerializer


class ApiKeyScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "accounts.auth.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "pk_<prefix>_<secret>",
            "description": "A Parley API key (Account → API keys); reaches its organisation only.",
        }


class WsTicketSerializer(serializers.Serializer):
    ticket = serializers.CharField()
    expires_in = serializers.IntegerField(help_text="Seconds the ticket stays valid.")
    url = serializers.CharField(help_text="Where to open the WebSocket with it.")
    organisation = serializers.IntegerField()


class WsTicketSchema(OpenApiViewExtension):  # type: ignore[no-untyped-call]
    target_class = "accounts.api.WsTicketView"

    def view_replacement(self) -> Any:
        class Fixed(self.target_class):  # type: ignore[name-defined,misc]
            @extend_schema(
                operation_id="ws_ticket",
                tags=["websocket"],
                request=None,
                responses={
                    201: WsTicketSerializer,
                    401: ErrorSerializer,
                    403: ErrorSerializer,
                    429: ErrorSerializer,
                },
            )
            def post(self, request: Any) -> Any:
                return super().post(request)

        return Fixed


def _annotated(view: Any, **methods: Any) -> Any:
    """A subclass of `view` whose HTTP methods carry these schema annotations (the view itself,
    in accounts, stays free of chat's error serializer)."""
    return extend_schema_view(**methods)(type(view.__name__, (view,), {}))


_KEY_ERRORS = {401: ErrorSerializer, 403: ErrorSerializer}


class ApiKeyListCreateSchema(OpenApiViewExtension):  # type: ignore[no-untyped-call]
    target_class = "accounts.api.ApiKeyListCreateView"

    def view_replacement(self) -> Any:
        return _annotated(
            self.target_class,
            get=extend_schema(
                operation_id="api_key_list",
                tags=["keys"],
                responses={200: ApiKeyOutputSerializer(many=True), 401: ErrorSerializer},
            ),
            post=extend_schema(
                operation_id="api_key_create",
                tags=["keys"],
                request=ApiKeyCreateInputSerializer,
                responses={
                    201: ApiKeyCreatedSerializer,
                    400: ErrorSerializer,
                    **_KEY_ERRORS,
                    429: ErrorSerializer,
                },
            ),
        )


class ApiKeyRevokeSchema(OpenApiViewExtension):  # type: ignore[no-untyped-call]
    target_class = "accounts.api.ApiKeyRevokeView"

    def view_replacement(self) -> Any:
        return _annotated(
            self.target_class,
            delete=extend_schema(
                operation_id="api_key_revoke",
                tags=["keys"],
                responses={204: None, **_KEY_ERRORS, 404: ErrorSerializer},
            ),
        )


def closed_request_bodies(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: request bodies allow no properties besides their
    own (additionalProperties: false), as the server enforces (StrictInputSerializer)."""
    for name, component in result.get("components", {}).get("schemas", {}).items():
        if name.endswith("Request") and component.get("type") == "object":
            component["additionalProperties"] = False
    return result
