"""/api/v1/conversations…: list, create, detail, rename, delete, and export as JSON or
Markdown."""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import renderers
from rest_framework.request import Request
from rest_framework.response import Response

from chat import selectors, services
from chat.api.export import export_json, export_markdown
from chat.api.serializers import (
    ConversationCreateInputSerializer,
    ConversationExportSerializer,
    ConversationListInputSerializer,
    ConversationOutputSerializer,
    ConversationRenameInputSerializer,
)
from chat.api.views.base import ApiView, Pagination, errors, paginated
from chat.models import Conversation


class ConversationListApi(ApiView):
    pagination_class = Pagination

    @extend_schema(
        operation_id="conversation_list",
        tags=["conversations"],
        parameters=[ConversationListInputSerializer],
        responses={
            (200, "application/json"): ConversationOutputSerializer(many=True),
            **errors(400, 404),
        },
    )
    def get(self, request: Request) -> Response:
        """Your conversations, most recently active first; `search` looks in titles and
        message text."""
        query = ConversationListInputSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        caller = self.caller()
        conversations = selectors.conversation_list(
            user=caller.user,
            organisation=caller.only_organisation,
            origins=query.validated_data.get("origin") or None,
            search=query.validated_data.get("search", ""),
        )
        return paginated(
            self, conversations.order_by("-updated_at", "-id"), ConversationOutputSerializer
        )


class ConversationCreateApi(ApiView):
    @extend_schema(
        operation_id="conversation_create",
        tags=["conversations"],
        request=ConversationCreateInputSerializer,
        responses={(201, "application/json"): ConversationOutputSerializer, **errors(400)},
    )
    def post(self, request: Request) -> Response:
        """A new, empty conversation in your (or your key's) organisation."""
        data = ConversationCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        caller = self.caller()
        conversation = services.conversation_create(
            owner=caller.user,
            title=data.validated_data["title"],
            organisation=caller.organisation,
            origin=Conversation.Origin.REST,
        )
        return Response(ConversationOutputSerializer(conversation).data, status=201)


class ConversationDetailApi(ApiView):
    @extend_schema(
        operation_id="conversation_detail",
        tags=["conversations"],
        responses={(200, "application/json"): ConversationOutputSerializer, **errors(404)},
    )
    def get(self, request: Request, conversation_id: int) -> Response:
        return Response(ConversationOutputSerializer(self.conversation(conversation_id)).data)


class ConversationRenameApi(ApiView):
    @extend_schema(
        operation_id="conversation_rename",
        tags=["conversations"],
        request=ConversationRenameInputSerializer,
        responses={(200, "application/json"): ConversationOutputSerializer, **errors(400, 404)},
    )
    def patch(self, request: Request, conversation_id: int) -> Response:
        """Change the title (a body without one changes nothing)."""
        conversation = self.conversation(conversation_id)
        data = ConversationRenameInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        if "title" in data.validated_data:
            conversation = services.conversation_rename(
                conversation=conversation, title=data.validated_data["title"]
            )
        return Response(ConversationOutputSerializer(conversation).data)


class ConversationDeleteApi(ApiView):
    @extend_schema(
        operation_id="conversation_delete",
        tags=["conversations"],
        responses={(204, "application/json"): None, **errors(404)},
    )
    def delete(self, request: Request, conversation_id: int) -> Response:
        """Delete the conversation and its messages; running replies are stopped."""
        conversation = self.conversation(conversation_id)
        services.conversation_delete(conversation=conversation, by=self.caller().user)
        return Response(status=204)


def attachment(response: HttpResponse, conversation: Conversation, extension: str) -> None:
    """Make the answer a download named after the conversation."""
    response["Content-Disposition"] = (
        f'attachment; filename="conversation-{conversation.pk}.{extension}"'
    )


class ConversationExportJsonApi(ApiView):
    @extend_schema(
        operation_id="conversation_export_json",
        tags=["conversations"],
        responses={(200, "application/json"): ConversationExportSerializer, **errors(404)},
    )
    def get(self, request: Request, conversation_id: int) -> Response:
        """The conversation and its messages as JSON (a download)."""
        conversation = self.conversation(conversation_id)
        response = Response(ConversationExportSerializer(export_json(conversation)).data)
        attachment(response, conversation, "json")
        return response


class MarkdownRenderer(renderers.BaseRenderer):
    media_type = "text/markdown"
    format = "md"
    charset = "utf-8"

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None
    ) -> bytes:
        if isinstance(data, str):
            return data.encode()
        # An error body: JSON text is still readable as Markdown.
        return json.dumps(data, default=str).encode()


class ConversationExportMarkdownApi(ApiView):
    renderer_classes = [renderers.JSONRenderer, MarkdownRenderer]

    @extend_schema(
        operation_id="conversation_export_markdown",
        tags=["conversations"],
        responses={
            (200, "text/markdown"): OpenApiResponse(OpenApiTypes.STR, description="Markdown"),
            **errors(404),
        },
    )
    def get(self, request: Request, conversation_id: int) -> HttpResponse:
        """The conversation as Markdown (a download)."""
        conversation = self.conversation(conversation_id)
        response = HttpResponse(
            export_markdown(conversation), content_type="text/markdown; charset=utf-8"
        )
        attachment(response, conversation, "md")
        return response
