"""Rate limits in one process (the cache fallback, and real Redis with its batched round trips);
tests/integration/test_limits_ws.py runs the same limits across two Daphne replicas sharing
Redis."""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
import redis as redis_sync
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.core.exceptions import ImproperlyConfigured
from django.urls import reverse

from accounts import limits
from accounts.limits import Rate, RateLimitExceeded, frame_check, rate_parse, send_check
from accounts.tickets import ws_ticket_issue
from chat.models import Message
from project.asgi import application
from tests.harness.processes import ProcessGroup, free_port, require_binary, start_redis_server
from tests.harness.services import REDIS_HOST, REDIS_PORT, redis_database, require_service

HOST = (b"host", b"127.0.0.1:8000")


async def program_socket(user, organisation) -> WebsocketCommunicator:
    ticket = await sync_to_async(ws_ticket_issue)(
        user=user, organisation=organisation, api_key=None
    )
    ws = WebsocketCommunicator(application, f"/ws/chat/?ticket={ticket}", headers=[HOST])
    connected, _ = await ws.connect()
    assert connected
    return ws


@pytest.fixture(params=["cache", "redis"])
def limiter_store(request, settings):
    """The limiter's two stores: the Django cache (embedded mode) and the Lua script on real
    Redis (production)."""
    if request.param == "cache":
        yield
        return
    require_service("Redis", REDIS_HOST, REDIS_PORT)
    with redis_database() as index:
        settings.REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/{index}"
        yield


async def next_answer(ws: WebsocketCommunicator) -> dict:
    """The next ack or error, past the conversation's message frames."""
    while True:
        frame = await ws.receive_json_from()
        if frame["type"] in ("ack", "error"):
            return frame


async def passes(check, **ids) -> bool:
    try:
        await check(**ids)
    except RateLimitExceeded:
        return False
    return True


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("120/m", Rate(120, 60)),
        ("10/5s", Rate(10, 5)),
        ("3/h", Rate(3, 3600)),
        ("1/d", Rate(1, 86400)),
    ],
)
def test_rates_parse_like_django_ratelimit(text, rate):
    assert rate_parse(text) == rate


@pytest.mark.parametrize("text", ["", "10", "ten/m", "10/w", "10/m/s"])
def test_a_bad_rate_fails_loudly(text):
    with pytest.raises(ImproperlyConfigured):
        rate_parse(text)


@pytest.mark.django_db(transaction=True)
async def test_frames_past_the_user_limit_get_rate_limited_with_retry_after(
    owner, organisation, settings
):
    settings.WS_RATE_FRAMES_PER_USER = "3/m"
    ws = await program_socket(owner, organisation)
    for _ in range(3):
        await ws.send_json_to({"type": "ping"})
        assert await ws.receive_json_from() == {"type": "pong"}
    await ws.send_json_to({"type": "ping"})
    frame = await ws.receive_json_from()
    assert frame["type"] == "error" and frame["code"] == "rate_limited"
    assert frame["retryable"] is True and 1 <= frame["retry_after"] <= 60
    await ws.send_to(text_data="not even json")  # malformed frames count too
    assert (await ws.receive_json_from())["code"] == "rate_limited"
    await ws.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_the_organisation_limit_is_shared_by_its_members(
    owner, member, organisation, settings
):
    settings.WS_RATE_FRAMES_PER_ORG = "4/m"
    ws_owner = await program_socket(owner, organisation)
    ws_member = await program_socket(member, organisation)
    answers = []
    for ws in (ws_owner, ws_member, ws_owner, ws_member, ws_owner):
        await ws.send_json_to({"type": "ping"})
        answers.append(await ws.receive_json_from())
    assert answers[:4] == [{"type": "pong"}] * 4
    assert answers[4]["code"] == "rate_limited"
    await ws_owner.disconnect()
    await ws_member.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_sends_past_the_limit_are_refused_and_save_nothing(
    owner, organisation, settings, no_dispatch
):
    settings.WS_RATE_SENDS_PER_USER = "1/m"
    ws = await program_socket(owner, organisation)
    await ws.send_json_to({"type": "send", "conversation": None, "text": "one", "client_id": "1"})
    assert (await ws.receive_json_from())["type"] == "ack"
    await ws.send_json_to({"type": "send", "conversation": None, "text": "two", "client_id": "2"})
    frame = await ws.receive_json_from()
    assert frame["code"] == "rate_limited" and frame["retry_after"] >= 1
    assert await Message.objects.filter(role="user").acount() == 1
    await ws.send_json_to({"type": "ping"})  # other frames still pass
    assert await ws.receive_json_from() == {"type": "pong"}
    await ws.disconnect()


@pytest.mark.django_db
def test_sign_up_is_rate_limited_with_429_and_retry_after(client):
    url = reverse("accounts:signup")
    responses = [client.post(url, {"username": f"u{i}", "password1": "x"}) for i in range(11)]
    assert [r.status_code for r in responses[:10]] == [200] * 10
    assert responses[10].status_code == 429
    assert 1 <= int(responses[10]["Retry-After"]) <= 3600


@pytest.mark.parametrize("check", [frame_check, send_check], ids=["frames", "sends"])
async def test_frames_refused_by_the_user_limit_do_not_count_against_the_organisation(
    limiter_store, settings, check
):
    settings.WS_RATE_FRAMES_PER_USER = settings.WS_RATE_SENDS_PER_USER = "5/m"
    settings.WS_RATE_FRAMES_PER_ORG = settings.WS_RATE_SENDS_PER_ORG = "8/m"
    flooder, colleague = {"user_id": 1, "organisation_id": 7}, {"user_id": 2, "organisation_id": 7}
    outcomes = [await passes(check, **flooder) for _ in range(3000)]
    assert outcomes[:5] == [True] * 5 and not any(outcomes[5:])
    # The organisation was charged 5 of its 8; the colleague has the other 3.
    assert [await passes(check, **colleague) for _ in range(4)] == [True, True, True, False]


@pytest.mark.django_db(transaction=True)
async def test_one_member_flooding_pings_does_not_rate_limit_a_colleague(
    owner, member, organisation, settings
):
    settings.WS_RATE_FRAMES_PER_USER = "10/m"
    settings.WS_RATE_FRAMES_PER_ORG = "50/m"
    flooder = await program_socket(owner, organisation)
    for _ in range(3000):
        await flooder.send_json_to({"type": "ping"})
    answers = [await flooder.receive_json_from() for _ in range(3000)]
    assert answers[:10] == [{"type": "pong"}] * 10
    assert {a.get("code") for a in answers[10:]} == {"rate_limited"}
    colleague = await program_socket(member, organisation)
    await colleague.send_json_to({"type": "ping"})
    assert await colleague.receive_json_from() == {"type": "pong"}
    await flooder.disconnect()
    await colleague.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_one_member_flooding_sends_does_not_stop_a_colleagues_send(
    owner, member, organisation, settings, no_dispatch
):
    settings.WS_RATE_FRAMES_PER_USER = "1000/m"  # the send limits are what this is about
    settings.WS_RATE_SENDS_PER_USER = "2/m"
    settings.WS_RATE_SENDS_PER_ORG = "5/m"
    flooder = await program_socket(owner, organisation)
    for i in range(200):
        await flooder.send_json_to(
            {"type": "send", "conversation": None, "text": f"spam {i}", "client_id": f"f{i}"}
        )
    answers = [await next_answer(flooder) for _ in range(200)]
    acks = [a for a in answers if a["type"] == "ack"]
    refused = [a for a in answers if a.get("code") == "rate_limited"]
    assert (len(acks), len(refused)) == (2, 198)
    colleague = await program_socket(member, organisation)
    await colleague.send_json_to(
        {"type": "send", "conversation": None, "text": "real work", "client_id": "w1"}
    )
    assert (await next_answer(colleague))["type"] == "ack"
    await flooder.disconnect()
    await colleague.disconnect()


async def test_a_store_that_is_down_lets_frames_through_with_one_warning_per_interval(
    settings, monkeypatch, caplog
):
    """Redis unreachable: every frame passes (the limiter fails open), and the log gets one
    warning with its traceback per interval, counting the frames in between."""
    from accounts import limits
    from tests.harness.processes import free_port

    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    now = [1000.0]
    monkeypatch.setattr(limits, "clock", lambda: now[0])
    monkeypatch.setattr(limits, "_unavailable", {"warned": -math.inf, "since": 0})
    caplog.set_level(logging.WARNING, logger="accounts.limits")

    for _ in range(20):
        assert await passes(frame_check, user_id=1, organisation_id=None)
    now[0] += limits.UNAVAILABLE_WARN_EVERY
    assert await passes(frame_check, user_id=1, organisation_id=None)

    warnings = [r for r in caplog.records if r.name == "accounts.limits"]
    assert [r.getMessage() for r in warnings] == [
        "rate limiter unavailable; letting frames through (0 more since the last warning)",
        "rate limiter unavailable; letting frames through (19 more since the last warning)",
    ]
    assert all(r.exc_info for r in warnings)


# --- many frames at once on one event loop: one script call per round trip (group commit) ----

REDIS_ONLY = pytest.mark.parametrize("limiter_store", ["redis"], indirect=True)


@pytest.fixture
def round_trips(monkeypatch) -> SimpleNamespace:
    """Every script call the limiter makes, by its number of frames (the real call is made);
    `started` is set once the first one is under way."""
    seen = SimpleNamespace(frames=[], started=asyncio.Event())
    real = limits._round_trip

    async def counted(script, frames):
        seen.frames.append(len(frames))
        seen.started.set()
        return await real(script, frames)

    monkeypatch.setattr(limits, "_round_trip", counted)
    return seen


@pytest.fixture
def quiet_limiter(monkeypatch) -> None:
    monkeypatch.setattr(limits, "_unavailable", {"warned": -math.inf, "since": 0})


def counters(settings, *keys: str) -> list[int]:
    client = redis_sync.Redis.from_url(settings.REDIS_URL)
    try:
        values = cast("list[bytes | None]", client.mget(keys))
        return [int(value or 0) for value in values]
    finally:
        client.close()


@REDIS_ONLY
async def test_concurrent_frames_are_each_counted_once_in_arrival_order_in_few_round_trips(
    limiter_store, settings, round_trips
):
    settings.WS_RATE_FRAMES_PER_USER = "300/m"
    outcomes = await asyncio.gather(
        *(passes(frame_check, user_id=1, organisation_id=None) for _ in range(500))
    )
    assert outcomes == [True] * 300 + [False] * 200
    assert counters(settings, "parley:rl:frames:user:1") == [500]
    assert sum(round_trips.frames) == 500
    assert len(round_trips.frames) <= 5  # 500 frames in a handful of script calls, not 500


@REDIS_ONLY
async def test_a_frame_reads_the_keys_it_asks_for_in_its_own_script_call(
    limiter_store, settings, round_trips
):
    """A send reads what it needs from the cache in its rate limits' round trip
    (chat/services/prefetch.py): the values come back from the same script call, missing
    keys as None, and the frame is counted as before."""
    client = redis_sync.Redis.from_url(settings.REDIS_URL)
    try:
        client.set("parley:1:some:value", b"42")
    finally:
        client.close()

    reads = await frame_check(
        user_id=1, organisation_id=7, send=True, read=["parley:1:some:value", "parley:1:none"]
    )

    assert reads == [b"42", None]
    assert round_trips.frames == [1]
    assert counters(settings, "parley:rl:frames:user:1", "parley:rl:sends:org:7") == [1, 1]


@REDIS_ONLY
async def test_frames_that_read_and_frames_that_do_not_share_one_script_call(
    limiter_store, settings, round_trips
):
    settings.WS_RATE_SENDS_PER_USER = "1/m"
    outcomes = await asyncio.gather(
        frame_check(user_id=1, organisation_id=None, read=["parley:1:a"]),
        frame_check(user_id=2, organisation_id=None),
        frame_check(user_id=3, organisation_id=None, send=True, read=["parley:1:b", "x"]),
        passes(frame_check, user_id=3, organisation_id=None, send=True),
    )
    assert outcomes == [[None], [], [None, None], False]
    assert sum(round_trips.frames) == 4 and len(round_trips.frames) <= 2


@pytest.mark.parametrize("limiter_store", ["cache"], indirect=True)
async def test_without_redis_nothing_is_read(limiter_store, settings):
    assert await frame_check(user_id=1, organisation_id=None, read=["parley:1:a"]) is None


@pytest.mark.parametrize("limiter_store", ["cache", "redis"], indirect=True)
async def test_a_batch_of_several_users_frames_keeps_their_counters_apart(
    limiter_store, settings, round_trips
):
    settings.WS_RATE_FRAMES_PER_USER = "5/m"
    settings.WS_RATE_FRAMES_PER_ORG = "100/m"
    settings.WS_RATE_SENDS_PER_USER = "2/m"
    users = [1, 2, 3] * 10  # interleaved, as sockets' frames arrive
    outcomes = await asyncio.gather(
        *(passes(frame_check, user_id=u, organisation_id=7, send=(u == 3)) for u in users)
    )
    by_user = {u: [o for v, o in zip(users, outcomes, strict=True) if v == u] for u in (1, 2, 3)}
    assert by_user[1] == by_user[2] == [True] * 5 + [False] * 5
    assert by_user[3] == [True] * 2 + [False] * 8  # its sends ran out first
    if settings.REDIS_URL:
        # Refused frames are charged to the user's counter only; user 3's frames 3-5 passed
        # the frame counters and were charged to its sends (and refused there).
        assert counters(
            settings,
            "parley:rl:frames:user:1",
            "parley:rl:frames:user:3",
            "parley:rl:frames:org:7",
            "parley:rl:sends:user:3",
            "parley:rl:sends:org:7",
        ) == [10, 10, 15, 5, 2]
        assert sum(round_trips.frames) == 30 and len(round_trips.frames) <= 3


@REDIS_ONLY
async def test_a_caller_cancelled_while_its_batch_is_in_flight_does_not_affect_the_others(
    limiter_store, settings, round_trips
):
    settings.WS_RATE_FRAMES_PER_USER = "50/m"
    tasks = [
        asyncio.create_task(passes(frame_check, user_id=1, organisation_id=None))
        for _ in range(100)
    ]
    await asyncio.wait_for(round_trips.started.wait(), 30)
    for index in (0, 10, 99):  # their sockets closed while the batch was in flight
        tasks[index].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(results[i], asyncio.CancelledError) for i in (0, 10, 99))
    others = [r for i, r in enumerate(results) if i not in (0, 10, 99)]
    # The cancelled frames did arrive, so they were counted: 48 of the others pass.
    assert others == [True] * 48 + [False] * 49
    assert counters(settings, "parley:rl:frames:user:1") == [100]
    assert not await passes(frame_check, user_id=1, organisation_id=None)  # the limiter goes on
    assert counters(settings, "parley:rl:frames:user:1") == [101]


@pytest.fixture
def private_redis() -> Iterator[SimpleNamespace]:
    """A redis-server of this test's own, which it may kill (never the machine's shared one)."""
    binary = require_binary("redis-server")
    with tempfile.TemporaryDirectory(prefix="parley-limits-") as workdir:
        group = ProcessGroup(log_dir=Path(workdir))
        port = free_port()

        def start() -> None:
            start_redis_server(group, "redis", binary, port, Path(workdir))

        def restart() -> None:
            group.kill("redis")
            start()

        try:
            start()
            yield SimpleNamespace(url=f"redis://127.0.0.1:{port}/0", group=group, restart=restart)
        finally:
            group.stop_all()


async def test_redis_lost_mid_batch_lets_every_frame_through_with_one_warning(
    private_redis, settings, round_trips, quiet_limiter, caplog
):
    settings.REDIS_URL = private_redis.url
    settings.WS_RATE_FRAMES_PER_USER = "1/m"  # counted, all but one would be refused
    caplog.set_level(logging.WARNING, logger="accounts.limits")
    first = [passes(frame_check, user_id=1, organisation_id=None) for _ in range(200)]
    tasks = [asyncio.create_task(check) for check in first]
    await asyncio.wait_for(round_trips.started.wait(), 30)
    # Frames arriving while that batch is in flight, then Redis dies under both.
    tasks += [
        asyncio.create_task(passes(frame_check, user_id=1, organisation_id=None)) for _ in range(50)
    ]
    private_redis.group.kill("redis")
    assert await asyncio.gather(*tasks) == [True] * 250
    warnings = [r for r in caplog.records if r.name == "accounts.limits"]
    assert [r.getMessage() for r in warnings] == [
        "rate limiter unavailable; letting frames through (0 more since the last warning)"
    ]
    assert warnings[0].exc_info
    assert limits._unavailable["since"] == 249


async def test_after_redis_restarts_frames_are_counted_again_without_a_warning(
    private_redis, settings, quiet_limiter, caplog
):
    """The held connection is closed by the restart and the new Redis knows no script: the
    next frame is counted all the same, on a new connection, not let through unchecked."""
    settings.REDIS_URL = private_redis.url
    settings.WS_RATE_FRAMES_PER_USER = "1/m"
    caplog.set_level(logging.WARNING, logger="accounts.limits")
    assert await passes(frame_check, user_id=1, organisation_id=None)
    assert not await passes(frame_check, user_id=1, organisation_id=None)
    private_redis.restart()
    assert await passes(frame_check, user_id=1, organisation_id=None)  # a new window
    assert not await passes(frame_check, user_id=1, organisation_id=None)
    assert counters(settings, "parley:rl:frames:user:1") == [2]
    assert [r for r in caplog.records if r.name == "accounts.limits"] == []


# --- one client per event loop, for that loop's life ------------------------------------------


def limiter_connections(url: str) -> int:
    """The limiter's connections Redis has open (CLIENT LIST, by the name it gives them)."""
    admin = redis_sync.Redis.from_url(url)
    try:
        clients = cast("list[dict[str, str]]", admin.client_list())
        return sum(c["name"] == limits.CLIENT_NAME for c in clients)
    finally:
        admin.close()


def until_at_most(count: int, url: str, timeout: float = 30) -> int:
    """Wait for Redis to see the limiter's connections down to `count` (a closed connection
    leaves its list once Redis reads the close); the count at the end."""
    deadline = time.monotonic() + timeout
    while (open_now := limiter_connections(url)) > count and time.monotonic() < deadline:
        time.sleep(0.05)
    return open_now


def test_fresh_event_loops_do_not_leave_connections_open(private_redis, settings):
    """Code run through async_to_sync outside Daphne (a management command, a Celery task) gets
    a new event loop each call: each loop's client goes when its loop shuts down, so 30 calls
    leave no connection behind, and every frame was counted."""
    settings.REDIS_URL = private_redis.url

    async def command() -> int:
        await frame_check(user_id=1, organisation_id=None)
        return limiter_connections(private_redis.url)  # this loop's, while it runs

    while_running = [async_to_sync(command)() for _ in range(30)]
    assert min(while_running) >= 1
    assert counters(settings, "parley:rl:frames:user:1") == [30]
    assert until_at_most(0, private_redis.url) == 0


@pytest.mark.parametrize("end", ["closed", "dropped"])
def test_a_loop_closed_or_dropped_without_shutting_down_takes_its_connection(
    private_redis, settings, end
):
    """A loop run by hand and closed (or dropped) without shutdown_asyncgens: its client lives
    on the loop alone, so collecting the loop closes the connection."""
    settings.REDIS_URL = private_redis.url
    for _ in range(10):
        loop = asyncio.new_event_loop()
        loop.run_until_complete(frame_check(user_id=1, organisation_id=None))
        if end == "closed":
            loop.close()
        with warnings.catch_warnings():  # "unclosed transport", "unclosed event loop"
            warnings.simplefilter("ignore", ResourceWarning)
            del loop
            gc.collect()
    assert counters(settings, "parley:rl:frames:user:1") == [10]
    assert until_at_most(0, private_redis.url) == 0


async def test_a_running_loop_keeps_one_connection_for_all_its_frames(private_redis, settings):
    settings.REDIS_URL = private_redis.url
    for _ in range(5):
        await asyncio.gather(*(frame_check(user_id=1, organisation_id=None) for _ in range(20)))
    assert limiter_connections(private_redis.url) == 1
    assert counters(settings, "parley:rl:frames:user:1") == [100]
