"""POST /v1/chat/completions and GET /v1/models: async views on the chat's own path.

A completion request is recorded as a conversation (services.completion_request_create: the
earlier messages saved as they were, the last user message and a pending reply, reserved
against budgets and dispatched exactly as message_send does), after the socket's send rate
limit. The answer is then read the way a socket reads it: by following the conversation's
channel-layer group (chat/api/follow.py), so it works with in-process generation (embedded)
and with Celery workers (production) alike; a reply this process generates for the request
(API_GENERATION_IN_SERVER) is read from its generator, without the layer (`follower_for`).

Streaming: the response starts with the first text (or fails with a proper status if the
reply fails before any), so errors like "every provider is down" are a 503, not a 200 with an
error inside. A client that goes away mid-stream cancels the reply, as OpenAI does; a
non-streaming request whose client goes away lets the reply finish (a retry with the same
Idempotency-Key then gets it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from accounts import limits
from accounts.auth import bearer_token
from accounts.models import ApiKey
from accounts.selectors import organisation_allowed_models
from accounts.services import api_key_use
from chat import services
from chat.api import idempotency
from chat.api.catalog import (
    alias_deployments,
    deployments_all_remote,
    model_alias_resolve,
    model_alias_visible,
    model_aliases,
    options_unsupported_by,
)
from chat.api.follow import (
    Delta,
    Event,
    Final,
    Idle,
    LiveFollower,
    ReplyFollower,
    connection_release,
    follower_for,
)
from chat.models import Message
from chat.openai_compat.shapes import (
    ChunkMaker,
    CompletionRequest,
    OpenAIError,
    completion_body,
    completion_id,
    completion_request_parse,
    created_of,
    finish_reason,
    internal_error,
    model_body,
    model_not_found,
    models_body,
    openai_error_from,
    options_refused,
    reply_error,
    sse_data,
)
from chat.replies.dispatch import generation_in_this_server
from chat.replies.lifecycle import reply_cancel
from core.errors import ParleyError
from llm.embedding_models import embedding_model_resolve, embedding_models

logger = logging.getLogger(__name__)


def _api_key_sync(request: HttpRequest) -> ApiKey:
    token = bearer_token(request.headers.get("Authorization"))
    if token is None:
        raise OpenAIError(
            401,
            "You didn't provide an API key. Send it as `Authorization: Bearer pk_…`.",
        )
    key = api_key_use(raw=token)
    if key is None:
        raise OpenAIError(
            401, "Incorrect API key provided (invalid, expired or revoked).", code="invalid_api_key"
        )
    return key


async def api_key_authenticate(request: HttpRequest) -> ApiKey:
    """The request's API key (Authorization: Bearer), or OpenAI's 401."""
    return await sync_to_async(_api_key_sync)(request)


def method_not_allowed(allowed: str) -> JsonResponse:
    response = OpenAIError(405, f"Use {allowed} for this endpoint.").response()
    response["Allow"] = allowed
    return response


def _parley_headers(reply: Message) -> dict[str, str]:
    return {"X-Parley-Conversation": str(reply.conversation_id), "X-Parley-Message": str(reply.pk)}


@csrf_exempt
async def chat_completions(request: HttpRequest) -> HttpResponseBase:
    if request.method != "POST":
        return method_not_allowed("POST")
    try:
        # One hop to the sync thread for the key, the body and the model (each hop queues
        # behind the other requests' database work).
        key, completion, alias, here = await sync_to_async(_accepted)(request)
        scope = f"key:{key.pk}"
        idempotency_key = request.headers.get(idempotency.HEADER)
        client_id = (
            idempotency.client_id_for(scope=scope, key=idempotency_key)
            if idempotency_key
            else f"oai-{uuid.uuid4().hex}"
        )
        # Generated here, a request that cannot repeat an earlier one (no Idempotency-Key)
        # calls its provider before its rows are committed (chat/replies/early.py).
        where = _Here(before_commit=idempotency_key is None) if here else None
        if completion.stream:
            # A repeat with the same Idempotency-Key follows the same reply (client_id).
            return await _stream(key, completion, client_id, alias, where)
        if idempotency_key is None:
            outcome = await _complete(key, completion, client_id, alias, where)
        else:
            slot = idempotency.slot_for(
                scope=scope,
                key=idempotency_key,
                method="POST",
                path=request.path,
                payload=completion.payload,
            )
            outcome = await idempotency.arun_once(
                slot, lambda: _complete(key, completion, client_id, alias, where)
            )
        return JsonResponse(outcome.body, status=outcome.status, headers=outcome.headers)
    except OpenAIError as error:
        return error.response()
    except ParleyError as error:
        return openai_error_from(error).response()
    except idempotency.IdempotencyRefused as refused:
        return OpenAIError(refused.status, refused.detail, code=refused.code).response()
    except Exception:
        logger.exception("chat completion request failed")
        return internal_error().response()


def _accepted(request: HttpRequest) -> tuple[ApiKey, CompletionRequest, str, bool]:
    """The request's key, its parsed body, the model alias it names and whether this server
    may generate the reply itself (chat/replies/dispatch.py); else OpenAIError."""
    key = _api_key_sync(request)
    # At most one byte past the limit is read, whatever Content-Length says (Django's
    # request.body would refuse a long one with its own HTML page).
    completion = completion_request_parse(request.read(settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1))
    alias = model_alias_resolve(
        completion.model, allowed=organisation_allowed_models(organisation_id=key.organisation_id)
    )
    if alias is None:
        raise model_not_found(completion.model)
    may_generate_here = settings.GENERATION_BACKEND == "celery" and (
        settings.API_GENERATION_IN_SERVER
    )
    deployments = (
        alias_deployments(alias) if may_generate_here or completion.options.set_params() else []
    )
    if param := options_unsupported_by(deployments, completion.options):
        raise options_refused(completion.options, param, completion.model)
    return key, completion, alias, may_generate_here and deployments_all_remote(deployments)


@dataclass(frozen=True)
class _Here:
    """The reply is generated in this process (generation_in_this_server)."""

    before_commit: bool


async def _start(
    key: ApiKey, completion: CompletionRequest, client_id: str, alias: str, here: _Here | None
) -> Message:
    """Record the request and start its reply on `alias` (rate limit, budget, dispatch; in
    this process if `here`)."""
    await limits.send_check(user_id=key.user_id, organisation_id=key.organisation_id)

    def create() -> Message:
        try:
            with (
                generation_in_this_server(before_commit=here.before_commit)
                if here
                else contextlib.nullcontext()
            ):
                return services.completion_request_create(
                    author=key.user,
                    organisation=key.organisation,
                    history=completion.history,
                    text=completion.text,
                    client_id=client_id,
                    alias=alias,
                    system_prompt=completion.system,
                    options=completion.options,
                ).reply
        finally:
            connection_release()  # the wait for the reply needs no connection

    return await sync_to_async(create)()


async def _complete(
    key: ApiKey, completion: CompletionRequest, client_id: str, alias: str, here: _Here | None
) -> idempotency.Outcome:
    reply = await _start(key, completion, client_id, alias, here)
    final: Message | None = None
    async with follower_for(message_id=reply.pk, conversation_id=reply.conversation_id) as follower:
        async with contextlib.aclosing(follower.events()) as events:
            async for item in events:
                if isinstance(item, Final):
                    final = item.message
                    break
    assert final is not None
    if final.status == Message.Status.FAILED:
        raise reply_error(final)
    return idempotency.Outcome(
        status=200,
        body=completion_body(final, model=completion.model),
        headers=_parley_headers(final),
    )


async def _first(events: AsyncGenerator[Event, None]) -> Delta | Final:
    async for item in events:
        if not isinstance(item, Idle):
            return item
    raise AssertionError("a reply's events end with Final")


async def _cancel(reply: Message, key: ApiKey) -> None:
    try:
        await sync_to_async(reply_cancel)(message=reply, by=key.user)
    except Exception:
        logger.warning("could not cancel reply %s", reply.pk, exc_info=True)


async def _stream(
    key: ApiKey, completion: CompletionRequest, client_id: str, alias: str, here: _Here | None
) -> HttpResponseBase:
    reply = await _start(key, completion, client_id, alias, here)
    follower = follower_for(message_id=reply.pk, conversation_id=reply.conversation_id)
    await follower.join()
    events = follower.events()
    try:
        first = await _first(events)
    except BaseException as exc:
        await events.aclose()
        await follower.leave()
        if isinstance(exc, asyncio.CancelledError):
            await _cancel(reply, key)  # the client went away before the first token
        raise
    if isinstance(first, Final) and first.message.status == Message.Status.FAILED:
        await events.aclose()
        await follower.leave()
        return reply_error(first.message).response()
    maker = ChunkMaker(
        id=completion_id(reply),
        created=created_of(reply),
        model=completion.model,
        include_usage=completion.include_usage,
    )
    response = StreamingHttpResponse(
        _chunks(maker, first, events, follower, reply, key),
        content_type="text/event-stream; charset=utf-8",
        headers=_parley_headers(reply),
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass it through unbuffered
    return response


async def _chunks(
    maker: ChunkMaker,
    first: Delta | Final,
    events: AsyncGenerator[Event, None],
    follower: LiveFollower | ReplyFollower,
    reply: Message,
    key: ApiKey,
) -> AsyncIterator[str]:
    finished = False
    try:
        yield maker.chunk({"role": "assistant", "content": ""})
        item: Event = first
        while True:
            if isinstance(item, Delta):
                yield maker.chunk({"content": item.text})
            elif isinstance(item, Idle):
                yield ": keep-alive\n\n"
            else:
                finished = True
                final = item.message
                if final.status == Message.Status.FAILED:
                    # After text was sent the status is 200 already: OpenAI's in-stream error.
                    yield sse_data(reply_error(final).body())
                    return
                yield maker.chunk({}, finish=finish_reason(final))
                if maker.include_usage:
                    yield maker.usage(final)
                yield sse_data("[DONE]")
                return
            item = await events.__anext__()
    finally:
        with contextlib.suppress(Exception):
            await events.aclose()
        await follower.leave()
        if not finished:
            await _cancel(reply, key)  # the client went away mid-stream


async def models(request: HttpRequest) -> HttpResponseBase:
    if request.method != "GET":
        return method_not_allowed("GET")
    try:
        key = await api_key_authenticate(request)
    except OpenAIError as error:
        return error.response()
    aliases = await sync_to_async(model_aliases)(organisation_id=key.organisation_id)
    # Chat models first (the default one leads), then the embedding models (/v1/embeddings).
    embedding_ids = [model.id for model in embedding_models()]
    return JsonResponse(models_body([alias.id for alias in aliases] + embedding_ids))


async def model_detail(request: HttpRequest, model: str) -> HttpResponseBase:
    if request.method != "GET":
        return method_not_allowed("GET")
    try:
        key = await api_key_authenticate(request)
        if embedding_model_resolve(model) is None and not await sync_to_async(_model_visible)(
            model, key
        ):
            raise model_not_found(model)
    except OpenAIError as error:
        return error.response()
    return JsonResponse(model_body(model))


def _model_visible(model: str, key: ApiKey) -> bool:
    allowed = organisation_allowed_models(organisation_id=key.organisation_id)
    return model_alias_visible(model, allowed=allowed)


@csrf_exempt
async def unknown(request: HttpRequest, rest: str = "") -> HttpResponseBase:
    """Anything else under /v1/: OpenAI's answer to an endpoint it does not have."""
    return OpenAIError(
        404, f"Invalid URL ({request.method} {request.path}): Parley does not serve it."
    ).response()


__all__: list[Any] = ["chat_completions", "model_detail", "models", "unknown"]
