"""A reply generated on this process's event loop, followed by a reader on the same loop
without the channel layer (the OpenAI-compatible endpoint's own request, chat/openai_compat/).

The reply's events still go through the layer for every other watcher (a socket on the
conversation, another replica's stream) and its journal (chat/events.py): only the reader
that holds the request skips the round trip through Redis back into this process, the
subscription it needed for it, and the two database reads of the reply (its saved text when
it joins, its final row at the end): the generator hands over its text as it streams and its
final row as it saved it.

Everything here runs on the one event loop that generates the reply and serves the request,
so there are no locks. A live reply is registered when its generation is scheduled
(chat/replies/dispatch.py, on that loop, before the view that created the reply resumes:
both are handed to the loop in that order from the same thread), and forgotten when the
generation ends, however it ends. A reader that comes later, or a generation that ends with
no final row of its own (the reaper finished it first), leaves the reader to the database:
chat/api/follow.py follows it as before.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from chat.cursor import Piece
from chat.models import Message


class _Ended:
    """The generation ended; `LiveReply.final` is its final row, or None."""


ENDED = _Ended()
LiveEvent = Piece | _Ended


class LiveListener:
    """One reader's queue of a live reply's events (no task and no lock per event)."""

    __slots__ = ("_events", "_waiter")

    def __init__(self) -> None:
        self._events: deque[LiveEvent] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def put(self, event: LiveEvent) -> None:
        self._events.append(event)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def get_nowait(self) -> LiveEvent | None:
        return self._events.popleft() if self._events else None

    async def get(self) -> LiveEvent:
        """The next event; wrap it in asyncio.timeout to bound the wait."""
        while not self._events:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._events.popleft()


class LiveReply:
    """A reply being generated on this loop: its text so far, its listeners, its end."""

    __slots__ = ("_listeners", "ended", "final", "message_id", "text_of")

    def __init__(self, message_id: int) -> None:
        self.message_id = message_id
        self.text_of: Callable[[], str] = str  # the generation's text so far ("" until it runs)
        self._listeners: list[LiveListener] = []
        self.ended = False
        self.final: Message | None = None

    def listen(self) -> LiveListener:
        """A listener that gets the text so far (one piece), then every later piece, then
        ENDED."""
        listener = LiveListener()
        if self.ended:
            listener.put(ENDED)
            return listener
        if text := self.text_of():
            listener.put(Piece(0, len(text), text))
        self._listeners.append(listener)
        return listener

    def unlisten(self, listener: LiveListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def delta(self, start: int, seq: int, text: str) -> None:
        if self._listeners:
            piece = Piece(start, seq, text)
            for listener in self._listeners:
                listener.put(piece)

    def end(self, final: Message | None) -> None:
        """The generation ended: `final` is the row it saved (None: it saved none)."""
        if self.ended:
            return
        self.ended, self.final = True, final
        for listener in self._listeners:
            listener.put(ENDED)
        self._listeners.clear()
        live_forget(self)


# message id → its live reply: the replies this process's server loop generates for a request
# it serves (chat/replies/dispatch.py registers them on that loop only).
_live: dict[int, LiveReply] = {}


def live_register(message_id: int) -> LiveReply:
    """Note that `message_id` is generated here, from now on (on the loop that generates it)."""
    live = _live[message_id] = LiveReply(message_id)
    return live


def live_reply(message_id: int) -> LiveReply | None:
    """The reply's live record, if this loop generates it now."""
    return _live.get(message_id)


def live_forget(live: LiveReply) -> None:
    if _live.get(live.message_id) is live:
        del _live[live.message_id]
