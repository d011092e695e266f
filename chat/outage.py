"""A WebSocket handshake while Redis is down: told `unavailable` and closed, never HTTP 500.

Before a socket is accepted, Redis is on its path twice: channels gives every consumer its own
layer channel (the pub/sub layer subscribes to it in Redis), and a program's ticket is redeemed
from the cache. Either failing used to escape as an exception, which Daphne turns into an HTTP
500 with a traceback per attempt. `OutageGuard` wraps the WebSocket stack (project/asgi.py):
such a failure before the socket is answered accepts it, sends the protocol's `unavailable`
error (retryable) and closes with 4503 (docs/protocol.md; an application may close only with
1000 or 3000-4999, so not the registry's 1013 "try again later"). Failures after the socket
was answered are the consumer's, and pass through.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from redis.exceptions import RedisError

from core.errors import error_code

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Redis unreachable, refusing or timing out (redis-py's own errors, or the socket's).
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (RedisError, ConnectionError, TimeoutError)
TRY_AGAIN_LATER = 4503  # like HTTP 503: reconnect with backoff
UNAVAILABLE_FRAME = {
    "type": "error",
    "code": "unavailable",
    "detail": "The server cannot take new connections for a moment; reconnect shortly.",
    "retryable": error_code("unavailable").retryable,
    "message": None,
}


class OutageGuard:
    """ASGI middleware for the WebSocket stack (module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        connect_received = False
        answered = False  # accepted, closed or denied: from then on errors are the consumer's

        async def receive_tracked() -> Message:
            nonlocal connect_received
            message = await receive()
            connect_received = connect_received or message["type"] == "websocket.connect"
            return message

        def send_tracked(message: Message) -> Awaitable[None]:
            # A plain function handing back the server's own awaitable: every frame of the
            # socket's life passes here, and a coroutine of its own would cost each one more.
            nonlocal answered
            answered = True
            return send(message)

        try:
            await self.app(scope, receive_tracked, send_tracked)
        except OUTAGE_ERRORS as error:
            if answered:
                raise
            logger.warning("new socket refused while Redis is unreachable: %r", error)
            if not connect_received and (await receive())["type"] != "websocket.connect":
                return  # the client went away meanwhile
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.send", "text": json.dumps(UNAVAILABLE_FRAME)})
            await send({"type": "websocket.close", "code": TRY_AGAIN_LATER})
