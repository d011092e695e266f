"""Where a reply's tokens are born and set travelling: provider tokens → coalesced, numbered
deltas on the conversation's group.

`reply_stream` is the one generation function: embedded mode runs it as a task on the server's
event loop, production in a Celery worker (chat/replies/dispatch.py, tasks.py). It claims the
reply, builds its prompt, reads tokens from the cache (a replay) or from llm/ (the router's
failover over LangChain chat models), coalesces them (chat/replies/coalesce.py: the channel
layer is the expensive hop, never one message per token), publishes numbered deltas (and
hands them to a reader on its own loop, chat/replies/live.py), and has the process's reply
watch (chat/replies/watch.py) checkpoint its text at a steady cadence, keep its heartbeat
fresh and stop it within a poll interval when anyone cancels. It always ends the
reply (reply_finish), whatever happened: `complete`, `incomplete` (the provider stopped at the
token cap: finish reason `length`), `cancelled`, or `failed` (an upstream that cut the stream
mid-reply is `interrupted`, llm/failover.py).

A cancel does not cancel the task that reads the provider: a cancel can be lost inside the
provider's SDK and HTTP stack, and the reply would run to its natural end. The watch's `stop`
event goes to llm as plain data instead; the streaming loop checks it after every chunk (and it
cuts a wait for the next chunk short) and closes the provider's stream, and its HTTP call, from
inside its own task. The reply does not wait for that: it ends `cancelled` at once, with the
text streamed up to the stop, and a late chunk from the pump, now detached, is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import math
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import SynchronousOnlyOperation
from django.utils import timezone
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import BaseMessage

from chat.errors import ChatError
from chat.events import EventQueue, delta_event
from chat.models import Message
from chat.replies.batches import GroupCommit
from chat.replies.cache import reply_lookup, reply_settle
from chat.replies.coalesce import DeltaCoalescer
from chat.replies.ending import ReplyEnding, reply_end
from chat.replies.lifecycle import replies_start
from chat.replies.live import live_reply
from chat.replies.prompt import (
    prompt_messages,
    reply_alias,
    reply_allowed_models,
    reply_options,
)
from chat.replies.watch import reply_watch
from core import hops
from core.errors import ParleyError
from core.observability import metrics
from core.observability.context import traced
from llm import accounting, limits
from llm.cache import Lookup, cache_replay
from llm.catalog import DeploymentConfig, alias_window
from llm.context import prompt_fit
from llm.failover import CANCELLED, LENGTH, RoutingRecord, TextSink, stream_with_failover
from llm.providers.base import ProviderError
from llm.registry import chat_model_for
from llm.retry import RetryPolicy
from llm.router import route_plan

logger = logging.getLogger(__name__)


@dataclass
class ReplyState:
    """The reply as streamed so far; `seq` is its length in code points (see protocol.md)."""

    message_id: int
    conversation_id: int
    text: str = ""
    first_token_at: datetime | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    prompt_estimate: int = 0  # ~tokens in the prompt, for pricing when none are reported
    max_tokens: int | None = None  # the provider's cap on the reply, once it was asked
    routing: RoutingRecord | None = None
    lookup: Lookup = field(default_factory=Lookup)  # the reply cache's (reply_source)

    @property
    def seq(self) -> int:
        return len(self.text)


@dataclass(frozen=True)
class StartedReply:
    """A reply created claimed by its generator, whose source (reply_source) started before
    its row existed (chat/replies/early.py): its text waits until `deliver` hands it on."""

    reply: Message  # the row as created (streaming, started_at set): reply_start's result
    prompt: list[BaseMessage]
    state: ReplyState  # the source's, its ids unset until the row existed
    pump: asyncio.Task[None]  # reply_source, running with `stop`
    stop: asyncio.Event
    deliver: Callable[[TextSink], Awaitable[None]]  # what came so far, then every later text


@traced("reply.stream", bind_kwargs=("message_id",))
@metrics.streaming
async def reply_stream(*, message_id: int, started: StartedReply | None = None) -> None:
    """Generate one assistant reply from start to a final state; never leaves it streaming.
    `started`: claimed at creation, its source running already (no claim, no prompt read)."""
    if started is None:
        claimed = await _claims_of(asyncio.get_running_loop()).claim(message_id)
        if claimed is None:
            return  # cancelled before it started, or already taken by another worker
        reply, prompt = claimed
        state = ReplyState(message_id=reply.pk, conversation_id=reply.conversation_id)
    else:
        reply, prompt, state = started.reply, started.prompt, started.state
        state.message_id, state.conversation_id = reply.pk, reply.conversation_id
    events = EventQueue(state.conversation_id)
    # A reader on this loop (the request that asked for it) takes the text from here, not
    # through the layer (chat/replies/live.py); everyone else through the layer, as before.
    live = live_reply(message_id)
    if live is not None:
        live.text_of = lambda: state.text

    def publish(text: str) -> None:
        # Runs about once per token at 30 tokens/s: no await, no query. The delta is queued on
        # the channel layer (sent with the next pipeline, its journal entry with it); the text
        # and the first token's time are saved by the watch, in a batch (chat/replies/watch.py).
        start = len(state.text)
        state.text += text
        seq = len(state.text)
        if start == 0:
            state.first_token_at = timezone.now()
        events.put(delta_event(message_id=state.message_id, start=start, seq=seq, text=text))
        if live is not None:
            live.delta(start, seq, text)
        watched.checkpoint(content=state.text, seq=seq, first_token_at=state.first_token_at)

    coalescer = DeltaCoalescer(
        publish,
        interval=settings.STREAM_FLUSH_INTERVAL,
        max_chars=settings.STREAM_FLUSH_MAX_CHARS,
        max_interval=settings.STREAM_FLUSH_MAX_INTERVAL,
        rate=settings.STREAM_FLUSH_RATE,
    )
    status: str = Message.Status.COMPLETE
    error: ParleyError | None = None
    watched = reply_watch(message_id=state.message_id, stop=started.stop if started else None)
    stop = watched.stop

    async def sink(text: str) -> None:
        # Once stopped, the text streamed so far is the reply: a detached pump's late text is
        # dropped.
        if not stop.is_set():
            coalescer.add(text)

    try:
        if isinstance(prompt, Exception):
            raise prompt  # the reply is claimed: it ends failed, as below
        if started is None:
            pump = asyncio.create_task(reply_source(reply, prompt, sink, state, stop))
        else:
            pump = started.pump
            await started.deliver(sink)
        stopped = await _await_unless_stopped(pump, stop)
        coalescer.close()
        if stopped:
            status = Message.Status.CANCELLED
            if state.routing is not None and state.routing.finish_reason is None:
                state.routing.finish_reason = CANCELLED  # the pump, detached, may not know yet
        elif state.routing is not None and state.routing.finish_reason == LENGTH:
            status = Message.Status.INCOMPLETE
    except ProviderError as exc:
        coalescer.close()
        status = Message.Status.FAILED
        error = exc
        logger.warning("reply %s failed: %s (%s)", message_id, exc.code, exc.detail)
    except Exception:
        coalescer.close()
        status = Message.Status.FAILED
        error = ChatError("internal", "Something went wrong on our side generating this reply.")
        logger.exception("reply %s failed unexpectedly", message_id)
    finally:
        # Before the final save, whatever happened: the watch drops the unsaved text (the final
        # save has it all) and stops heartbeating a reply nobody generates any more.
        watched.close()
    # Every delta is on its way before the final event: on the batching layer they are queued
    # already (the final event queues behind them), on other layers this waits for their sends.
    await events.drain()
    prompt_tokens, completion_tokens, estimated = accounting.usage_final(
        prompt_tokens=state.prompt_tokens,
        completion_tokens=state.completion_tokens,
        text=state.text,
        # The provider's usage counts what it generated, also when its token cap cut it short.
        complete=status in (Message.Status.COMPLETE, Message.Status.INCOMPLETE),
        max_tokens=state.max_tokens,
    )
    deployment = state.routing.deployment if state.routing else None
    loop = asyncio.get_running_loop()

    def announce(event: dict[str, Any]) -> None:
        # From the database lane: the final event goes behind the deltas on this loop's queue.
        loop.call_soon_threadsafe(events.put, event)

    # Ended together with the replies of this loop ending meanwhile (chat/replies/ending.py).
    finished = await reply_end(
        ReplyEnding(
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
            routing=_routing_json(state.routing, error),
            first_token_at=state.first_token_at,
            claimed=reply,
            announce=announce,
        )
    )
    if live is not None:
        live.end(finished)  # the row as saved: its reader needs no read of it
    await events.drain()  # on layers that send in a task: the final event is out too
    metrics.reply_finished(finished, organisation=reply.conversation.organisation_id)
    if finished is not None and deployment is not None and deployment.tpm_limit:
        used = (prompt_tokens or state.prompt_estimate) + (completion_tokens or 0)
        await sync_to_async(limits.tokens_record, thread_sensitive=False)(deployment, used)
    await reply_settle(state.lookup, finished)  # record a hit, or store a complete reply


Claimed = tuple[Message, list[BaseMessage] | Exception]


def _claim_many(message_ids: list[int]) -> dict[int, Claimed]:
    """Claim the replies and build their prompts in one trip to a database lane (one thread
    hop and one statement for all, not one each). A prompt that could not be built comes back
    as its error: the reply is claimed by then, and reply_stream ends it `failed`."""
    for message_id in message_ids:
        hops.hop("w.claim_begin", message_id)
    claimed: dict[int, Claimed] = {}
    for message_id, reply in replies_start(message_ids=message_ids).items():
        hops.hop("w.claimed", message_id)
        try:
            claimed[message_id] = reply, prompt_messages(reply)
        except Exception as exc:
            claimed[message_id] = reply, exc
    return claimed


def _claim_batch(message_ids: list[int]) -> list[Claimed | None]:
    """Each id's claim, in order: an id given twice is claimed by its first claim only."""
    claimed = _claim_many(list(dict.fromkeys(message_ids)))
    given: set[int] = set()
    results: list[Claimed | None] = []
    for message_id in message_ids:
        results.append(claimed.get(message_id) if message_id not in given else None)
        given.add(message_id)
    return results


class ClaimBatches(GroupCommit[int, Claimed | None]):
    """The claims of one event loop in turn, each batch everything that arrived while the last
    was on its way (group commit, chat/replies/batches.py), so that replies dispatched together
    are claimed in one statement and one thread hop.

    500 replies dispatched at once were 500 claims on the database lanes, each a statement,
    rows made into models and a prompt, in eight threads holding the GIL against the loop that
    streams the replies already started (docs/benchmarks.md, round 6). A lone reply is
    claimed at once, as before. A claim cancelled before its batch ran is left out of it:
    nothing would stream the reply it claimed.
    """

    def __init__(self) -> None:
        super().__init__(_claim_batch, keep_cancelled=False)

    async def claim(self, message_id: int) -> Claimed | None:
        """The reply claimed and its prompt, or None if it is gone, final or claimed already
        (also by an earlier claim of the same id in the same batch)."""
        return await self.submit(message_id)


_claim_batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ClaimBatches] = (
    weakref.WeakKeyDictionary()
)


def _claims_of(loop: asyncio.AbstractEventLoop) -> ClaimBatches:
    batches = _claim_batches.get(loop)
    if batches is None:
        batches = _claim_batches[loop] = ClaimBatches()
    return batches


async def reply_source(
    reply: Message,
    messages: list[BaseMessage],
    sink: TextSink,
    state: ReplyState,
    stop: asyncio.Event,
) -> None:
    """The reply's text into `sink`: a cached answer replayed (llm/cache/), else the provider's.
    `reply` is read for its routing and tenant only (it may be a row not saved yet)."""
    state.lookup = await reply_lookup(reply=reply, messages=messages)
    if state.lookup.hit:
        await cache_replay(state.lookup, sink, state, stop)
    else:
        await _pump_tokens(reply, messages, sink, state, stop)


def _routing_json(record: RoutingRecord | None, error: ParleyError | None) -> dict[str, Any] | None:
    """The routing record saved on the reply; a failure keeps the wait the provider asked for
    (the HTTP edges answer it as Retry-After)."""
    if record is None:
        return None
    routing = record.as_json()
    if isinstance(error, ProviderError) and error.retry_after is not None:
        routing["retry_after"] = max(1, math.ceil(error.retry_after))
    return routing


async def _known_window(alias: str) -> int | None:
    """The alias's context window (llm/catalog.py alias_window), on the loop while this process
    holds the catalogue, as a rule; where it must be read again (an admin's change, or
    CATALOG_MAX_AGE passed), in a thread: database queries may not run on the event loop (a
    reply starting then failed `internal`). No thread trip per reply otherwise."""
    try:
        return alias_window(alias)
    except SynchronousOnlyOperation:
        return await sync_to_async(alias_window)(alias)


async def _pump_tokens(
    reply: Message,
    messages: list[BaseMessage],
    sink: TextSink,
    state: ReplyState,
    stop: asyncio.Event,
) -> None:
    """Stream the reply from the deployments serving its model alias (llm/failover.py: silent
    failover before the first token, an `interrupted` error after it, bounded retries, and an
    end as soon as `stop` is set)."""
    alias = reply_alias(reply)
    options = reply_options(reply)
    asked = options.max_tokens or settings.LLM_MAX_TOKENS
    whole = messages
    max_tokens = asked
    record = RoutingRecord(alias=alias, options=options)

    def fit(window: int | None) -> tuple[list[BaseMessage], int]:
        """The oldest turns left out where the models' context window would end before the
        reply's room (llm/context.py); a question too long alone fails the reply."""
        nonlocal max_tokens
        try:
            fitted = prompt_fit(whole, window=window, max_tokens=asked)
        except ParleyError as exc:
            raise ProviderError(exc.code, exc.detail, context_window=window) from None
        max_tokens = state.max_tokens = fitted.max_tokens
        if window:
            record.prompt = {"window": window, "left_out": fitted.left_out}
        text = "".join(str(m.content) for m in fitted.messages)
        state.prompt_estimate = accounting.estimate_tokens(text)
        return fitted.messages, state.prompt_estimate

    window = await _known_window(alias)

    def refit(stated: int) -> tuple[list[BaseMessage], int]:
        """Fitted to a window a provider stated refusing the prompt."""
        return fit(min(w for w in (stated, window) if w))

    messages, _ = fit(window)
    state.routing = record  # a reply failed here, before any provider, has no routing

    def build(deployment: DeploymentConfig) -> BaseChatModel:
        return chat_model_for(deployment, max_tokens=max_tokens, options=options)

    try:
        await stream_with_failover(
            alias=alias,
            messages=messages,
            sink=sink,
            build=build,
            record=record,
            policy=RetryPolicy.from_settings(),
            prompt_tokens=state.prompt_estimate,
            plan_for=partial(route_plan, allowed=reply_allowed_models(reply)),
            stop=stop,
            refit=refit,
        )
    finally:
        state.prompt_tokens = record.usage.prompt_tokens
        state.completion_tokens = record.usage.completion_tokens


async def _await_unless_stopped(pump: asyncio.Task[None], stop: asyncio.Event) -> bool:
    """Wait for the token pump unless `stop` is set first (the reply was cancelled, or the
    reaper took it away). True if it was stopped: the pump is then left to end by itself."""
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({pump, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if not stop.is_set():
        pump.result()  # re-raises the pump's error
        return False
    _detach(pump)
    return True


# Pumps of stopped replies that have not ended yet. The event loop only keeps weak references to
# tasks: this holds them until they have closed their provider stream.
_detached: set[asyncio.Task[None]] = set()


def _detach(pump: asyncio.Task[None]) -> None:
    if pump.done():
        _ended(pump)
        return
    _detached.add(pump)
    pump.add_done_callback(_ended)


def _ended(pump: asyncio.Task[None]) -> None:
    _detached.discard(pump)
    if not pump.cancelled() and (exc := pump.exception()) is not None:
        # The reply is already final; a provider that failed as it was let go is no news.
        logger.info("a stopped reply's stream ended with %r", exc)
