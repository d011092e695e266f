"""Process-level patches to the server Daphne builds on, applied once by project/asgi.py.

Each is applied only inside a Daphne process (tests and Celery import the ASGI module too).
"""

from __future__ import annotations

import random
import sys
import time
from collections import deque
from collections.abc import Callable, Generator
from typing import Any


def daphne_patches_apply() -> None:
    if "daphne.server" not in sys.modules:  # not served by Daphne: nothing to patch
        return
    _close_oversized_messages()
    _answer_long_request_lines()
    _listen_backlog()
    _lean_input_queues()
    _autobahn_debug_formatting_lazy()
    _handshake_copies_dropped_once_open()
    _handshakes_admitted_in_turn()
    _writes_tried_before_waiting()
    _text_frames_sent_without_a_coroutine()


def _close_oversized_messages() -> None:
    """Daphne refuses a WebSocket message over --websocket-max-message-size with close code 1009.

    Autobahn "fails" such a connection by dropping TCP without a close frame (its `failByDrop`
    default), which a client sees as 1006, an unexplained network error; Daphne has no flag for
    it. With failByDrop off, autobahn sends the close frame (1009 "message too big"; 1002/1007
    for protocol errors and invalid UTF-8) and drops the connection only if the peer does not
    answer within its close-handshake timeout. docs/protocol.md documents the codes.
    """
    from daphne.ws_protocol import WebSocketFactory

    if getattr(WebSocketFactory, "_parley_patched", False):
        return
    original = WebSocketFactory.setProtocolOptions

    def set_protocol_options(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("failByDrop", False)
        original(self, *args, **kwargs)
        _options_on_protocol_class(self)

    setattr(WebSocketFactory, "setProtocolOptions", set_protocol_options)  # noqa: B010
    setattr(WebSocketFactory, "_parley_patched", True)  # noqa: B010


def _options_on_protocol_class(factory: Any) -> None:
    """The factory's options as class attributes of a protocol class of its own.

    Autobahn copies each of its ~40 options from the factory onto every connection that does
    not have it already (`_connectionMade`): ~1.6 KB more per socket in each connection's
    `__dict__` (tracemalloc: a 3.2 KB dict). Found on the class, the same values are shared.
    A factory set up again gets a new class with the new values.
    """
    protocol = factory.protocol
    # A function-valued option (perMessageCompressionAccept) is called as given, not as a method.
    options: dict[str, Any] = {}
    for name in protocol.CONFIG_ATTRS:
        value = getattr(factory, name)
        options[name] = staticmethod(value) if callable(value) else value
    factory.protocol = type(protocol.__name__, (protocol,), options)


def _autobahn_debug_formatting_lazy() -> None:
    """Autobahn pretty-prints its ~40 options for a debug log line at every connection,
    whether or not debug logging is on: 9 % of a replica's CPU during a burst of handshakes
    (py-spy). Its `pformat` now pretty-prints only while txaio logs at debug level; otherwise
    it returns "" (its `repr` fallback was still ~2 % of a cached accept's event-loop time).

    The same for its `hltype` and `hlval`, which colour a function's name, the peer and a
    length with click for the debug line of every frame sent and every read: three `click.style`
    calls a frame, ~2 % of a replica's CPU while it streams (py-spy, docs/benchmarks.md)."""
    import pprint

    import autobahn.twisted.websocket as autobahn_twisted
    import autobahn.websocket.protocol as autobahn_protocol
    import txaio
    from autobahn import util

    if getattr(autobahn_protocol, "_parley_patched", False):
        return

    def debugging() -> bool:
        return txaio.get_global_log_level() in ("debug", "trace")  # type: ignore[attr-defined,no-any-return]

    def pformat(value: object, *args: Any, **kwargs: Any) -> str:
        if debugging():
            return pprint.pformat(value, *args, **kwargs)
        return ""  # for a debug line that is not logged: no repr of ~40 options either

    def hltype(value: object) -> str:
        return util.hltype(value) if debugging() else ""

    def hlval(value: object, *args: Any, **kwargs: Any) -> str:
        return util.hlval(value, *args, **kwargs) if debugging() else ""

    setattr(autobahn_protocol, "pformat", pformat)  # noqa: B010
    for module in (autobahn_protocol, autobahn_twisted):
        setattr(module, "hltype", hltype)  # noqa: B010
        setattr(module, "hlval", hlval)  # noqa: B010
    setattr(autobahn_protocol, "_parley_patched", True)  # noqa: B010


class _OpenedRequest:
    """What Daphne reads again of an open socket's handshake request: its path (logged at
    close)."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path


# What autobahn keeps of a server handshake once it answered it: the raw request and response,
# the parsed headers and request line. Nothing reads them after the socket opens.
_AUTOBAHN_HANDSHAKE_COPIES = (
    "http_request_data",
    "http_response_data",
    "http_headers",
    "http_status_line",
    "http_request_uri",
    "http_request_host",
    "http_request_path",
    "http_request_params",
)


def _handshake_copies_dropped_once_open() -> None:
    """An open socket lets go of the three copies of its handshake that outlive it.

    The upgrade request is parsed three times: by Twisted (a `Request` with its headers, kept
    in the HTTP channel's `requests`: that channel stays the transport's producer for flow
    control, so it lives as long as the socket), by autobahn (raw bytes, headers dict, request
    line, and its response) and by Daphne (`self.request`, autobahn's `ConnectionRequest`).
    The scope keeps the headers the application uses. From `onOpen` on, the first two are
    dropped and Daphne's request is replaced by its path, the only part it reads again
    (tracemalloc: ~2 KB of each open socket; docs/benchmarks.md).
    """
    from daphne.ws_protocol import WebSocketProtocol

    if getattr(WebSocketProtocol.onOpen, "_parley_patched", False):
        return
    on_open = WebSocketProtocol.onOpen

    def on_open_lean(self: Any) -> None:
        on_open(self)
        self.request = _OpenedRequest(self.request.path)
        for name in _AUTOBAHN_HANDSHAKE_COPIES:
            self.__dict__.pop(name, None)
        # The HTTP channel the connection was upgraded from (Daphne hands the transport over
        # but leaves the channel registered as its producer). It never reads or answers its
        # request again: nothing else holds the request.
        requests = getattr(getattr(self.transport, "producer", None), "requests", None)
        if isinstance(requests, list):
            requests.clear()

    on_open_lean._parley_patched = True  # type: ignore[attr-defined]
    WebSocketProtocol.onOpen = on_open_lean


def _answer_long_request_lines() -> None:
    """A request line or header line over Twisted's 16 KiB line limit gets 414 or 431.

    Twisted's HTTP channel closes the connection without a word when a line passes its
    LineReceiver limit, so a client sending a 20,000-character URL saw a dropped connection.
    nginx answers 414 before Daphne sees such a request (its large_client_header_buffers);
    Daphne reached directly now answers the same.
    """
    from twisted.web.http import HTTPChannel

    if getattr(HTTPChannel, "_parley_patched", False):
        return

    def line_length_exceeded(self: Any, line: bytes) -> None:
        # Until the request line is complete, Twisted's private flag is set.
        request_line = bool(getattr(self, "_HTTPChannel__first_line", 0))
        status = b"414 URI Too Long" if request_line else b"431 Request Header Fields Too Large"
        self.transport.write(
            b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        self.loseConnection()

    setattr(HTTPChannel, "lineLengthExceeded", line_length_exceeded)  # noqa: B010
    setattr(HTTPChannel, "_parley_patched", True)  # noqa: B010


def _listen_backlog() -> None:
    """Listen with a backlog of DAPHNE_LISTEN_BACKLOG connections, not Twisted's 50.

    After a replica dies, its thousands of clients reconnect to the others within seconds
    (bench/socket_bench.py). With 50 pending connections a replica's accept queue overflowed,
    the kernel dropped the SYNs, and clients waited out their retransmits and timeouts instead
    of queueing for a moment. Daphne builds its endpoints after loading the application (this
    patch), from -b/-p, as `tcp:port=…:interface=…` strings, to which this adds `backlog=`
    (the kernel caps it at net.core.somaxconn).
    """
    import daphne.cli
    from django.conf import settings

    backlog = settings.DAPHNE_LISTEN_BACKLOG
    original = daphne.cli.build_endpoint_description_strings
    if getattr(original, "_parley_patched", False) or backlog <= 0:
        return

    def build(*args: Any, **kwargs: Any) -> list[str]:
        strings: list[str] = original(*args, **kwargs)
        return [
            f"{s}:backlog={backlog}" if s.startswith("tcp:") and "backlog=" not in s else s
            for s in strings
        ]

    build._parley_patched = True  # type: ignore[attr-defined]
    daphne.cli.build_endpoint_description_strings = build


def _lean_input_queues() -> None:
    """Each connection's input queue is a SocketQueue (core/memory.py), not an asyncio.Queue:
    ~3 KB less per open socket. Daphne's `Server.create_application`, with that one change."""
    import asyncio
    from functools import partial

    from daphne.server import Server

    from core.memory import SocketQueue

    if getattr(Server, "_parley_patched", False):
        return

    def create_application(self: Any, protocol: Any, scope: dict[str, Any]) -> Any:
        assert "application_instance" not in self.connections[protocol]
        input_queue: SocketQueue[dict[str, Any]] = SocketQueue()
        scope.setdefault("asgi", {"version": "3.0"})
        application_instance = self.application(
            scope=scope, receive=input_queue.get, send=partial(self.handle_reply, protocol)
        )
        if protocol not in self.connections:
            return None
        self.connections[protocol]["application_instance"] = asyncio.ensure_future(
            application_instance, loop=asyncio.get_event_loop()
        )
        return input_queue

    setattr(Server, "create_application", create_application)  # noqa: B010
    setattr(Server, "_parley_patched", True)  # noqa: B010


# --- WebSocket handshakes admitted in turn ---------------------------------------------------
#
# When a replica dies, its thousands of sockets reconnect to the survivors within seconds.
# Daphne starts every handshake it reads, and each is a dozen steps on the event loop
# (middleware, a database thread, channel-layer subscriptions, the accept): with thousands in
# progress every step of every handshake waits for one step of all the others, so they finish
# together, late, and past 30 s none finishes at all: the storm collapses instead of queueing
# (docs/benchmarks.md, "The reconnect storm"). Here at most WS_HANDSHAKES_AT_ONCE handshakes of
# a process are in progress; the next ones wait, costing nothing, in arrival order; one that
# would wait past WS_HANDSHAKE_WAIT_SECONDS (or find WS_HANDSHAKE_QUEUE waiting already) is
# answered at once with HTTP 503 and a Retry-After, so every connection gets an answer long
# before autobahn's handshake timeout drops it unanswered, and the client backs off.


def _nothing() -> None:
    pass


class HandshakeTurn:
    """One handshake's place: waiting, working (admitted), done, refused or left.

    Its connection keeps it for life (to say when it ends), so `start` and `refuse` are let go
    once one of them ran: they hold the handshake's request (its parsed headers) and deferreds,
    ~1.5 KB of every open socket (tracemalloc; docs/benchmarks.md)."""

    __slots__ = ("arrived", "refuse", "start", "state")

    def __init__(self, arrived: float, start: Callable[[], None], refuse: Callable[[], None]):
        self.arrived, self.start, self.refuse = arrived, start, refuse
        self.state = "waiting"

    def decided(self) -> tuple[Callable[[], None], Callable[[], None]]:
        """(start, refuse), after which the turn holds neither."""
        start, refuse = self.start, self.refuse
        self.start = self.refuse = _nothing
        return start, refuse


class HandshakeAdmission:
    """At most `at_once` handshakes working, up to `queue` waiting in arrival order for at most
    `wait` seconds each; the rest refused. Plain bookkeeping: the caller says when a handshake
    ended (`done`) or its connection went away while waiting (`leave`)."""

    def __init__(
        self, *, at_once: int, queue: int, wait: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.at_once, self.queue, self.wait, self.clock = at_once, queue, wait, clock
        self.working = 0
        self.waiting: deque[HandshakeTurn] = deque()
        self.refused = 0  # since the process started

    def arrive(self, start: Callable[[], None], refuse: Callable[[], None]) -> HandshakeTurn:
        """`start()` now or when its turn comes, or `refuse()` (now, or once it waited too long)."""
        turn = HandshakeTurn(self.clock(), start, refuse)
        self.expire()
        if self.working < self.at_once and not self.waiting:
            self._start(turn)
        elif len(self.waiting) < self.queue:
            self.waiting.append(turn)
        else:
            self._refuse(turn)
        return turn

    def done(self, turn: HandshakeTurn) -> None:
        """An admitted handshake was answered or lost: the next one's turn."""
        if turn.state != "working":
            return
        turn.state = "done"
        self.working -= 1
        self._admit()

    def leave(self, turn: HandshakeTurn) -> None:
        """A waiting handshake's connection went away: it never starts."""
        if turn.state == "waiting":
            turn.state = "left"  # dropped from the queue when it reaches the front
            turn.decided()

    def expire(self) -> None:
        """Refuse every handshake that has waited `wait` seconds (the oldest are in front)."""
        now = self.clock()
        while self.waiting and (
            self.waiting[0].state != "waiting" or now - self.waiting[0].arrived >= self.wait
        ):
            turn = self.waiting.popleft()
            if turn.state == "waiting":
                self._refuse(turn)

    def _admit(self) -> None:
        self.expire()
        while self.working < self.at_once and self.waiting:
            turn = self.waiting.popleft()
            if turn.state == "waiting":
                self._start(turn)

    def _start(self, turn: HandshakeTurn) -> None:
        turn.state = "working"
        self.working += 1
        start, _ = turn.decided()
        start()

    def _refuse(self, turn: HandshakeTurn) -> None:
        turn.state = "refused"
        self.refused += 1
        _, refuse = turn.decided()
        refuse()


def retry_after_seconds() -> int:
    """A refused handshake's Retry-After: 1 to WS_HANDSHAKE_RETRY_AFTER seconds, at random, so
    clients that obey it to the second still come back spread out."""
    from django.conf import settings

    return random.randint(1, max(1, settings.WS_HANDSHAKE_RETRY_AFTER))


def _handshakes_admitted_in_turn() -> None:
    """Daphne's WebSocket protocol with `HandshakeAdmission` in front of its `onConnect` (which
    creates the application): see the comment above `HandshakeTurn`."""
    from autobahn.websocket.types import ConnectionDeny
    from daphne.ws_protocol import WebSocketProtocol
    from django.conf import settings
    from twisted.internet import defer, task

    if getattr(WebSocketProtocol, "_parley_admission", None) is not None:
        return
    if settings.WS_HANDSHAKES_AT_ONCE <= 0:
        return
    admission = HandshakeAdmission(
        at_once=settings.WS_HANDSHAKES_AT_ONCE,
        queue=settings.WS_HANDSHAKE_QUEUE,
        wait=settings.WS_HANDSHAKE_WAIT_SECONDS,
    )
    # Waiting handshakes are refused on time even while none ends.
    task.LoopingCall(admission.expire).start(0.5, now=False)
    on_connect, on_close = WebSocketProtocol.onConnect, WebSocketProtocol.onClose
    fail_handshake = WebSocketProtocol.failHandshake

    def refusal(protocol: Any) -> ConnectionDeny:
        protocol._parley_retry_after = retry_after_seconds()
        return ConnectionDeny(503, "Service Unavailable")

    def admitted_on_connect(self: Any, request: Any) -> Any:
        answer: defer.Deferred[Any] = defer.Deferred()
        refused: list[ConnectionDeny] = []

        def start() -> None:
            handshake = defer.maybeDeferred(on_connect, self, request)
            handshake.addBoth(ended)
            handshake.chainDeferred(answer)

        def ended(result: Any) -> Any:
            admission.done(self._parley_turn)
            return result

        def refuse() -> None:
            refused.append(refusal(self))
            if queued:
                answer.errback(refused[-1])

        queued = False  # refused on arrival: raised below, which autobahn answers the same
        self._parley_turn = admission.arrive(start, refuse)
        queued = True
        if refused:
            raise refused[-1]
        return answer

    def admitted_on_close(self: Any, *args: Any, **kwargs: Any) -> Any:
        turn = getattr(self, "_parley_turn", None)
        if turn is not None and turn.state in ("waiting", "refused", "left"):
            admission.leave(turn)
            return None  # never reached Daphne: nothing of it to clean up
        if turn is not None:
            admission.done(turn)
        return on_close(self, *args, **kwargs)

    def fail_handshake_saying_when(
        self: Any, reason: str, code: int = 400, responseHeaders: Any = None
    ) -> None:
        retry_after = getattr(self, "_parley_retry_after", None)
        if code == 503 and retry_after is not None:
            responseHeaders = [*(responseHeaders or []), ("Retry-After", str(retry_after))]
        fail_handshake(self, reason, code, responseHeaders)

    WebSocketProtocol.onConnect = admitted_on_connect
    WebSocketProtocol.onClose = admitted_on_close
    WebSocketProtocol.failHandshake = fail_handshake_saying_when
    WebSocketProtocol._parley_admission = admission


# --- Writes tried before waiting for the socket ----------------------------------------------


def _writes_tried_before_waiting() -> None:
    """The reactor tries a connection's write in the same loop pass, and waits for the socket to
    become writable only if the kernel's buffer is full.

    Twisted buffers every write and asks the event loop to say when the socket is writable
    (`addWriter`: an epoll_ctl), which on a socket with room is the next pass; it then sends and
    stops asking (`removeWriter`: another epoll_ctl). Every frame a socket sends paid both, a
    selector event and Twisted's logging context: ~6 % of a replica's CPU while it streams
    (py-spy, docs/benchmarks.md "Send path"). Here `addWriter` only schedules the write for the
    end of the current pass (writes made meanwhile still leave together, in one send) and
    registers with the loop only what the kernel did not take. Errors and closes are the
    reactor's own (`_readOrWrite`, as a writable socket would have run it)."""
    from twisted.internet.asyncioreactor import AsyncioSelectorReactor

    if getattr(AsyncioSelectorReactor, "_parley_patched", False):
        return
    add_writer = AsyncioSelectorReactor.addWriter
    remove_writer = AsyncioSelectorReactor.removeWriter

    def waiting(reactor: Any) -> set[Any]:
        """The writers registered with the event loop (a full socket buffer)."""
        armed: set[Any] | None = reactor.__dict__.get("_parley_waiting")
        if armed is None:
            armed = reactor._parley_waiting = set()
        return armed

    def add_writer_soon(self: Any, writer: Any) -> None:
        if writer in self._writers or writer in self._continuousPolling._writers:
            return
        self._writers[writer] = writer.fileno()  # a writer, as far as the reactor's callers see
        self._asyncioEventloop.call_soon(write_now, self, writer)

    def write_now(self: Any, writer: Any) -> None:
        armed = waiting(self)
        if writer not in self._writers or writer in armed:
            return  # stopped meanwhile (written, lost or closed), or waiting already
        self._readOrWrite(writer, False)  # all written: doWrite stopped writing (removeWriter)
        if writer in self._writers and writer not in armed:
            del self._writers[writer]  # the rest when the socket has room, as Twisted does
            add_writer(self, writer)
            if writer in self._writers:
                armed.add(writer)

    def remove_writer_soon(self: Any, writer: Any) -> None:
        armed = waiting(self)
        if writer in armed:
            armed.discard(writer)
            remove_writer(self, writer)
        elif writer in self._writers:
            del self._writers[writer]  # never registered with the loop
        else:
            remove_writer(self, writer)

    setattr(AsyncioSelectorReactor, "addWriter", add_writer_soon)  # noqa: B010
    setattr(AsyncioSelectorReactor, "removeWriter", remove_writer_soon)  # noqa: B010
    setattr(AsyncioSelectorReactor, "_parley_patched", True)  # noqa: B010


# --- A text frame handed to autobahn at once -------------------------------------------------


class _Sent:
    """An awaitable that is done already: what a frame handed over at once returns."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        return
        yield  # a generator that ends at once


_SENT = _Sent()


def _text_frames_sent_without_a_coroutine() -> None:
    """Daphne's `send` for a socket's text frame hands it to autobahn at once.

    Every frame an application sends went through `Server.handle_reply` (a coroutine), then
    the protocol's `handle_reply` and `serverSend`, checks and a debug line on the way: ~2 % of
    a replica's CPU while it streams, ~9 frames per message sent (py-spy; docs/benchmarks.md
    "Send path"). The common case, `{"type": "websocket.send", "text": ...}` to an open socket,
    is now those same checks in one call returning a finished awaitable; anything else (accept,
    close, bytes, a socket not open, Daphne's debug logging on) goes Daphne's way."""
    import logging

    from daphne.server import Server
    from daphne.ws_protocol import WebSocketProtocol

    if getattr(Server, "_parley_frames_patched", False):
        return
    handle_reply = Server.handle_reply
    daphne_log = logging.getLogger("daphne.ws_protocol")
    open_state = WebSocketProtocol.STATE_OPEN

    def handle_reply_at_once(self: Any, protocol: Any, message: dict[str, Any]) -> Any:
        text = message.get("text")
        if (
            type(text) is str
            and text  # Daphne sends no empty text frame
            and len(message) == 2
            and message["type"] == "websocket.send"
            and getattr(protocol, "state", None) == open_state
            and not daphne_log.isEnabledFor(logging.DEBUG)
        ):
            connection = self.connections.get(protocol)
            if connection is not None and not connection.get("disconnected", None):
                protocol.sendMessage(text.encode("utf8"), False)
            return _SENT  # a socket gone meanwhile: dropped, as Daphne drops it
        return handle_reply(self, protocol, message)

    setattr(Server, "handle_reply", handle_reply_at_once)  # noqa: B010
    setattr(Server, "_parley_frames_patched", True)  # noqa: B010
