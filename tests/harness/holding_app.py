"""An ASGI app under Parley's Daphne patches (project/patches.py), for tests of handshake
admission: a WebSocket whose path contains `/hold/` is neither accepted nor refused until its
client leaves (it prints "holding" when it gets one); any other is accepted at once. HTTP
requests get 200.

    python -m daphne -p PORT tests.harness.holding_app:application
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

import django

django.setup()

from project.patches import daphne_patches_apply  # noqa: E402

daphne_patches_apply()


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    if "/hold/" in scope["path"]:
        print("holding", flush=True)
    else:
        await send({"type": "websocket.accept"})
    while (await receive())["type"] != "websocket.disconnect":
        pass
