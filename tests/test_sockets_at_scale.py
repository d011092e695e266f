"""Process-level settings for many sockets: Daphne's listen backlog, the heap trimmed once
after a storm of closes (project/patches.py, core/memory.py)."""

from __future__ import annotations

import asyncio
import gc
import pprint
import socket
import weakref
from collections import deque
from typing import Any

import daphne.cli
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from daphne.endpoints import build_endpoint_description_strings
from django.test import Client
from twisted.internet import tcp
from twisted.internet.asyncioreactor import AsyncioSelectorReactor
from twisted.internet.protocol import Protocol

from chat.consumers import ChatConsumer
from core import memory
from project import patches
from project.asgi import application


def test_daphne_listens_with_the_configured_backlog(settings, monkeypatch):
    settings.DAPHNE_LISTEN_BACKLOG = 2048
    # Daphne's own builder, whether or not a test before this one patched it already.
    monkeypatch.setattr(
        daphne.cli, "build_endpoint_description_strings", build_endpoint_description_strings
    )
    patches._listen_backlog()
    endpoints = daphne.cli.build_endpoint_description_strings(host="127.0.0.1", port=8000)
    assert endpoints == ["tcp:port=8000:interface=127.0.0.1:backlog=2048"]
    patches._listen_backlog()  # applied once, however often asked
    assert daphne.cli.build_endpoint_description_strings(host="127.0.0.1", port=8000) == endpoints


async def test_a_storm_of_closes_trims_the_heap_once_when_it_is_over(settings, monkeypatch):
    settings.MEMORY_TRIM_AFTER_CLOSE = 0.01
    trims: list[int] = []
    monkeypatch.setattr(memory, "_trim", trims.append)
    for _ in range(500):
        memory.memory_return_soon()
    while not trims:
        await asyncio.sleep(0.01)
    assert trims == [0] and memory._pending is None  # the other 499 were cancelled
    settings.MEMORY_TRIM_AFTER_CLOSE = 0
    memory.memory_return_soon()
    assert memory._pending is None  # off: nothing scheduled


async def test_sockets_that_keep_closing_put_the_pass_off_no_longer_than_the_most_wait(
    settings, monkeypatch
):
    """A close every few seconds, for ever, would postpone a pass that waits for quiet for
    ever: it runs at the latest MEMORY_TRIM_MAX_WAIT after the first close it waited for."""
    settings.MEMORY_TRIM_AFTER_CLOSE, settings.MEMORY_TRIM_MAX_WAIT = 5.0, 60.0
    loop = asyncio.get_running_loop()
    start = loop.time()
    clock = {"now": start}
    monkeypatch.setattr(loop, "time", lambda: clock["now"])
    try:
        memory.memory_return_soon()
        assert memory._pending is not None and memory._pending.when() == start + 5.0
        for _ in range(40):  # a close every 3 s: each would put the pass 5 s further off
            clock["now"] += 3.0
            memory.memory_return_soon()
        assert memory._pending.when() == start + 60.0  # not start + 125
        memory.memory_return()  # the pass ran: the next close starts a new wait
        clock["now"] += 1.0
        memory.memory_return_soon()
        assert memory._pending.when() == clock["now"] + 5.0
    finally:
        if memory._pending is not None:
            memory._pending.cancel()
            memory._pending = None


def test_returning_memory_frees_closed_sockets_cycles_before_trimming(monkeypatch):
    """A closed consumer sits in reference cycles; trimming before they are collected would
    hand nothing back (bench/socket_bench.py: ~45 KB of every closed socket kept)."""

    class Closed:
        pass

    closed = Closed()
    closed.self = closed  # type: ignore[attr-defined]  # a cycle, as a consumer and its tasks
    alive = weakref.ref(closed)
    del closed
    seen_at_trim: list[bool] = []
    monkeypatch.setattr(memory, "_trim", lambda pad: seen_at_trim.append(alive() is None) or 1)
    gc.disable()  # no collection of its own may happen in between
    try:
        memory.memory_return()
    finally:
        gc.enable()
    assert seen_at_trim == [True]


@pytest.mark.django_db(transaction=True)
async def test_a_closed_socket_leaves_its_consumer_collectable(owner, monkeypatch):
    """Nothing in the process keeps a closed socket's consumer (and what it holds) reachable:
    a full collection frees it, so memory_return() can hand its memory back."""
    consumers: list[weakref.ref[ChatConsumer]] = []
    original_init = ChatConsumer.__init__

    def init_recorded(self: ChatConsumer, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        consumers.append(weakref.ref(self))

    monkeypatch.setattr(ChatConsumer, "__init__", init_recorded)
    communicator = await _browser_socket(owner)
    connected, _ = await communicator.connect()
    assert connected
    await communicator.send_json_to({"type": "ping"})
    assert await communicator.receive_json_from() == {"type": "pong"}
    await communicator.disconnect()
    del communicator
    gc.collect()
    assert len(consumers) == 1 and consumers[0]() is None


async def test_a_socket_queue_hands_items_over_in_order_and_holds_nothing_when_drained():
    queue: memory.SocketQueue[int] = memory.SocketQueue()
    reader = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)  # the reader waits on the empty queue
    assert not reader.done()
    for item in (1, 2, 3):
        queue.put_nowait(item)
    assert await reader == 1
    assert [await queue.get(), queue.get_nowait()] == [2, 3]
    assert queue.empty() and queue.qsize() == 0
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()
    # Drained, it keeps no buffer (an asyncio.Queue keeps four, ~3 KB).
    assert not [held for held in gc.get_referents(queue) if isinstance(held, deque | list)]


async def test_a_reader_cancelled_after_being_woken_leaves_the_item_to_the_next():
    queue: memory.SocketQueue[str] = memory.SocketQueue()
    first = asyncio.ensure_future(queue.get())
    second = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait("only")  # wakes the first reader...
    first.cancel()  # ...which is cancelled before it runs
    assert await second == "only"
    assert first.cancelled() and queue.empty()
    # A reader cancelled while waiting is forgotten: the next item goes to a live reader.
    waiting = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    later = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait("next")
    assert await later == "next"


async def test_daphne_gives_each_connection_a_socket_queue():
    from daphne.server import Server

    patches._lean_input_queues()
    received: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        received.append(await receive())

    server = Server(application=app, endpoints=["tcp:port=0"])  # never run
    protocol = object()
    server.connections = {protocol: {}}  # as run() would make it
    queue = server.create_application(protocol, {"type": "websocket"})
    assert isinstance(queue, memory.SocketQueue)
    queue.put_nowait({"type": "websocket.connect"})
    await server.connections[protocol]["application_instance"]
    assert received == [{"type": "websocket.connect"}]


def test_each_connection_reads_the_factorys_options_from_its_class_not_a_copy():
    from daphne.ws_protocol import WebSocketFactory
    from twisted.internet.testing import StringTransport

    patches._close_oversized_messages()
    factory = WebSocketFactory(object(), server="parley")
    factory.setProtocolOptions(openHandshakeTimeout=7, maxMessagePayloadSize=1234)
    protocol = factory.buildProtocol(None)
    protocol.makeConnection(StringTransport())
    options = factory.protocol.CONFIG_ATTRS
    assert not [name for name in options if name in vars(protocol)]  # none copied per socket
    assert (protocol.openHandshakeTimeout, protocol.maxMessagePayloadSize) == (7, 1234)
    assert protocol.failByDrop is False  # still the patched default
    # A function-valued option is called as it was given, not as a method of the connection.
    assert protocol.perMessageCompressionAccept is factory.perMessageCompressionAccept
    factory.setProtocolOptions(openHandshakeTimeout=9)  # set up again: new values
    assert factory.buildProtocol(None).openHandshakeTimeout == 9


def test_an_open_socket_keeps_none_of_its_handshake_but_the_path():
    """Twisted's upgrade request (in the HTTP channel that stays the transport's producer),
    autobahn's parse of it and Daphne's `request` are let go once the socket opens."""
    from types import SimpleNamespace

    from autobahn.websocket.types import ConnectionRequest
    from daphne.ws_protocol import WebSocketFactory
    from twisted.internet.testing import StringTransport
    from twisted.web.http import HTTPChannel, Request

    patches._handshake_copies_dropped_once_open()
    patches._handshake_copies_dropped_once_open()  # applied once, however often asked
    protocol = WebSocketFactory(object(), server="parley").buildProtocol(None)
    transport = StringTransport()
    channel = HTTPChannel()
    channel.makeConnection(transport)  # as Daphne's HTTP side: the transport's producer
    channel.setTimeout(None)
    upgrade = Request(channel)
    channel.requests.append(upgrade)
    upgraded = weakref.ref(upgrade)
    del upgrade
    protocol.makeConnection(transport)
    headers = {"host": "127.0.0.1:8000", "cookie": "sessionid=x" * 50}
    protocol.http_headers = headers
    protocol.http_request_data = b"GET /ws/chat/ HTTP/1.1\r\n" + b"x" * 2000
    protocol.http_response_data = b"HTTP/1.1 101 Switching Protocols\r\n"
    protocol.http_request_params = {}
    protocol.request = ConnectionRequest(
        None, headers, "127.0.0.1", "/ws/chat/", {}, 13, "http://127.0.0.1:8000", [], []
    )
    logged: list[Any] = []
    protocol.server = SimpleNamespace(log_action=lambda *args: logged.append(args))
    protocol.client_addr = None

    protocol.onOpen()

    assert logged == [("websocket", "connected", {"path": "/ws/chat/", "client": None})]
    assert protocol.request.path == "/ws/chat/"  # Daphne logs it at close
    assert not [name for name in vars(protocol) if name.startswith("http_")]
    assert channel.requests == [] and upgraded() is None
    assert transport.producer is channel  # flow control untouched


def test_autobahn_pretty_prints_only_when_debug_logging_is_on(monkeypatch):
    import autobahn.websocket.protocol as autobahn_protocol
    import txaio

    patches._autobahn_debug_formatting_lazy()
    value = [("option", index) for index in range(20)]
    assert autobahn_protocol.pformat(value) == ""  # not even a repr
    monkeypatch.setattr(txaio, "get_global_log_level", lambda: "debug")
    assert autobahn_protocol.pformat(value) == pprint.pformat(value)


def test_autobahn_colours_its_per_frame_debug_values_only_when_debug_logging_is_on(monkeypatch):
    import autobahn.twisted.websocket as autobahn_twisted
    import autobahn.websocket.protocol as autobahn_protocol
    import txaio
    from autobahn import util

    patches._autobahn_debug_formatting_lazy()
    for module in (autobahn_protocol, autobahn_twisted):
        assert module.hltype(test_autobahn_pretty_prints_only_when_debug_logging_is_on) == ""
        assert module.hlval(1234) == ""
    monkeypatch.setattr(txaio, "get_global_log_level", lambda: "debug")
    for module in (autobahn_protocol, autobahn_twisted):
        assert module.hlval(1234) == util.hlval(1234)
        assert module.hltype(pprint.pformat) == util.hltype(pprint.pformat)


async def test_a_text_frame_goes_to_autobahn_at_once_and_anything_else_daphnes_way():
    from daphne.server import Server
    from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol
    from twisted.internet.testing import StringTransport

    patches._text_frames_sent_without_a_coroutine()
    patches._text_frames_sent_without_a_coroutine()  # applied once, however often asked
    protocol = WebSocketFactory(object(), server="parley").buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.state = WebSocketProtocol.STATE_OPEN
    server = Server.__new__(Server)
    server.connections = {protocol: {}}

    protocol.client_addr = None
    sent = server.handle_reply(protocol, {"type": "websocket.send", "text": "héllo"})
    assert not asyncio.iscoroutine(sent)  # handed over already: no coroutine to run
    await sent
    assert transport.value() == b"\x81\x06" + "héllo".encode()  # one final text frame
    transport.clear()
    await server.handle_reply(protocol, {"type": "websocket.send", "text": ""})
    assert transport.value() == b""  # as Daphne: no empty frame
    await server.handle_reply(protocol, {"type": "websocket.send", "bytes": b"\x01"})
    assert transport.value() == b"\x82\x01\x01"  # Daphne's own way
    transport.clear()
    server.connections[protocol]["disconnected"] = True
    await server.handle_reply(protocol, {"type": "websocket.send", "text": "late"})
    assert transport.value() == b""  # a socket gone meanwhile: dropped


class _Written(Protocol):
    def __init__(self) -> None:
        self.lost: list[Any] = []

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.append(reason)


def test_a_write_leaves_in_the_same_pass_and_only_a_full_socket_waits_for_the_loop():
    """Daphne's reactor with the patch: a write is sent at the end of the loop pass that made it,
    never registered with the selector, and writes of that pass leave together; what the
    kernel does not take (a client that does not read) waits for the socket to have room, and
    all of it arrives, in order."""
    patches._writes_tried_before_waiting()
    patches._writes_tried_before_waiting()  # applied once, however often asked
    loop = asyncio.new_event_loop()
    reactor = AsyncioSelectorReactor(loop)
    ours, theirs = socket.socketpair()
    registered: list[int] = []
    add_writer = loop.add_writer

    def add_writer_seen(fd: int, *args: Any) -> None:
        registered.append(fd)
        add_writer(fd, *args)

    loop.add_writer = add_writer_seen  # type: ignore[method-assign]
    try:
        connection = tcp.Connection(ours, _Written(), reactor)
        connection.connected = True
        connection.write(b"ack;")
        connection.write(b"delta;")
        loop.run_until_complete(asyncio.sleep(0))
        assert theirs.recv(100) == b"ack;delta;"  # both in one send, in that pass
        assert registered == [] and reactor.getWriters() == []

        theirs.setblocking(False)
        big = bytes(range(256)) * 40_000  # ~10 MB: more than the kernel's buffers hold
        connection.write(big)
        connection.write(b"done")
        loop.run_until_complete(asyncio.sleep(0))
        assert registered == [ours.fileno()] and reactor.getWriters() == [connection]
        received = bytearray()

        async def read_all() -> None:
            while len(received) < len(big) + 4:
                try:
                    received.extend(theirs.recv(1 << 20))
                except BlockingIOError:
                    await asyncio.sleep(0.001)

        loop.run_until_complete(asyncio.wait_for(read_all(), 30))
        assert bytes(received) == big + b"done"
        loop.run_until_complete(asyncio.sleep(0))
        assert reactor.getWriters() == []  # all written: no longer waiting
        assert not connection.protocol.lost
    finally:
        ours.close()
        theirs.close()
        reactor.disconnectAll()
        loop.close()


async def _browser_socket(user: Any) -> WebsocketCommunicator:
    client = Client()
    await sync_to_async(client.force_login)(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    return WebsocketCommunicator(
        application,
        "/ws/chat/",
        headers=[
            (b"host", b"127.0.0.1:8000"),
            (b"origin", b"http://127.0.0.1:8000"),
            (b"cookie", cookie),
        ],
    )


@pytest.mark.django_db(transaction=True)
async def test_a_closing_socket_leaves_its_groups_without_a_hop_to_the_sync_thread(
    owner, monkeypatch
):
    """channels closes stale database connections after every close, on Daphne's one sync
    thread; the consumer's database calls close their own, so a storm of closes skips it."""
    import channels.generic.websocket
    from channels.layers import get_channel_layer

    hops: list[bool] = []

    async def aclose_old_connections() -> None:
        hops.append(True)

    monkeypatch.setattr(
        channels.generic.websocket, "aclose_old_connections", aclose_old_connections
    )
    communicator = await _browser_socket(owner)
    connected, _ = await communicator.connect()
    assert connected
    layer = get_channel_layer()
    assert layer.groups  # its user's and its session's
    await communicator.disconnect()
    assert not layer.groups and hops == []


def test_daphne_as_in_the_image_runs_with_the_images_allocator(tmp_path, monkeypatch):
    """The Dockerfile's PYTHONMALLOC reaches the Daphne the tests and benches start as in the
    image; an explicit env (bench `--env PYTHONMALLOC=pymalloc`) still wins."""
    from tests.harness.processes import ProcessGroup, image_env

    assert image_env() == {"PYTHONMALLOC": "malloc"}
    started: list[dict[str, str]] = []
    monkeypatch.setattr(ProcessGroup, "start", lambda self, name, argv, env: started.append(env))
    group = ProcessGroup(log_dir=tmp_path)
    group.daphne("image", 1, {"A": "1"}, as_in_image=True, wait_for=None)
    group.daphne("override", 1, {"PYTHONMALLOC": "pymalloc"}, as_in_image=True, wait_for=None)
    group.daphne("plain", 1, {"A": "1"}, wait_for=None)
    assert [env.get("PYTHONMALLOC") for env in started] == ["malloc", "pymalloc", None]


# --- handshakes admitted in turn (project/patches.py) ------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _admission(clock: _Clock, at_once: int = 2, queue: int = 2, wait: float = 10.0) -> Any:
    return patches.HandshakeAdmission(at_once=at_once, queue=queue, wait=wait, clock=clock)


def test_handshakes_past_the_limit_wait_and_start_in_arrival_order():
    clock = _Clock()
    admission = _admission(clock)
    events: list[str] = []
    turns = [
        admission.arrive(
            lambda n=n: events.append(f"start {n}"), lambda n=n: events.append(f"refuse {n}")
        )
        for n in range(4)
    ]
    assert events == ["start 0", "start 1"]  # 2 and 3 wait
    admission.done(turns[1])
    assert events[-1] == "start 2"
    admission.done(turns[1])  # said twice (answered, then lost): counted once
    admission.done(turns[0])
    assert events == ["start 0", "start 1", "start 2", "start 3"]
    assert admission.working == 2 and not admission.waiting


def test_a_handshake_finding_the_queue_full_is_refused_at_once():
    clock = _Clock()
    admission = _admission(clock, at_once=1, queue=1)
    events: list[str] = []
    for n in range(3):
        admission.arrive(
            lambda n=n: events.append(f"start {n}"), lambda n=n: events.append(f"refuse {n}")
        )
    assert events == ["start 0", "refuse 2"] and admission.refused == 1


def test_a_handshake_that_waited_too_long_is_refused_and_never_started():
    clock = _Clock()
    admission = _admission(clock, at_once=1, queue=10, wait=10.0)
    events: list[str] = []
    first = admission.arrive(lambda: events.append("start 0"), lambda: events.append("refuse 0"))
    admission.arrive(lambda: events.append("start 1"), lambda: events.append("refuse 1"))
    clock.now = 9.0
    admission.arrive(lambda: events.append("start 2"), lambda: events.append("refuse 2"))
    clock.now = 10.0
    admission.expire()  # the reactor asks twice a second
    assert events == ["start 0", "refuse 1"]
    admission.done(first)
    assert events == ["start 0", "refuse 1", "start 2"]


def test_a_waiting_handshake_whose_client_left_is_skipped():
    clock = _Clock()
    admission = _admission(clock, at_once=1, queue=10)
    events: list[str] = []
    first = admission.arrive(lambda: events.append("start 0"), lambda: events.append("refuse 0"))
    gone = admission.arrive(lambda: events.append("start 1"), lambda: events.append("refuse 1"))
    admission.arrive(lambda: events.append("start 2"), lambda: events.append("refuse 2"))
    admission.leave(gone)
    admission.done(first)
    assert events == ["start 0", "start 2"] and admission.working == 1


def test_a_turn_lets_go_of_its_handshake_once_started_or_refused():
    """A connection keeps its turn for life: what `start` and `refuse` hold (the request and
    its headers) must not live as long."""

    class Request:
        pass

    admission = _admission(_Clock(), at_once=1, queue=0)
    kept, turns = [], []  # the connections keep their turns
    for _ in range(2):  # the first starts, the second is refused (none may wait)
        request = Request()
        kept.append(weakref.ref(request))
        turns.append(admission.arrive(lambda r=request: None, lambda r=request: None))
        del request
    assert [turn.state for turn in turns] == ["working", "refused"]
    assert [ref() for ref in kept] == [None, None]


async def test_a_handshake_past_the_limit_gets_503_with_retry_after_through_nginx(tmp_path):
    """Real Daphne (the image's command line, the patches) behind the repository's nginx.conf:
    one handshake at a time, none waiting; the second is answered 503 + Retry-After, and once
    the first client leaves the next handshake is admitted."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    from tests.harness.nginx import start_repository_nginx
    from tests.harness.processes import (
        ProcessGroup,
        base_env,
        free_port,
        require_binary,
    )

    nginx = require_binary("nginx")
    group = ProcessGroup(log_dir=tmp_path)
    try:
        daphne_port, nginx_port = free_port(), free_port()
        env = base_env(
            WS_HANDSHAKES_AT_ONCE="1",
            WS_HANDSHAKE_QUEUE="0",
            WS_HANDSHAKE_RETRY_AFTER="3",
        )
        app = "tests.harness.holding_app:application"
        await asyncio.to_thread(
            group.daphne, "daphne", daphne_port, env, as_in_image=True, app=app, wait_for="/"
        )
        await asyncio.to_thread(
            lambda: start_repository_nginx(
                group,
                nginx,
                workdir=tmp_path,
                upstream_ports=[daphne_port],
                listen_port=nginx_port,
                static_root=tmp_path,
            )
        )
        base = f"ws://127.0.0.1:{nginx_port}/ws"

        async def hold() -> None:
            await connect(f"{base}/hold/", open_timeout=120)

        held = asyncio.create_task(hold())
        await asyncio.to_thread(group.wait_for_log, "daphne", "holding", 120)
        with pytest.raises(InvalidStatus) as refused:
            await connect(f"{base}/chat/", open_timeout=120)
        response = refused.value.response
        assert response.status_code == 503
        assert 1 <= int(response.headers["Retry-After"]) <= 3

        held.cancel()  # the client leaves: its turn is over
        await asyncio.gather(held, return_exceptions=True)
        while True:  # until Daphne has seen it go (its turn ends then)
            try:
                ws = await connect(f"{base}/chat/", open_timeout=120)
                break
            except InvalidStatus as error:
                assert error.response.status_code == 503
                await asyncio.sleep(0.1)
        await ws.close()
    finally:
        group.stop_all()


def test_every_nginx_worker_accepts_on_a_listening_socket_of_its_own(tmp_path):
    """The repository's nginx.conf listens with `reuseport`: the kernel spreads new connections
    over the workers evenly. With one shared socket a busy worker took most of a 10,000-socket
    burst and ran out of worker_connections (docs/benchmarks.md, "Held ten minutes")."""
    import subprocess

    from tests.harness.nginx import start_repository_nginx
    from tests.harness.processes import ProcessGroup, free_port, require_binary

    nginx = require_binary("nginx")
    group = ProcessGroup(log_dir=tmp_path)
    try:
        nginx_port = free_port()
        master = start_repository_nginx(
            group,
            nginx,
            workdir=tmp_path,
            upstream_ports=[free_port()],
            listen_port=nginx_port,
            static_root=tmp_path,
        )
        workers = subprocess.run(
            ["pgrep", "-P", str(master.pid)], capture_output=True, text=True, check=True
        ).stdout.split()
        listening = subprocess.run(
            ["ss", "-Hltn", f"sport = :{nginx_port}"], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        assert len(workers) >= 1
        assert len(listening) == len(workers), (workers, listening)
    finally:
        group.stop_all()
