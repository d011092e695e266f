"""/api/v1/…messages…: list a conversation's messages, send one (which starts the reply),
read one, cancel a reply, and the REST twins of the socket's `regenerate` and `edit`
(docs/protocol.md): the same services, the same rate limit (sends, edits and regenerates count
together), the same answer as a send. Following a reply's text is in `stream`."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from asgiref.sync import async_to_sync
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from accounts import limits
from accounts.selectors import organisation_allowed_models
from chat import selectors, services
from chat.api import idempotency
from chat.api.caller import Caller
from chat.api.catalog import model_alias_resolve, model_option_unsupported
from chat.api.errors import error_response
from chat.api.serializers import (
    MessageEditInputSerializer,
    MessageOutputSerializer,
    MessageRegenerateInputSerializer,
    MessageSendInputSerializer,
    MessageSendOutputSerializer,
)
from chat.api.views.base import ApiView, Pagination, errors, paginated, state_conflicts
from chat.replies.lifecycle import reply_cancel
from llm.catalog import default_alias
from llm.options import GenerationOptions


class MessageListApi(ApiView):
    pagination_class = Pagination

    @extend_schema(
        operation_id="message_list",
        tags=["messages"],
        responses={
            (200, "application/json"): MessageOutputSerializer(many=True),
            **errors(400, 404),
        },
    )
    def get(self, request: Request, conversation_id: int) -> Response:
        """The conversation's messages as it stands (superseded ones left out), oldest first."""
        conversation = self.conversation(conversation_id)
        messages = selectors.message_history(conversation=conversation).order_by("created_at", "id")
        return paginated(self, messages, MessageOutputSerializer)


IDEMPOTENCY_KEY = OpenApiParameter(
    name=idempotency.HEADER,
    type={
        "type": "string",
        "minLength": 1,
        "maxLength": idempotency.MAX_KEY_LENGTH,
        "pattern": idempotency.KEY_PATTERN,
    },
    location=OpenApiParameter.HEADER,
    required=False,
    description="Any unique string of yours: a repeat returns the first result, a concurrent "
    "duplicate gets 409, a reuse with another body 422.",
)


def client_id_of(request: Request, caller: Caller, given: str | None) -> str:
    """The client id a write is idempotent on: the body's, else one derived from the
    Idempotency-Key header, else a fresh one."""
    key = request.headers.get(idempotency.HEADER)
    if given:
        return given
    if key:
        return idempotency.client_id_for(scope=caller.idempotency_scope, key=key)
    return f"api-{uuid.uuid4().hex}"


def run_idempotent(
    request: Request,
    caller: Caller,
    payload: dict[str, Any],
    operation: Callable[[], idempotency.Outcome],
) -> Response:
    """Run a write once per Idempotency-Key (when the header is there) and answer it."""
    key = request.headers.get(idempotency.HEADER)
    if key is None:
        outcome = operation()
    else:
        try:
            slot = idempotency.slot_for(
                scope=caller.idempotency_scope,
                key=key,
                method="POST",
                path=request.path,
                payload=payload,
            )
            outcome = idempotency.run_once(slot, operation)
        except idempotency.IdempotencyRefused as refused:
            return error_response(refused.status, refused.code, refused.detail)
    return Response(outcome.body, status=outcome.status, headers=outcome.headers)


def send_outcome(result: services.SendResult) -> idempotency.Outcome:
    """A send's, an edit's or a regenerate's answer: 201 with the ids (200 for a repeat)."""
    body = MessageSendOutputSerializer(
        {
            "conversation": result.reply.conversation_id,
            "message": result.user_message.pk,
            "reply": result.reply.pk,
            "created": result.created,
            "stream_url": reverse("chat_api:message-stream", args=[result.reply.pk]),
            "reply_url": reverse("chat_api:message-detail", args=[result.reply.pk]),
        }
    ).data
    return idempotency.Outcome(
        status=201 if result.created else 200,
        body=dict(body),
        headers={"Location": body["reply_url"]},
    )


class MessageSendApi(ApiView):
    @extend_schema(
        operation_id="message_send",
        tags=["messages"],
        request=MessageSendInputSerializer,
        parameters=[IDEMPOTENCY_KEY],
        responses={
            201: MessageSendOutputSerializer,
            (200, "application/json"): OpenApiResponse(
                MessageSendOutputSerializer, description="A repeat (client_id)"
            ),
            **errors(400, 404, 409, 422, 502, 503),
        },
    )
    def post(self, request: Request, conversation_id: int) -> Response:
        """Post a user message and start the assistant's reply; returns both ids at once.

        Follow the reply with GET `stream_url` (server-sent events), the WebSocket, or by
        polling `reply_url`."""
        conversation = self.conversation(conversation_id)
        data = MessageSendInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        caller = self.caller()
        alias = ""
        if model := data.validated_data.get("model"):
            allowed = organisation_allowed_models(organisation_id=conversation.organisation_id)
            alias = model_alias_resolve(model, allowed=allowed) or ""
            if not alias:
                detail = f"No model {model!r} (GET models lists them)."
                return error_response(404, "not_found", detail, fields={"model": [detail]})
        options = GenerationOptions(
            max_tokens=data.validated_data.get("max_tokens"),
            temperature=data.validated_data.get("temperature"),
        )
        if param := model_option_unsupported(alias or default_alias(), options):
            raise ValidationError({param: ["The model's provider cannot honour this."]})

        def send() -> idempotency.Outcome:
            # Same limits as the socket's send, counted together with it.
            async_to_sync(limits.send_check)(
                user_id=caller.user.pk, organisation_id=conversation.organisation_id
            )
            client_id = client_id_of(request, caller, data.validated_data.get("client_id"))
            result = services.message_send(
                author=caller.user,
                conversation=conversation,
                text=data.validated_data["text"],
                client_id=client_id,
                organisation=conversation.organisation,
                alias=alias,
                options=options,
            )
            return send_outcome(result)

        return run_idempotent(request, caller, data.validated_data, send)


class MessageDetailApi(ApiView):
    @extend_schema(
        operation_id="message_detail",
        tags=["messages"],
        responses={(200, "application/json"): MessageOutputSerializer, **errors(404)},
    )
    def get(self, request: Request, message_id: int) -> Response:
        """One message: a reply's status, text so far, usage and error."""
        return Response(MessageOutputSerializer(self.message(message_id)).data)


class ReplyCancelApi(ApiView):
    @extend_schema(
        operation_id="reply_cancel",
        tags=["messages"],
        request=None,
        responses={(200, "application/json"): MessageOutputSerializer, **errors(400, 404, 409)},
    )
    def post(self, request: Request, message_id: int) -> Response:
        """Stop a reply; the partial text is kept. A final reply is left as it is.

        A streaming reply stops within a moment (its generator polls for the request), so the
        status returned may still say `streaming`."""
        message = self.message(message_id)
        with state_conflicts():
            reply_cancel(message=message, by=self.caller().user)
        message.refresh_from_db()
        return Response(MessageOutputSerializer(message).data)


# What a regenerate and an edit answer: a send's answer.
SEND_ANSWERS: dict[Any, Any] = {
    201: MessageSendOutputSerializer,
    (200, "application/json"): OpenApiResponse(MessageSendOutputSerializer, description="A repeat"),
    **errors(400, 404, 409, 422, 502, 503),
}


class MessageRegenerateApi(ApiView):
    @extend_schema(
        operation_id="message_regenerate",
        tags=["messages"],
        request=MessageRegenerateInputSerializer,
        responses=SEND_ANSWERS,
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
        responses=SEND_ANSWERS,
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
