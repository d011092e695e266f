"""REST twins of the socket's `regenerate` and `edit` (docs/protocol.md): the same services,
the same rate limit (sends, edits and regenerates count together), the same answer as a send."""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from accounts import limits
from chat import services
from chat.api import idempotency
from chat.api.serializers import (
    MessageEditInputSerializer,
    MessageRegenerateInputSerializer,
    MessageSendOutputSerializer,
)
from chat.api.views import (
    IDEMPOTENCY_KEY,
    ApiView,
    client_id_of,
    errors,
    run_idempotent,
    send_outcome,
    state_conflicts,
)

_ANSWERS: dict[Any, Any] = {
    201: MessageSendOutputSerializer,
    (200, "application/json"): OpenApiResponse(MessageSendOutputSerializer, description="A repeat"),
    **errors(400, 404, 409, 422, 502, 503),
}


class MessageRegenerateApi(ApiView):
    @extend_schema(
        operation_id="message_regenerate",
        tags=["messages"],
        request=MessageRegenerateInputSerializer,
        responses=_ANSWERS,
    )
    def post(self, request: Request, message_id: int) -> Response:
        """Answer the same user message again; the old reply (the conversation's last, final)
        is kept, superseded. A repeat answers with the reply that replaced it (200)."""
        message = self.message(message_id)
        MessageRegenerateInputSerializer(data=request.data or {}).is_valid(raise_exception=True)
        caller = self.caller()
        async_to_sync(limits.send_check)(
            user_id=caller.user.pk, organisation_id=message.conversation.organisation_id
        )
        with state_conflicts():
            result = services.reply_regenerate(message=message, by=caller.user)
        outcome = send_outcome(result)
        return Response(outcome.body, status=outcome.status, headers=outcome.headers)


class MessageEditApi(ApiView):
    @extend_schema(
        operation_id="message_edit",
        tags=["messages"],
        request=MessageEditInputSerializer,
        parameters=[IDEMPOTENCY_KEY],
        responses=_ANSWERS,
    )
    def post(self, request: Request, message_id: int) -> Response:
        """Replace your message with new text and answer it; it and everything after it are
        superseded (running replies there are stopped). Idempotent on `client_id` (or the
        Idempotency-Key header)."""
        message = self.message(message_id)
        data = MessageEditInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        caller = self.caller()

        def edit() -> idempotency.Outcome:
            async_to_sync(limits.send_check)(
                user_id=caller.user.pk, organisation_id=message.conversation.organisation_id
            )
            with state_conflicts():
                result = services.message_edit(
                    message=message,
                    author=caller.user,
                    text=data.validated_data["text"],
                    client_id=client_id_of(request, caller, data.validated_data.get("client_id")),
                )
            return send_outcome(result)

        return run_idempotent(request, caller, data.validated_data, edit)
