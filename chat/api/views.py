"""REST API views: one per operation (input serializer → selector/service → output serializer).

Authentication: an API key (`Authorization: Bearer pk_…`, reaching its organisation only) or
a session (with CSRF on unsafe methods, reaching the user's organisations). Errors: see
chat/api/errors.py.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from asgiref.sync import async_to_sync
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import renderers
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import limits
from accounts.auth import ApiKeyAuthentication
from accounts.selectors import operated_organisation_ids, organisation_allowed_models
from chat import selectors, services
from chat.api import idempotency
from chat.api import schema as _schema  # noqa: F401 - registers the schema extensions
from chat.api.caller import Caller, caller_of
from chat.api.catalog import model_alias_resolve, model_aliases, model_option_unsupported
from chat.api.errors import ErrorSerializer, error_body, error_response
from chat.api.export import export_json, export_markdown
from chat.api.follow import Delta, Final, Idle, ReplyFollower
from chat.api.parsers import BoundedJSONParser
from chat.api.serializers import (
    ConversationCreateInputSerializer,
    ConversationExportSerializer,
    ConversationListInputSerializer,
    ConversationOutputSerializer,
    ConversationRenameInputSerializer,
    MessageOutputSerializer,
    MessageSendInputSerializer,
    MessageSendOutputSerializer,
    ModelOutputSerializer,
    OrganisationUsageOutputSerializer,
    UsageInputSerializer,
    UsageOutputSerializer,
)
from chat.api.usage import usage_by_member, usage_summary
from chat.errors import ChatError
from chat.events import final_event
from chat.models import Conversation, Message
from chat.replies.lifecycle import reply_cancel
from llm.catalog import default_alias
from llm.options import GenerationOptions


def errors(*statuses: int) -> dict[tuple[int, str], Any]:
    """Schema responses for the error statuses an operation may answer (always JSON)."""
    return {(status, "application/json"): ErrorSerializer for status in (401, 403, 429, *statuses)}


class ApiView(APIView):
    authentication_classes = [ApiKeyAuthentication, SessionAuthentication]
    permission_classes = [IsAuthenticated]
    parser_classes = [BoundedJSONParser]

    def finalize_response(
        self, request: Request, response: Response, *args: Any, **kwargs: Any
    ) -> Response:
        # Errors are JSON whatever was asked for (a Markdown or event-stream view included).
        if isinstance(response, Response) and response.status_code >= 400:
            request.accepted_renderer = renderers.JSONRenderer()
            request.accepted_media_type = "application/json"
        return super().finalize_response(request, response, *args, **kwargs)

    def caller(self) -> Caller:
        return caller_of(self.request)

    def conversation(self, conversation_id: int) -> Conversation:
        caller = self.caller()
        return selectors.conversation_access(
            user=caller.user,
            conversation_id=conversation_id,
            organisation=caller.only_organisation,
        )

    def message(self, message_id: int) -> Message:
        caller = self.caller()
        return selectors.message_access(
            user=caller.user, message_id=message_id, organisation=caller.only_organisation
        )


@contextmanager
def state_conflicts() -> Iterator[None]:
    """A service's refusal of a well-formed request because of the message's state or kind
    (cancel a user message, regenerate an earlier reply, edit someone else's message): 409,
    not 400 — the request was valid, the target does not allow it."""
    try:
        yield
    except ChatError as error:
        if error.code != "bad_frame":
            raise
        raise ChatError("conflict", error.detail) from None


def query_dict(request: Request) -> dict[str, str]:
    """The query string as a plain dict (last value wins): an empty `days=` is then a bad
    integer (400), where DRF's form handling would take it as left out."""
    return {name: request.query_params[name] for name in request.query_params}


class Pagination(PageNumberPagination):
    """Pages of 20; `page_size` 1 to 100. A `page_size` that is not such a number is a 400
    (DRF would quietly use the default), an out-of-range `page` a 404."""

    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100

    def get_page_size(self, request: Any) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        try:
            size = int(raw)
        except ValueError:
            size = 0
        if str(size) != raw.strip() or not 1 <= size <= self.max_page_size:
            raise ValidationError(
                {"page_size": [f"A whole number from 1 to {self.max_page_size}."]}
            )
        return size

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"].update({"minimum": 1, "maximum": self.max_page_size})
            elif parameter["name"] == self.page_query_param:
                parameter["schema"].update({"minimum": 1})
        return parameters


def paginated(view: ApiView, queryset: QuerySet[Any], serializer: type) -> Response:
    paginator = Pagination()
    page = paginator.paginate_queryset(queryset, view.request, view=view)
    assert page is not None
    return paginator.get_paginated_response(serializer(page, many=True).data)


# --- conversations ------------------------------------------------------------------------


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
        )
        if search := query.validated_data.get("search", "").strip():
            matching = Message.objects.filter(content__icontains=search, superseded=False)
            conversations = conversations.filter(
                Q(title__icontains=search) | Q(pk__in=matching.values("conversation_id"))
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
        response["Content-Disposition"] = (
            f'attachment; filename="conversation-{conversation.pk}.json"'
        )
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
        response["Content-Disposition"] = (
            f'attachment; filename="conversation-{conversation.pk}.md"'
        )
        return response


# --- messages -----------------------------------------------------------------------------


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


class EventStreamRenderer(renderers.BaseRenderer):
    """Lets `Accept: text/event-stream` (what EventSource sends) through negotiation; errors
    before the stream starts are one `error` event."""

    media_type = "text/event-stream"
    format = "sse"
    charset = "utf-8"

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None
    ) -> bytes:
        return sse_event("error", data).encode()


def sse_event(event: str, data: Any, *, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, default=str)}\n\n"


def after_seq_from(request: Request) -> int:
    """`Last-Event-ID` (what EventSource sends on reconnecting), else `?after_seq=`; each one
    present must be an integer ≥ 0."""
    header = request.headers.get("Last-Event-ID")
    query = request.query_params.get("after_seq")
    values = []
    for raw in (header, query):
        if raw is None:
            continue
        try:
            value = int(raw.strip())
        except ValueError:
            value = -1
        if value < 0:
            raise ChatError("bad_frame", "Last-Event-ID / after_seq must be an integer ≥ 0.")
        values.append(value)
    return values[0] if values else 0


async def reply_events(message: Message, after_seq: int) -> AsyncIterator[str]:
    """The SSE body: saved text after `after_seq`, the live tail, then `done` or `error`."""
    async with ReplyFollower(
        message_id=message.pk, conversation_id=message.conversation_id, after_seq=after_seq
    ) as follower:
        yield "retry: 2000\n\n"
        async for item in follower.events():
            if isinstance(item, Delta):
                delta = {
                    "message": message.pk,
                    "start": item.start,
                    "seq": item.seq,
                    "text": item.text,
                }
                yield sse_event("delta", delta, event_id=item.seq)
            elif isinstance(item, Idle):
                yield ": keep-alive\n\n"
            elif isinstance(item, Final):
                final = item.message
                body = final_event(final)
                kind = body.pop("type").removeprefix("chat.")  # done | error
                yield sse_event(kind, body, event_id=final.seq)
                return


# One event of the stream (what an SSE parser yields); `data` is JSON text.
SSE_EVENT_SCHEMA = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "enum": ["delta", "done", "error"]},
        "id": {"type": "string", "description": "The seq the text reaches."},
        "data": {"type": "string", "description": "JSON: a delta, or the final done/error."},
    },
    "required": ["event", "data"],
}


class MessageStreamApi(ApiView):
    renderer_classes = [renderers.JSONRenderer, EventStreamRenderer]

    @extend_schema(
        operation_id="message_stream",
        tags=["messages"],
        parameters=[
            OpenApiParameter(
                "Last-Event-ID",
                type=int,
                location=OpenApiParameter.HEADER,
                required=False,
                description="Resume after this seq (sent by EventSource when it reconnects).",
            ),
            OpenApiParameter(
                "after_seq",
                type=int,
                required=False,
                description="Resume after this seq (for clients that cannot set headers).",
            ),
        ],
        responses={
            (200, "text/event-stream"): OpenApiResponse(
                SSE_EVENT_SCHEMA,
                description="Server-sent events: `delta` (id = seq), then `done` or `error`.",
            ),
            **errors(400, 404, 409),
        },
    )
    def get(self, request: Request, message_id: int) -> StreamingHttpResponse:
        """A reply's text as server-sent events, with the same seq numbers as the WebSocket.

        Each `delta` event has `id: <seq>` and data {message, start, seq, text}; the stream
        ends with one `done` or `error` event (the socket's frames without `type`). Reconnect
        with `Last-Event-ID` to get only what you miss. Close the stream on `done`/`error`."""
        message = self.message(message_id)
        if message.role != Message.Role.ASSISTANT:
            raise ChatError("conflict", "Only an assistant reply can be streamed.")
        response = StreamingHttpResponse(
            reply_events(message, after_seq_from(request)),
            content_type="text/event-stream; charset=utf-8",
        )
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"  # nginx: pass it through unbuffered
        return response


# --- models and usage ---------------------------------------------------------------------


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


@csrf_exempt  # it changes nothing; a CSRF refusal would only hide the 404
def not_found(request: HttpRequest, rest: str = "") -> JsonResponse:
    """Any other path under /api/v1/ (or an id that is not a number): a JSON 404."""
    return JsonResponse(error_body("not_found", "No such endpoint or object."), status=404)
