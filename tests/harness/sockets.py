"""Plain WebSockets to Parley, read frame by frame (docs/protocol.md), as tests and bench/ use
them: sign in like a browser, open a socket, send, hear one reply to its end, and open hundreds
of sockets at once for the benchmarks."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Origin

if TYPE_CHECKING:
    from tests.harness.topology import Topology


def sign_in_cookie(base: str, username: str, password: str) -> str:
    """Sign in like a browser (CSRF cookie, POST with Origin and Referer); returns the Cookie
    header a WebSocket client sends."""
    import httpx

    with httpx.Client(base_url=base, timeout=30) as client:
        page = client.get("/accounts/login/")
        assert page.status_code == 200, page.text
        response = client.post(
            "/accounts/login/",
            data={
                "username": username,
                "password": password,
                "csrfmiddlewaretoken": client.cookies["csrftoken"],
            },
            headers={"Referer": f"{base}/accounts/login/", "Origin": base},
        )
        assert response.status_code == 302, f"sign-in failed ({response.status_code})"
        home = client.get(response.headers["location"])
        assert home.status_code == 200, home.status_code
        return "; ".join(f"{name}={value}" for name, value in client.cookies.items())


def admin_action(admin: Any, changelist: str, action: str, pk: int) -> Any:
    """Run an admin changelist `action` on row `pk` as its page's form does (the CSRF token
    read from the page, Origin and Referer sent); `admin`: a signed-in httpx.Client whose
    base_url is the site's. Returns the POST's response."""
    import re

    page = admin.get(changelist)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert token is not None, page.text[:2000]
    base = str(admin.base_url).rstrip("/")
    return admin.post(
        changelist,
        data={"action": action, "_selected_action": str(pk), "csrfmiddlewaretoken": token[1]},
        headers={"Referer": f"{base}{changelist}", "Origin": base},
    )


async def open_socket(
    topo: Topology, *, cookie: str | None = None, origin: str | None = None
) -> ClientConnection:
    """A socket to the topology as its signed-in user (or with `cookie`, from `origin`)."""
    headers = {"Cookie": topo.cookie if cookie is None else cookie}
    return await connect(
        topo.ws_url,
        origin=Origin(origin or topo.base),
        additional_headers=headers,
        open_timeout=10,
        close_timeout=2,
    )


async def recv_frame(ws: ClientConnection, timeout: float) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        return json.loads(await ws.recv())


async def send_text(ws: ClientConnection, text: str, conversation: int | None = None) -> str:
    """A `send` frame with a fresh client id; returns the id."""
    client_id = uuid.uuid4().hex
    frame = {"type": "send", "conversation": conversation, "text": text, "client_id": client_id}
    await ws.send(json.dumps(frame))
    return client_id


async def barrier(ws: ClientConnection) -> None:
    """Frames are handled in order: a pong means every earlier frame (subscribe) took effect."""
    await ws.send(json.dumps({"type": "ping"}))
    while (await recv_frame(ws, 10))["type"] != "pong":
        pass


@dataclass
class Heard:
    """What one socket received for one reply."""

    reply: int | None = None
    conversation: int | None = None
    deltas: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] | None = None
    frames: list[dict[str, Any]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(d["text"] for d in self.deltas)

    def check_contiguous_prefix(self) -> None:
        """Deltas received before a cut: contiguous from 0, no final frame needed."""
        position = 0
        for delta in self.deltas:
            assert delta["start"] == position, f"gap/overlap at {position}: {self.frames}"
            position = delta["seq"]

    def check_contiguous(self, after_seq: int = 0) -> None:
        """Deltas follow each other with no gap or overlap, and `done` closes at their end."""
        assert self.deltas, f"no deltas: {self.frames}"
        position = after_seq
        for delta in self.deltas:
            assert delta["start"] == position, f"gap/overlap at {position}: {self.frames}"
            assert len(delta["text"]) == delta["seq"] - delta["start"], delta
            position = delta["seq"]
        assert self.final is not None and self.final["type"] == "done", self.frames
        assert self.final["seq"] == position, (self.final, position)


async def hear_reply(ws: ClientConnection, reply: int | None = None, timeout: float = 60) -> Heard:
    """Read frames until the reply is final. The reply id comes from `ack` (the sender) or
    from the assistant `message` frame (a subscriber) when not given."""
    heard = Heard(reply=reply)
    deadline = time.monotonic() + timeout
    while heard.final is None:
        frame = await recv_frame(ws, max(0.1, deadline - time.monotonic()))
        heard.frames.append(frame)
        kind = frame["type"]
        if kind == "ack":
            heard.reply, heard.conversation = frame["reply"], frame["conversation"]
        elif kind == "message" and frame["role"] == "assistant" and heard.reply is None:
            heard.reply, heard.conversation = frame["message"], frame["conversation"]
        elif kind == "delta" and frame["message"] == heard.reply:
            heard.deltas.append(frame)
        elif kind in ("done", "error") and frame.get("message") == heard.reply:
            heard.final = frame
        elif kind == "error":
            raise AssertionError(f"error frame: {frame}")
    return heard


# --- Many sockets, for the benchmarks ------------------------------------------------------


async def open_many(
    urls: list[str], headers: dict[str, str], origin: str | None, batch: int = 50
) -> list[ClientConnection]:
    """One socket per URL, `batch` at a time: Daphne accepts ~145 sockets/s here, and a
    stampede of handshakes gets reset (docs/benchmarks.md)."""
    sockets: list[ClientConnection] = []
    for chunk in range(0, len(urls), batch):
        sockets += await asyncio.gather(
            *(
                connect(
                    url,
                    additional_headers=headers,
                    origin=Origin(origin) if origin else None,
                    open_timeout=30,
                    max_queue=None,
                    compression=None,
                )
                for url in urls[chunk : chunk + batch]
            )
        )
    return sockets
