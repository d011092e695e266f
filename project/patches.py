"""Process-level patches to the server Daphne builds on, applied once by project/asgi.py.

Each is applied only inside a Daphne process (tests and Celery import the ASGI module too).
"""

from __future__ import annotations

import sys
from typing import Any


def daphne_patches_apply() -> None:
    if "daphne.server" not in sys.modules:  # not served by Daphne: nothing to patch
        return
    _close_oversized_messages()
    _answer_long_request_lines()
    _listen_backlog()
    _lean_input_queues()
    _autobahn_debug_formatting_lazy()


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
    (py-spy). Its `pformat` now pretty-prints only while txaio logs at debug level."""
    import pprint

    import autobahn.websocket.protocol as autobahn_protocol
    import txaio

    if getattr(autobahn_protocol, "_parley_patched", False):
        return

    def pformat(value: object, *args: Any, **kwargs: Any) -> str:
        if txaio.get_global_log_level() in ("debug", "trace"):  # type: ignore[attr-defined]
            return pprint.pformat(value, *args, **kwargs)
        return repr(value)

    setattr(autobahn_protocol, "pformat", pformat)  # noqa: B010
    setattr(autobahn_protocol, "_parley_patched", True)  # noqa: B010


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
