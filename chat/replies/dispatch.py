"""Where a reply is born: saved pending, announced, and handed to its generator once the
transaction commits: a Celery task in production (chat/replies/tasks.py), a task on the
server's own event loop in embedded mode. Both run chat/replies/stream.py reply_stream."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction

from accounts.selectors import organisation_allowed_models
from chat.events import event_publish_on_commit, message_event
from chat.models import Conversation, Message
from chat.replies.reaper import reaper_start
from chat.replies.stream import reply_stream
from chat.replies.tasks import generate_reply
from core.observability.context import handoff
from llm.catalog import tenant_alias
from llm.options import GenerationOptions
from llm.providers.base import ProviderConfig
from llm.router import provider_choose

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]
]

_server_loop: asyncio.AbstractEventLoop | None = None
_running: set[asyncio.Task[None]] = set()  # held here: the loop keeps only weak references


def reply_create(
    *,
    conversation: Conversation,
    reply_to: Message,
    alias: str = "",
    options: GenerationOptions | None = None,
) -> Message:
    """A pending assistant reply, announced and dispatched once the transaction commits.

    `alias` pins a model alias (e.g. an OpenAI-compatible request's `model`); else the default.
    `options` are the caller's generation choices, kept on the reply (chat/replies/stream.py).
    A model the conversation's organisation may not use is refused here (model_not_allowed),
    whichever edge chose it.
    """
    allowed = organisation_allowed_models(organisation_id=conversation.organisation_id)
    alias = tenant_alias(alias, allowed=allowed)
    routing: dict[str, object] = {"allowed": sorted(allowed)} if allowed else {}
    if options is not None and (chosen := options.as_json()):
        routing["options"] = chosen
    provider = provider_choose(pinned=alias)
    reply = Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        status=Message.Status.PENDING,
        reply_to=reply_to,
        provider=provider.name,
        model=provider.model,
        # The model alias the generation routes (llm/router.py); it may answer elsewhere.
        routing={"alias": provider.alias or alias, **routing},
    )
    event_publish_on_commit(conversation.pk, message_event(reply))
    transaction.on_commit(partial(dispatch_generation, reply.pk, provider))
    return reply


class RememberEventLoop:
    """ASGI wrapper that notes the event loop serving requests, for in-process generation.

    The in-memory channel layer is not thread-safe: generation must publish from the loop that
    the consumers receive on, so embedded mode schedules it there. A server generating
    in-process also reaps (REAP_IN_SERVER), from its first request on: no Celery beat does it,
    and a restart leaves the replies it was generating streaming until then.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.reaping = False

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        global _server_loop
        _server_loop = asyncio.get_running_loop()
        if not self.reaping and settings.REAP_IN_SERVER:
            self.reaping = True
            reaper_start()
        await self.app(scope, receive, send)


def queue_for(provider: ProviderConfig) -> str:
    """CPU-bound local inference and I/O-bound remote calls use separate worker pools."""
    return "llm-local" if provider.is_local else "llm-remote"


def dispatch_generation(message_id: int, provider: ProviderConfig) -> None:
    """Start generating a pending reply, where the settings say (GENERATION_BACKEND)."""
    if settings.GENERATION_BACKEND == "celery":
        generate_reply.apply_async((message_id,), queue=queue_for(provider))
        return
    _run_in_process(message_id)


def _run_in_process(message_id: int) -> None:
    handoff(message_id)  # the generation continues this trace (core/observability/context.py)

    loop = _server_loop
    if loop is not None and loop.is_running():
        # A fresh context: the caller's (a sync_to_async thread) would make the task's own
        # sync_to_async calls think they are nested in it, and refuse ("would deadlock").
        loop.call_soon_threadsafe(_start_task, message_id, context=contextvars.Context())
        return
    # No server loop (a management command, a plain script): one long-lived loop of our own,
    # so SDK clients that pool connections per loop keep working across replies.
    _own_loop().call_soon_threadsafe(_start_task, message_id, context=contextvars.Context())


_own: asyncio.AbstractEventLoop | None = None
_own_lock = threading.Lock()


def _own_loop() -> asyncio.AbstractEventLoop:
    global _own
    with _own_lock:
        if _own is None or _own.is_closed():
            _own = asyncio.new_event_loop()
            threading.Thread(target=_own.run_forever, daemon=True, name="reply-loop").start()
        return _own


def _start_task(message_id: int) -> None:
    task = asyncio.get_running_loop().create_task(
        reply_stream(message_id=message_id), name=f"reply-{message_id}"
    )
    _running.add(task)
    task.add_done_callback(_forget)


def _forget(task: asyncio.Task[None]) -> None:
    _running.discard(task)
    if not task.cancelled() and (exc := task.exception()) is not None:
        logger.error("in-process generation crashed", exc_info=exc)
