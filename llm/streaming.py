"""Where a reply is born and set travelling: provider tokens → coalesced, numbered deltas.

`reply_stream` is the one generation function: embedded mode runs it as a task on the server's
event loop, production runs it in a Celery worker. It reads tokens from a LangChain chat model,
coalesces them (the channel layer is the expensive hop: never one message per token), publishes
numbered deltas to the conversation's group, and has the process's reply watch (llm/watch.py)
checkpoint its text at a steady cadence, keep its heartbeat fresh and stop it within a poll
interval when anyone cancels.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.conf import settings
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from chat import services
from chat.errors import ChatError
from chat.events import event_publish
from chat.models import Message
from llm import accounting, limits
from llm import cache as reply_cache
from llm.catalog import DeploymentConfig, default_alias
from llm.failover import RoutingRecord, stream_with_failover
from llm.providers.base import ProviderError
from llm.registry import chat_model_for
from llm.retry import RetryPolicy
from llm.watch import WatchedReply, reply_watch

logger = logging.getLogger(__name__)


class DeltaCoalescer:
    """Buffers text; flushes the first piece at once, then at most every `interval` seconds
    or whenever `max_chars` are waiting."""

    def __init__(
        self, flush: Callable[[str], Awaitable[None]], *, interval: float, max_chars: int
    ) -> None:
        self._flush = flush
        self._interval = interval
        self._max_chars = max_chars
        self._buffer: list[str] = []
        self._size = 0
        self._flushed_once = False
        self._last_flush = 0.0
        self._timer: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def add(self, text: str) -> None:
        if not text:
            return
        self._buffer.append(text)
        self._size += len(text)
        if not self._flushed_once or self._size >= self._max_chars:
            await self.flush()
        elif self._timer is None:
            delay = max(0.0, self._interval - (time.monotonic() - self._last_flush))
            self._timer = asyncio.create_task(self._flush_later(delay))

    async def _flush_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._timer = None
        await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            if not self._buffer:
                return
            text = "".join(self._buffer)
            self._buffer.clear()
            self._size = 0
            self._flushed_once = True
            self._last_flush = time.monotonic()
            await self._flush(text)

    async def aclose(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self.flush()


@dataclass
class ReplyState:
    """The reply as streamed so far; `seq` is its length in code points (see protocol.md)."""

    message_id: int
    conversation_id: int
    text: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    prompt_estimate: int = 0  # ~tokens in the prompt, for pricing when none are reported
    routing: RoutingRecord | None = None

    @property
    def seq(self) -> int:
        return len(self.text)


def prompt_messages(reply: Message) -> list[BaseMessage]:
    """The system prompt plus the conversation up to the message this reply answers."""
    history = (
        Message.objects.filter(
            conversation_id=reply.conversation_id, id__lt=reply.pk, superseded=False
        )
        .exclude(status__in=[Message.Status.FAILED, Message.Status.PENDING])
        .exclude(content="")
        .order_by("-id")[: settings.LLM_HISTORY_MESSAGES]
    )
    messages: list[BaseMessage] = [SystemMessage(content=settings.LLM_SYSTEM_PROMPT)]
    for message in reversed(list(history)):
        cls = HumanMessage if message.role == Message.Role.USER else AIMessage
        messages.append(cls(content=message.content))
    return messages


async def reply_stream(*, message_id: int) -> None:
    """Generate one assistant reply from start to a final state; never leaves it streaming."""
    reply = await sync_to_async(services.reply_start)(message_id=message_id)
    if reply is None:
        return  # cancelled before it started, or already taken by another worker
    state = ReplyState(message_id=reply.pk, conversation_id=reply.conversation_id)

    async def publish(text: str) -> None:
        start = state.seq
        state.text += text
        if start == 0:
            await sync_to_async(services.reply_first_token)(message_id=state.message_id)
        await _publish_delta(
            state.conversation_id,
            {
                "type": "chat.delta",
                "message": state.message_id,
                "start": start,
                "seq": state.seq,
                "text": text,
            },
        )
        watched.checkpoint(content=state.text, seq=state.seq)  # saved by the watch, in a batch

    coalescer = DeltaCoalescer(
        publish,
        interval=settings.STREAM_FLUSH_INTERVAL,
        max_chars=settings.STREAM_FLUSH_MAX_CHARS,
    )
    status, error = Message.Status.COMPLETE, None
    lookup = reply_cache.Lookup()
    watched = reply_watch(message_id=state.message_id)
    try:
        messages = await sync_to_async(prompt_messages)(reply)
        # A cached answer streams through the same coalescer instead of a provider (llm/cache/).
        lookup = await reply_cache.reply_lookup(reply=reply, messages=messages)
        source = (
            reply_cache.reply_replay(lookup, coalescer.add, state)
            if lookup.hit
            else _pump_tokens(reply, messages, coalescer, state)
        )
        pump = asyncio.create_task(source)
        cancelled = await _await_unless_cancelled(pump, watched)
        await coalescer.aclose()
        if cancelled:
            status = Message.Status.CANCELLED
    except ProviderError as exc:
        await coalescer.aclose()
        status = Message.Status.FAILED
        error = ChatError(exc.code, exc.detail)
        logger.warning("reply %s failed: %s (%s)", message_id, exc.code, exc.detail)
    except Exception:
        await coalescer.aclose()
        status = Message.Status.FAILED
        error = ChatError("internal", "Something went wrong on our side generating this reply.")
        logger.exception("reply %s failed unexpectedly", message_id)
    finally:
        # Before the final save, whatever happened: the watch drops the unsaved text (the final
        # save has it all) and stops heartbeating a reply nobody generates any more.
        watched.close()
    prompt_tokens, completion_tokens, estimated = accounting.usage_final(
        prompt_tokens=state.prompt_tokens,
        completion_tokens=state.completion_tokens,
        text=state.text,
        complete=status == Message.Status.COMPLETE,
    )
    deployment = state.routing.deployment if state.routing else None
    finished = await sync_to_async(services.reply_finish)(
        message_id=state.message_id,
        content=state.text,
        status=status,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        tokens_estimated=estimated,
        error=error,
        provider=deployment.name if deployment else None,
        model=deployment.model if deployment else None,
        cost=accounting.cost_of(
            deployment, prompt_tokens, completion_tokens, prompt_estimate=state.prompt_estimate
        ),
        routing=state.routing.as_json() if state.routing else None,
    )
    if finished is not None and deployment is not None and deployment.tpm_limit:
        used = (prompt_tokens or state.prompt_estimate) + (completion_tokens or 0)
        await sync_to_async(limits.tokens_record, thread_sensitive=False)(deployment, used)
    await reply_cache.reply_settle(lookup, finished)  # record a hit, or store a complete reply


async def _pump_tokens(
    reply: Message, messages: list[BaseMessage], coalescer: DeltaCoalescer, state: ReplyState
) -> None:
    """Stream the reply from the deployments serving its model alias (llm/failover.py: silent
    failover before the first token, an `interrupted` error after it, bounded retries)."""
    alias = str(reply.routing.get("alias") or reply.provider or default_alias())
    state.prompt_estimate = accounting.estimate_tokens("".join(str(m.content) for m in messages))
    record = state.routing = RoutingRecord(alias=alias)

    def build(deployment: DeploymentConfig) -> BaseChatModel:
        return chat_model_for(deployment, max_tokens=settings.LLM_MAX_TOKENS)

    try:
        await stream_with_failover(
            alias=alias,
            messages=messages,
            sink=coalescer.add,
            build=build,
            record=record,
            policy=RetryPolicy.from_settings(),
            prompt_tokens=state.prompt_estimate,
        )
    finally:
        state.prompt_tokens = record.usage.prompt_tokens
        state.completion_tokens = record.usage.completion_tokens


async def _await_unless_cancelled(pump: asyncio.Task[None], watched: WatchedReply) -> bool:
    """Wait for the token pump unless the watch says stop first (the reply was cancelled, or
    the reaper took it away). True if it was stopped."""
    stop = asyncio.create_task(watched.stop.wait())
    try:
        done, _ = await asyncio.wait({pump, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
    if pump in done:
        pump.result()  # re-raises the pump's error
        return False
    pump.cancel()
    try:
        await pump
    except asyncio.CancelledError:
        pass
    return True


async def _publish_delta(conversation_id: int, event: dict[str, object]) -> None:
    """Publish, but never let a channel-layer outage kill the generation: the text is saved
    at each checkpoint and clients recover missing deltas by seq (resume)."""
    try:
        await event_publish(conversation_id, event)
    except Exception:
        logger.warning("delta for reply %s not published", event.get("message"), exc_info=True)
