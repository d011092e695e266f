"""Process-level patches, applied once by project/asgi.py."""

from __future__ import annotations

import sys
from typing import Any


def daphne_close_oversized_messages() -> None:
    """Daphne refuses a WebSocket message over --websocket-max-message-size with close code 1009.

    Autobahn "fails" such a connection by dropping TCP without a close frame (its `failByDrop`
    default), which a client sees as 1006, an unexplained network error; Daphne has no flag for
    it. With failByDrop off, autobahn sends the close frame (1009 "message too big"; 1002/1007
    for protocol errors and invalid UTF-8) and drops the connection only if the peer does not
    answer within its close-handshake timeout. docs/protocol.md documents the codes.
    """
    if "daphne.server" not in sys.modules:  # not served by Daphne (tests, Celery): nothing to do
        return
    from daphne.ws_protocol import WebSocketFactory

    if getattr(WebSocketFactory, "_parley_close_oversized", False):
        return
    original = WebSocketFactory.setProtocolOptions

    def set_protocol_options(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("failByDrop", False)
        original(self, *args, **kwargs)

    WebSocketFactory.setProtocolOptions = set_protocol_options
    WebSocketFactory._parley_close_oversized = True
