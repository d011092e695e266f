"""A WebSocket client that follows replies like the page (static/chat/chat.js): it holds each
reply's text by seq (docs/protocol.md), reconnects and resumes after a drop, resumes a reply
gone silent, and records anything a correct server never sends. Plain sockets read frame by
frame are in `tests.harness.sockets`."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.typing import Origin

if TYPE_CHECKING:
    from tests.harness.topology import Topology

# A reply silent this long gets a `resume` (chat.js does the same after STALL_RESUME_MS): the
# channel layer may drop a reply's last event, which no later seq would reveal.
STALL_RESUME = 10.0


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Until `predicate()` holds; fails with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.02)


class Client:
    """One WebSocket to the topology (through nginx). It holds each reply's text by seq
    (docs/protocol.md) and records anything a correct server never sends: a delta that does
    not start where the held text ends, text after a reply's final frame, a second final frame.
    Like the page, after a dropped socket it reconnects (backoff, through nginx) and resumes
    every reply it holds that is not final, and it resumes a reply that has been silent for
    `stall_resume` seconds.
    """

    def __init__(self, topo: Topology, label: str, stall_resume: float = STALL_RESUME) -> None:
        self.topo = topo
        self.label = label
        self.stall_resume = stall_resume
        self.ws: ClientConnection | None = None
        self.replica = ""
        self.texts: dict[int, str] = {}
        self.finals: dict[int, list[dict[str, Any]]] = defaultdict(list)
        self.final_at: dict[int, float] = {}
        self.acks: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.frame_errors: list[dict[str, Any]] = []
        self.violations: list[str] = []
        self.following: set[int] = set()
        self.resumes: list[tuple[int, int]] = []
        self.drops = 0
        self.reconnects = 0
        self.pongs = 0
        self.lives = 0  # `live` frames: the server's live feed is back after an outage
        self.reconnecting = True
        self.heard: dict[int, float] = {}  # reply -> when it last had a frame
        self.resumed: dict[int, int] = defaultdict(int)  # reply -> resumes sent
        self.stall_resumes = 0
        self._reader: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None

    async def open(self, place: bool = False) -> None:
        """Connect; with `place`, learn which replica took the socket (`self.replica`)."""
        before = self.topo.wsconnects() if place else {}
        self.ws = await self._connect()
        if place:
            self.replica = await self.topo.replica_of_new_socket(before)
        self._reader = asyncio.create_task(self._read())
        self._watchdog = asyncio.create_task(self._watch())

    async def _connect(self) -> ClientConnection:
        return await connect(
            self.topo.ws_url,
            origin=Origin(self.topo.base),
            additional_headers={"Cookie": self.topo.cookie},
            open_timeout=10,
            close_timeout=2,
            max_queue=None,
        )

    async def close(self) -> None:
        self.reconnecting = False
        for task in (self._reader, self._watchdog):
            if task is not None:
                task.cancel()
        if self.ws is not None:
            await self.ws.close()

    async def send(self, frame: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send(json.dumps(frame))

    async def send_text(self, text: str, conversation: int | None = None) -> str:
        client_id = uuid.uuid4().hex
        await self.send(
            {"type": "send", "conversation": conversation, "text": text, "client_id": client_id}
        )
        return client_id

    async def subscribe(self, conversation: int) -> None:
        self.following.add(conversation)
        await self.send({"type": "subscribe", "conversation": conversation})
        pongs = self.pongs
        await self.send({"type": "ping"})  # frames are handled in order: then it is subscribed
        await until(lambda: self.pongs > pongs, 10, f"{self.label}: pong")

    def reply_of(self, client_id: str) -> int | None:
        acks = self.acks.get(client_id)
        return acks[0]["reply"] if acks else None

    def final(self, reply: int) -> dict[str, Any] | None:
        finals = self.finals.get(reply)
        return finals[0] if finals else None

    # -- reading --

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            for reply, text in list(self.texts.items()):
                if reply in self.finals or now - self.heard.get(reply, now) < self.stall_resume:
                    continue
                self.heard[reply] = now
                self.stall_resumes += 1
                self.resumes.append((reply, len(text)))
                self.resumed[reply] += 1
                try:
                    await self.send({"type": "resume", "message": reply, "after_seq": len(text)})
                except ConnectionClosed:
                    pass  # the reader reconnects and resumes

    async def _read(self) -> None:
        while True:
            ws = self.ws
            assert ws is not None
            try:
                async for raw in ws:
                    self._apply(json.loads(raw))
            except ConnectionClosed:
                pass
            self.drops += 1
            if not self.reconnecting:
                return
            await self._reconnect()

    async def _reconnect(self) -> None:
        """Like chat.js: backoff, reconnect through nginx, then resume what is not final."""
        delay, deadline = 0.1, time.monotonic() + 60
        while True:
            await asyncio.sleep(delay)
            try:
                self.ws = await self._connect()
            except (OSError, InvalidHandshake, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                delay = min(delay * 2, 1.0)
                continue
            break
        self.reconnects += 1
        try:
            for conversation in sorted(self.following):
                await self.send({"type": "subscribe", "conversation": conversation})
            for reply, text in list(self.texts.items()):
                if reply not in self.finals:
                    self.resumes.append((reply, len(text)))
                    self.resumed[reply] += 1
                    await self.send({"type": "resume", "message": reply, "after_seq": len(text)})
        except ConnectionClosed:
            pass  # dropped again: the read loop sees it and reconnects once more

    def _apply(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        reply = frame.get("reply") if kind == "ack" else frame.get("message")
        if isinstance(reply, int):
            self.heard[reply] = time.monotonic()
        if kind == "ack":
            self.acks[frame["client_id"]].append(frame)
            self.following.add(frame["conversation"])
            self.texts.setdefault(frame["reply"], "")
        elif kind == "message":
            if frame["role"] == "assistant":
                self.texts.setdefault(frame["message"], "")
        elif kind == "delta":
            self._delta(frame)
        elif kind in ("done", "error") and frame.get("message") is not None:
            reply = frame["message"]
            held = len(self.texts.setdefault(reply, ""))
            earlier = self.finals[reply]
            # A resume of a final reply answers with its final frame again (protocol.md); any
            # other repeat, or a different ending, is a reply that ended twice.
            if earlier and (
                len(earlier) > self.resumed[reply] or _ending(frame) != _ending(earlier[0])
            ):
                self.violations.append(f"{self.label}: second final for {reply}: {frame}")
            if not earlier and kind == "done" and frame["seq"] != held:
                self.violations.append(f"{self.label}: done at {frame['seq']}, holding {held}")
            self.finals[reply].append(frame)
            self.final_at.setdefault(reply, time.monotonic())
        elif kind == "error":
            self.frame_errors.append(frame)
        elif kind == "pong":
            self.pongs += 1
        elif kind == "live":
            self.lives += 1

    def _delta(self, frame: dict[str, Any]) -> None:
        reply, start, seq, piece = frame["message"], frame["start"], frame["seq"], frame["text"]
        text = self.texts.setdefault(reply, "")
        # The answer to a resume starts at the after_seq it asked for, which may be behind what
        # the client holds by the time it arrives (live deltas overtook it), and may follow
        # the final frame (protocol.md: duplicates are ignored). Unasked, neither may happen.
        asked = self.resumed[reply] > 0
        if self.finals.get(reply):
            if not asked:
                self.violations.append(f"{self.label}: delta after final for {reply}: {frame}")
            return
        if len(piece) != seq - start:
            self.violations.append(f"{self.label}: delta length != seq - start: {frame}")
        if start > len(text) or (start < len(text) and not asked):
            kind = "gap" if start > len(text) else "overlap"
            self.violations.append(f"{self.label}: {kind}: {start}..{seq} holding {len(text)}")
        if seq <= len(text):
            return
        if start > len(text):  # as the page does: ask for the missing text
            self.resumes.append((reply, len(text)))
            self.resumed[reply] += 1
            resume = {"type": "resume", "message": reply, "after_seq": len(text)}
            asyncio.get_running_loop().create_task(self.send(resume))
            return
        self.texts[reply] = text + piece[len(text) - start :]


def _ending(frame: dict[str, Any]) -> tuple[Any, ...]:
    return (frame["type"], frame.get("status"), frame.get("code"), frame.get("seq"))


async def clients_on_replicas(topo: Topology, per_replica: int, label: str) -> list[Client]:
    """Open sockets one by one until every replica holds `per_replica` of them (least_conn
    spreads them; an extra socket on a full replica is closed)."""
    placed: dict[str, list[Client]] = defaultdict(list)
    for attempt in range(per_replica * len(topo.replicas) * 4):
        client = Client(topo, f"{label}{attempt}")
        await client.open(place=True)
        if len(placed[client.replica]) < per_replica:
            placed[client.replica].append(client)
            client.label = f"{label}{len(placed[client.replica])}@{client.replica}"
        else:
            await client.close()
        if all(len(placed[role]) == per_replica for role in topo.replicas):
            return [c for role in topo.replicas for c in placed[role]]
    raise AssertionError(f"sockets did not spread: {dict(placed)}")


async def close_all(clients: list[Client]) -> None:
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


async def start_reply(client: Client, prompt: str, conversation: int | None = None) -> int:
    """Send `prompt`; the reply's id once acknowledged."""
    client_id = await client.send_text(prompt, conversation)
    await until(lambda: client.reply_of(client_id) is not None, 15, f"{client.label}: ack")
    reply = client.reply_of(client_id)
    assert reply is not None
    return reply


async def streaming(clients: list[Client], reply: int, timeout: float = 15) -> None:
    """Until every client holds some of the reply's text and none has its end."""
    await until(lambda: all(c.texts.get(reply) for c in clients), timeout, f"first text of {reply}")
    for client in clients:
        assert not client.finals.get(reply), f"{reply} ended before the fault: {client.label}"


async def all_final(clients: list[Client], replies: list[int], timeout: float) -> None:
    """Until every client following one of `replies` holds its final frame."""
    await until(
        lambda: all(r in c.finals for c in clients for r in replies if r in c.texts),
        timeout,
        f"final frames for {replies}",
    )


def assert_clean(*clients: Client) -> None:
    """No client saw anything a correct server never sends."""
    problems = [v for c in clients for v in c.violations]
    assert not problems, "\n".join(problems[:20])
