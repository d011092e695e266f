"""An API reply whose provider call starts before its row exists.

A reply this server generates for an OpenAI-compatible request (chat/replies/dispatch.py
`generation_in_this_server`) needs nothing from the database to call its provider: once the
request is validated and its budget cannot refuse it, its model alias and route (the catalogue
is kept per process), its options and its prompt (the request's own messages and system
prompt: a new conversation has no other history and no documents, chat/replies/prompt.py
`prompt_from_request`) are all known. So the call starts then, on the server's event loop,
while the request's thread writes the conversation, the messages and the reply; the reply row
is created claimed by this process (`streaming`, no claim UPDATE), and its prompt is not read
back. The provider's time to first token covers the writes.

Ordering and failure:
- `begin` is called in the request's transaction once its budget cannot refuse it: right
  after the reservation when a budget applies, at once when none does (the reservation, which
  locks the budget's counters until the commit, then comes last: chat/services/completions.py).
  A request refused by its rate limit or its budget never reaches a provider.
- Text that comes before the row is committed waits here. It is handed on (published,
  journalled, followed, checkpointed) only by reply_stream, which starts when the row is
  committed (`attach`, from transaction.on_commit), so every watcher, on any replica, sees every
  delta under the reply's id.
- If the transaction fails (an Idempotency-Key repeat, any error) or answers with an earlier
  request's reply, `abort` stops the call as a cancel does: the provider's stream is closed and
  the breaker's probe slot released; nothing is saved, and the reservation rolled back with
  the transaction.
- The first round of its routing (the route plan, and the breaker's and limits' verdict on the
  first deployment) is taken by `begin` in the request's thread, not by a trip from the loop to
  a thread (llm/failover.py FirstRound); its breaker permit is settled once, by the attempt
  that uses it or given back when the call ends without using it (an abort, a crash). Not when
  the reply cache is on: its lookup comes first, and a hit calls no provider.
- A request that names an Idempotency-Key may be a repeat, which fails only at its insert:
  its call starts when its row is committed (`before_commit` off), so a repeat never reaches a
  provider. Everything else (no claim, no prompt read) is the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from datetime import datetime
from functools import partial

from django.conf import settings
from django.utils import timezone
from langchain_core.messages import BaseMessage

from chat.models import Message
from chat.replies.live import live_register, live_reply
from chat.replies.prompt import reply_alias, reply_allowed_models
from chat.replies.stream import ReplyState, StartedReply, reply_source, reply_stream
from chat.replies.tasks import on_database_lane
from core.observability.context import handoff
from llm import accounting
from llm.failover import FirstRound, TextSink, first_round_context
from llm.router import route_plan

logger = logging.getLogger(__name__)

# Held here until they end: the loop keeps only weak references to tasks.
_running: set[asyncio.Task[None]] = set()


class EarlyReply:
    """One reply's generation, begun by the transaction that records its request.

    `begin`, `attach` and `abort` are called from that transaction's thread; each hands its
    work to the loop in call order, so the loop always sees the beginning first.
    """

    def __init__(
        self,
        *,
        loop: asyncio.AbstractEventLoop,
        pending: Message,
        prompt: list[BaseMessage],
        before_commit: bool,
    ) -> None:
        self.loop = loop
        # The reply as it will be saved (routing, provider, tenant), never saved itself: what
        # the source reads before the row exists.
        self.pending = pending
        self.prompt = prompt
        self.before_commit = before_commit
        self.started_at: datetime = timezone.now()
        self._outcome: asyncio.Future[Message | None] | None = None
        self._message_id: int | None = None
        self._held: list[str] = []
        self._sink: TextSink | None = None
        self._first: FirstRound | None = None

    # --- from the request's thread -------------------------------------------------------

    def begin(self) -> None:
        # The first round's route plan and gate, here: the provider call then goes out without
        # a hop to a thread (llm/failover.py FirstRound). Only for a call that starts now, and
        # that the reply cache cannot answer (a hit would have counted against the
        # deployment's limits for nothing).
        if self.before_commit and not settings.CACHE_ENABLED:
            self._first = FirstRound.made(
                partial(route_plan, allowed=reply_allowed_models(self.pending)),
                reply_alias(self.pending),
                prompt_tokens=accounting.estimate_tokens(
                    "".join(str(m.content) for m in self.prompt)
                ),
            )
        try:
            # A fresh context: the request thread's would make the task's own sync_to_async
            # calls think they are nested in it (as chat/replies/dispatch.py's start does).
            self.loop.call_soon_threadsafe(self._begin, context=contextvars.Context())
        except BaseException:
            self._release_first()  # the generation will never start
            raise

    def attach(self, reply: Message) -> None:
        """The reply's row is committed: its generation goes on under its id."""
        handoff(reply.pk)  # the generation continues the request's trace
        self.loop.call_soon_threadsafe(self._resolve, reply)

    def abort(self) -> None:
        """The request saved no reply of its own: stop the call (no-op once attached)."""
        self.loop.call_soon_threadsafe(self._resolve, None)

    # --- on the loop ----------------------------------------------------------------------

    def _begin(self) -> None:
        self._outcome = self.loop.create_future()
        task = self.loop.create_task(self._run(), name="reply-early")
        _running.add(task)
        task.add_done_callback(self._ended)

    def _resolve(self, reply: Message | None) -> None:
        assert self._outcome is not None, "begin() is handed to the loop first"
        if self._outcome.done():
            return
        if reply is not None:
            # Before the view that created the reply resumes (handed to the loop after this,
            # from the same thread): it finds the reply live (chat/replies/live.py).
            self._message_id = reply.pk
            live_register(reply.pk)
        self._outcome.set_result(reply)

    async def _run(self) -> None:
        assert self._outcome is not None
        async with on_database_lane():
            stop = asyncio.Event()
            state = ReplyState(message_id=0, conversation_id=0)
            pump = self._source(state, stop) if self.before_commit else None
            reply = await self._outcome
            if reply is None:
                stop.set()  # the provider's stream closes as on a cancel
                if pump is not None:
                    with contextlib.suppress(Exception):
                        await pump
                return
            if pump is None:
                pump = self._source(state, stop)
            started = StartedReply(
                reply=reply,
                prompt=self.prompt,
                state=state,
                pump=pump,
                stop=stop,
                deliver=self._deliver,
            )
            await reply_stream(message_id=reply.pk, started=started)

    def _source(self, state: ReplyState, stop: asyncio.Event) -> asyncio.Task[None]:
        source = reply_source(self.pending, self.prompt, self._take, state, stop)
        first = self._first
        if first is None:
            return asyncio.get_running_loop().create_task(source, name="reply-early-source")
        task = asyncio.get_running_loop().create_task(
            source, name="reply-early-source", context=first_round_context(first)
        )
        task.add_done_callback(lambda _: first.release())  # if it never took it
        return task

    def _release_first(self) -> None:
        if self._first is not None:
            self._first.release()

    async def _take(self, text: str) -> None:
        """The source's sink: held until the reply's generation takes it over."""
        if self._sink is None:
            self._held.append(text)
        else:
            await self._sink(text)

    async def _deliver(self, sink: TextSink) -> None:
        """Hand what came so far to `sink`, in order, then let every later text go there."""
        while self._held:
            held, self._held = "".join(self._held), []
            await sink(held)
        self._sink = sink

    def _ended(self, task: asyncio.Task[None]) -> None:
        _running.discard(task)
        self._release_first()  # the source never started (an abort before it, a crash)
        if self._message_id is not None and (live := live_reply(self._message_id)) is not None:
            live.end(None)  # ended without saying so: its reader goes to the database
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("in-process generation crashed", exc_info=exc)
