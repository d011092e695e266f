"""docs/protocol.md's promises, checked as an acceptance tester would: on the production
topology (nginx → two Daphne replicas → Redis ← a Celery worker, PostgreSQL) with a real
OpenAI-compatible upstream (tests/fault_server.py, in this process) answering, failing with
429 and 500, and breaking off mid-reply.

Programs connect as the document says they may: an `Authorization: Bearer pk_…` header and no
`Origin`, or a one-time ticket from `POST /api/v1/ws-ticket`. The upstream serves the alias
`openai-compatible` (environment variables) for answers, and admin-made aliases with routes of
their own for the faults, so a 429's pause of one deployment never reaches another test.
`topology_with_upstream` is shared with test_api_promises.py.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from tests.fault_server import Cut, Disconnect, Fail, FaultServer, Reply, fault_server
from tests.harness.processes import manage
from tests.harness.sockets import barrier, hear_reply, recv_frame
from tests.harness.topology import START_TIMEOUT, Topology, production_topology

pytestmark = pytest.mark.integration

# Aliases an operator adds in the admin, each served by its own route of the upstream (and so
# its own deployment: a 429 pauses only its own).
FAULT_ALIASES = (
    "failing",
    "limited",
    "limited-openai",
    "broken",
    "cut",
    "dropped",
    "endless",
    "silent",
    "paused",
    "rejecting",
    "slow",
)
ANSWERS = "openai-compatible"  # the alias the environment's OPENAI_COMPATIBLE_* serve

MAKE_KEYS = """
from accounts.services import account_create, api_key_create
from llm.models import Deployment, Provider
for name in {aliases!r}:
    provider = Provider.objects.create(
        name=f"upstream-{{name}}", kind="openai-compatible", base_url={base!r} + name + "/v1",
        first_token_timeout=60, inter_token_timeout=60,
    )
    Deployment.objects.create(provider=provider, alias=name, model="fault-model")
for username in ("promise-owner", "promise-outsider"):
    user = account_create(username=username, password="correct horse battery staple")
    print(api_key_create(user=user, organisation=user.personal_organisation, name="acceptance").raw)
"""


@dataclass
class Site:
    topo: Topology
    upstream: FaultServer
    key: str  # the owner's API key
    outsider_key: str  # another person's, in their own organisation

    def http(self, key: str | None = None) -> httpx.Client:
        """Through nginx, with an API key."""
        return httpx.Client(
            base_url=self.topo.base,
            headers={"Authorization": f"Bearer {key or self.key}"},
            timeout=60,
        )

    async def socket(self, key: str | None = None) -> ClientConnection:
        """A program's socket: the key in a header, no Origin."""
        return await connect(
            self.topo.ws_url,
            additional_headers={"Authorization": f"Bearer {key or self.key}"},
            open_timeout=15,
            close_timeout=2,
        )


@contextmanager
def topology_with_upstream(
    name: str, extra_env: Mapping[str, str] = {}, user: tuple[str, str] | None = None
) -> Iterator[Site]:
    """The site; `extra_env` goes on top of its environment (e.g. CORS_ALLOWED_ORIGINS);
    `user` (username, password) is made and signed in, as production_topology does."""
    unlimited = "1000000/m"
    with fault_server() as upstream:
        env = {
            "OPENAI_COMPATIBLE_BASE_URL": upstream.base_url("up"),
            "OPENAI_COMPATIBLE_MODEL": "fault-model",
            # One retry, no breaker: a scripted failure is the reply's whole story.
            "LLM_RETRY_MAX_ATTEMPTS": "2",
            "LLM_RETRY_BASE_DELAY": "0.01",
            "LLM_BREAKER_FAILURES": "100000",
            "LLM_BREAKER_MIN_REQUESTS": "100000",
            "CACHE_ENABLED": "false",
            "API_STREAM_POLL_INTERVAL": "0.5",  # keep-alives without a long wait
            "WS_RATE_FRAMES_PER_USER": unlimited,
            "WS_RATE_FRAMES_PER_ORG": unlimited,
            "WS_RATE_SENDS_PER_USER": unlimited,
            "WS_RATE_SENDS_PER_ORG": unlimited,
            **extra_env,
        }
        with production_topology(
            replicas=2, provider="simulated", env=env, name=name, user=user
        ) as topo:
            base = upstream.base_url("x").removesuffix("x/v1")
            code = MAKE_KEYS.format(aliases=FAULT_ALIASES, base=base)
            printed = manage("shell", "-c", code, env=topo.env, timeout=START_TIMEOUT)
            owner, outsider = printed.strip().splitlines()[-2:]
            yield Site(topo, upstream, owner, outsider)


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    with topology_with_upstream("protocol-promises") as running:
        yield running


def send_frame(text: str, model: str = ANSWERS, **extra: Any) -> dict[str, Any]:
    client_id = uuid.uuid4().hex
    return {
        "type": "send",
        "conversation": None,
        "text": text,
        "client_id": client_id,
        "model": model,
        **extra,
    }


async def frame_error(ws: ClientConnection, frame: dict[str, Any]) -> dict[str, Any]:
    """Send `frame`; the `error` it is answered with."""
    await ws.send(json.dumps(frame))
    answer = await recv_frame(ws, 30)
    assert answer["type"] == "error", answer
    return answer


MESSAGE_FIELDS = {
    "type",
    "conversation",
    "message",
    "role",
    "content",
    "status",
    "seq",
    "reply_to",
    "client_id",
}
DONE_FIELDS = {
    "type",
    "message",
    "seq",
    "status",
    "finish_reason",
    "usage",
    "cost",
    "provider",
    "model",
    "timings",
    "cached",
    "citations",
}


# --- a reply, as the example shows it ----------------------------------------------------------


async def test_the_example_streams_the_upstreams_text_and_done_has_every_field(site: Site) -> None:
    text = "Hello! How can I help you today?"
    site.upstream.script("up", Reply(text=text, chunk_chars=5, chunk_delay=0.02))
    frame = send_frame("Hello")
    ws = await site.socket()
    try:
        await ws.send(json.dumps(frame))
        heard = await hear_reply(ws, timeout=60)
    finally:
        await ws.close()
    ack = heard.frames[0]
    assert set(ack) == {"type", "client_id", "conversation", "message", "reply", "created"}, ack
    assert ack["client_id"] == frame["client_id"] and ack["created"] is True
    heard.check_contiguous()
    assert heard.text == text
    done = heard.final
    assert done is not None and set(done) == DONE_FIELDS, done
    assert (done["status"], done["finish_reason"], done["seq"]) == ("complete", "stop", len(text))
    assert set(done["usage"]) == {"prompt_tokens", "completion_tokens", "estimated"}
    assert done["usage"]["completion_tokens"] > 0
    assert set(done["timings"]) == {"first_token_ms", "total_ms"}
    assert done["model"] == "fault-model" and done["provider"]
    assert done["cached"] is False and done["citations"] == []
    assert done["cost"] is None or isinstance(done["cost"], str)


async def test_a_repeated_client_id_answers_with_the_first_result(site: Site) -> None:
    frame = send_frame("Only once, please")
    ws = await site.socket()
    try:
        await ws.send(json.dumps(frame))
        first = await hear_reply(ws, timeout=60)
        asked = site.upstream.count("up")
        await ws.send(json.dumps(frame))
        again = await hear_reply(ws, timeout=60)
    finally:
        await ws.close()
    ack, repeat = first.frames[0], again.frames[0]
    assert repeat["created"] is False
    assert (repeat["message"], repeat["reply"]) == (ack["message"], ack["reply"])
    assert site.upstream.count("up") == asked, "a repeat must not generate again"
    assert again.final is not None and again.final["seq"] == first.final["seq"]  # type: ignore[index]


async def test_max_tokens_reaches_the_upstream_and_a_cut_reply_ends_incomplete(site: Site) -> None:
    site.upstream.script("up", Reply(text="one two three four five", chunk_chars=4))
    ws = await site.socket()
    try:
        await ws.send(json.dumps(send_frame("Count", max_tokens=2)))
        heard = await hear_reply(ws, timeout=60)
    finally:
        await ws.close()
    assert site.upstream.requests("up")[-1].body["max_tokens"] == 2
    heard.check_contiguous()
    assert heard.final is not None
    assert (heard.final["status"], heard.final["finish_reason"]) == ("incomplete", "length")


# --- the upstream fails -------------------------------------------------------------------------


async def failed_reply(site: Site, alias: str) -> tuple[int, dict[str, Any], str]:
    """Send to `alias`; the reply's id, its final frame and the text the socket held."""
    ws = await site.socket()
    try:
        await ws.send(json.dumps(send_frame(f"to {alias}", model=alias)))
        heard = await hear_reply(ws, timeout=90)
        await barrier(ws)  # the socket is still open and answering
    finally:
        await ws.close()
    assert heard.reply is not None and heard.final is not None
    return heard.reply, heard.final, heard.text


async def test_an_upstream_500_ends_the_reply_with_provider_failed(site: Site) -> None:
    site.upstream.default("failing", Fail(500))
    reply, final, text = await failed_reply(site, "failing")
    assert final["type"] == "error", final
    assert (final["code"], final["retryable"], final["message"]) == ("provider_failed", True, reply)
    assert final["seq"] == 0 and text == "" and final["detail"]
    assert site.upstream.count("failing") == 2  # Parley's own retry came first


async def test_an_upstream_429_ends_the_reply_with_provider_rate_limited(site: Site) -> None:
    site.upstream.default("limited", Fail(429, retry_after=1))
    reply, final, _ = await failed_reply(site, "limited")
    assert final["type"] == "error", final
    assert (final["code"], final["retryable"]) == ("provider_rate_limited", True), final
    assert final["message"] == reply


@pytest.mark.parametrize(
    ("alias", "behaviour"),
    [
        ("cut", Cut(text="Partial answer that then ", after_chunks=2, chunk_chars=8)),
        ("dropped", Disconnect(text="Partial answer that then ", after_chunks=2, chunk_chars=8)),
    ],
)
async def test_an_upstream_breaking_off_after_text_ends_interrupted_keeping_the_text(
    site: Site, alias: str, behaviour: Cut | Disconnect
) -> None:
    site.upstream.default(alias, behaviour)
    reply, final, text = await failed_reply(site, alias)
    assert final["type"] == "error", final
    assert (final["code"], final["retryable"]) == ("interrupted", True), final
    assert text == "Partial answer t" and final["seq"] == len(text)
    row = site.topo.row(reply)
    assert (row["status"], row["content"]) == ("failed", text)
    assert site.upstream.count(alias) == 1, "nothing from a second attempt is spliced on"


# --- resume ------------------------------------------------------------------------------------


async def test_resume_of_a_final_reply_sends_the_missing_text_then_done(site: Site) -> None:
    text = "A reply to pick up later."
    site.upstream.script("up", Reply(text=text))
    ws = await site.socket()
    try:
        await ws.send(json.dumps(send_frame("Resume me")))
        first = await hear_reply(ws, timeout=60)
    finally:
        await ws.close()
    ws = await site.socket()  # a new socket, on either replica
    try:
        await ws.send(json.dumps({"type": "resume", "message": first.reply, "after_seq": 5}))
        resumed = await hear_reply(ws, first.reply, timeout=30)
    finally:
        await ws.close()
    resumed.check_contiguous(after_seq=5)
    assert len(resumed.deltas) == 1 and resumed.text == text[5:]
    assert resumed.final is not None and resumed.final["status"] == "complete"


async def test_seq_counts_code_points_on_every_path(site: Site) -> None:
    """Beyond the BMP too (one code point, two UTF-16 units, four UTF-8 bytes): the live deltas,
    the saved text a resume reads, the SSE stream and the REST read agree on positions."""
    text = "Clef 𝄞, smile 😀, café: ok 👍🏽."
    site.upstream.script("up", Reply(text=text, chunk_chars=3))
    ws = await site.socket()
    try:
        await ws.send(json.dumps(send_frame("Astral")))
        live = await hear_reply(ws, timeout=60)
    finally:
        await ws.close()
    live.check_contiguous()
    assert live.text == text and live.final is not None and live.final["seq"] == len(text)
    after = text.index("😀")
    ws = await site.socket()
    try:
        await ws.send(json.dumps({"type": "resume", "message": live.reply, "after_seq": after}))
        resumed = await hear_reply(ws, live.reply, timeout=30)
    finally:
        await ws.close()
    resumed.check_contiguous(after_seq=after)
    assert resumed.text == text[after:]
    with site.http() as http:
        stream = http.get(f"/api/v1/messages/{live.reply}/stream", params={"after_seq": after})
        events = [e for e in stream.text.split("\n\n") if e.startswith("id: ")]
        first = json.loads(events[0].split("data: ", 1)[1])
        assert (first["start"], first["text"]) == (after, text[after:]), first
        read = http.get(f"/api/v1/messages/{live.reply}").json()
        assert (read["content"], read["seq"]) == (text, len(text))


@pytest.mark.parametrize("after_seq", [None, -1, "3"])
async def test_resume_without_a_valid_after_seq_is_a_bad_frame_and_the_socket_stays_open(
    site: Site, after_seq: Any
) -> None:
    frame: dict[str, Any] = {"type": "resume", "message": 1}
    if after_seq is not None:
        frame["after_seq"] = after_seq
    ws = await site.socket()
    try:
        error = await frame_error(ws, frame)
        await barrier(ws)
    finally:
        await ws.close()
    assert (error["code"], error["retryable"], error["message"]) == ("bad_frame", False, None)


# --- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "target"),
    [("resume", "message"), ("cancel", "message"), ("regenerate", "message"), ("edit", "reply")],
)
async def test_a_frame_naming_a_message_its_action_does_not_apply_to_is_a_bad_frame(
    site: Site, action: str, target: str
) -> None:
    """Only a reply is resumed, cancelled or regenerated, only a user message edited (REST's
    409 `conflict`); the socket answers `bad_frame`, sends nothing about that message and
    stays open."""
    ws = await site.socket()
    try:
        await ws.send(json.dumps(send_frame("A user message and its reply")))
        heard = await hear_reply(ws, timeout=60)
        ack = heard.frames[0]
        frame: dict[str, Any] = {"type": action, "message": ack[target]}
        if action == "resume":
            frame["after_seq"] = 0
        if action == "edit":
            frame.update(text="An edit", client_id=uuid.uuid4().hex)
        error = await frame_error(ws, frame)
        await ws.send(json.dumps({"type": "ping"}))
        after = await recv_frame(ws, 30)
    finally:
        await ws.close()
    assert (error["code"], error["retryable"], error["message"]) == ("bad_frame", False, None)
    assert after == {"type": "pong"}, "nothing more about that message"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"type": "ping"}', id="binary"),
        pytest.param('{"type": "ping", "x": ' + "[" * 32 + "]" * 32 + "}", id="33-levels"),
        pytest.param('{"type": "ping", "x": "a\\u0000b"}', id="nul"),
        pytest.param('{"type": "ping", "x": "\\ud800"}', id="lone-surrogate"),
        pytest.param("not json", id="not-json"),
        pytest.param("[]", id="not-an-object"),
    ],
)
async def test_a_frame_past_the_documented_limits_is_a_bad_frame_and_the_socket_stays_open(
    site: Site, raw: str | bytes
) -> None:
    """docs/protocol.md "Limits", through nginx and Daphne's own frame path (binary frames
    take a different one from text, project/patches.py)."""
    ws = await site.socket()
    try:
        await ws.send(raw)
        error = await recv_frame(ws, 30)
        await ws.send(json.dumps({"type": "ping"}))
        pong = await recv_frame(ws, 30)
    finally:
        await ws.close()
    assert error["type"] == "error", error
    assert (error["code"], error["retryable"], error["message"]) == ("bad_frame", False, None)
    assert pong == {"type": "pong"}


async def test_a_frame_32_levels_deep_is_within_the_limit(site: Site) -> None:
    ws = await site.socket()
    try:
        await ws.send('{"type": "ping", "x": ' + "[" * 31 + "]" * 31 + "}")
        answer = await recv_frame(ws, 30)
    finally:
        await ws.close()
    assert answer == {"type": "pong"}


async def test_an_unknown_model_is_a_bad_frame_and_nothing_is_saved(site: Site) -> None:
    frame = send_frame("Which model?", model="no-such-model")
    ws = await site.socket()
    try:
        error = await frame_error(ws, frame)
        await barrier(ws)
    finally:
        await ws.close()
    assert error["code"] == "bad_frame", error
    saved = site.topo.query(
        "SELECT count(*) FROM chat_message WHERE client_id = %s", frame["client_id"]
    )
    assert saved == [(0,)]


async def test_another_persons_reply_and_conversation_are_not_found(site: Site) -> None:
    ws = await site.socket()
    try:
        await ws.send(json.dumps(send_frame("Mine")))
        mine = await hear_reply(ws, timeout=60)
    finally:
        await ws.close()
    ws = await site.socket(site.outsider_key)
    try:
        for frame in (
            {"type": "resume", "message": mine.reply, "after_seq": 0},
            {"type": "cancel", "message": mine.reply},
            {"type": "subscribe", "conversation": mine.conversation},
            {"type": "regenerate", "message": mine.reply},
        ):
            error = await frame_error(ws, frame)
            assert (error["code"], error["retryable"]) == ("not_found", False), (frame, error)
    finally:
        await ws.close()


async def test_a_ticket_opens_one_socket_once_without_any_other_credential(site: Site) -> None:
    with site.http() as http:
        issued = http.post("/api/v1/ws-ticket")
    assert issued.status_code == 201, issued.text
    url = site.topo.base.replace("http://", "ws://", 1) + issued.json()["url"]
    ws = await connect(url, open_timeout=15, close_timeout=2)
    try:
        await barrier(ws)
    finally:
        await ws.close()
    with pytest.raises(InvalidStatus) as refused:
        await connect(url, open_timeout=15, close_timeout=2)
    assert refused.value.response.status_code == 403


async def test_a_socket_without_credentials_is_refused_with_403(site: Site) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await connect(site.topo.ws_url, open_timeout=15, close_timeout=2)
    assert refused.value.response.status_code == 403


# --- versions: regenerate and edit -----------------------------------------------------------


async def frames_until_final(ws: ClientConnection, reply: int) -> list[dict[str, Any]]:
    frames = []
    while True:
        frame = await recv_frame(ws, 60)
        frames.append(frame)
        if frame["type"] in ("done", "error") and frame.get("message") == reply:
            return frames


async def test_regenerate_keeps_the_old_reply_as_a_version_and_a_repeat_names_its_successor(
    site: Site,
) -> None:
    ws = await site.socket()
    try:
        await ws.send(json.dumps(send_frame("Answer twice")))
        first = await hear_reply(ws, timeout=60)
        user_message = first.frames[0]["message"]
        await ws.send(json.dumps({"type": "regenerate", "message": first.reply}))
        ack = await recv_frame(ws, 30)
        assert ack["type"] == "ack", ack
        assert ack["client_id"] is None and ack["created"] is True
        assert ack["message"] == user_message and ack["reply"] != first.reply
        frames = await frames_until_final(ws, ack["reply"])
        await ws.send(json.dumps({"type": "regenerate", "message": first.reply}))
        repeat = await recv_frame(ws, 30)
    finally:
        await ws.close()
    superseded = [f for f in frames if f["type"] == "superseded"]
    assert superseded and superseded[0]["messages"] == [first.reply], frames
    assert frames[-1]["type"] == "done" and frames[-1]["status"] == "complete"
    (added,) = [f for f in frames if f["type"] == "message" and f["message"] == ack["reply"]]
    assert set(added) == MESSAGE_FIELDS, added
    assert (added["role"], added["reply_to"]) == ("assistant", user_message), added
    assert repeat["type"] == "ack" and repeat["reply"] == ack["reply"], repeat
    assert repeat["created"] is False
    with site.http() as http:
        old = http.get(f"/api/v1/messages/{first.reply}")  # an earlier version, still readable
    assert old.status_code == 200 and old.json()["content"] == first.text


async def test_edit_supersedes_the_message_and_what_follows_and_is_idempotent(
    site: Site,
) -> None:
    ws = await site.socket()
    try:
        await ws.send(json.dumps(send_frame("Frist draft")))
        first = await hear_reply(ws, timeout=60)
        user_message = first.frames[0]["message"]
        edit = {"type": "edit", "message": user_message, "text": "First draft", "client_id": "e1"}
        await ws.send(json.dumps(edit))
        ack = await recv_frame(ws, 30)
        assert ack["type"] == "ack" and ack["created"] is True, ack
        assert ack["client_id"] == "e1" and ack["message"] != user_message
        frames = await frames_until_final(ws, ack["reply"])
        await ws.send(json.dumps(edit))
        repeat = await recv_frame(ws, 30)
    finally:
        await ws.close()
    superseded = [f for f in frames if f["type"] == "superseded"]
    assert superseded and set(superseded[0]["messages"]) == {user_message, first.reply}, frames
    assert frames[-1]["type"] == "done", frames[-1]
    assert repeat["type"] == "ack" and repeat["created"] is False, repeat
    assert (repeat["message"], repeat["reply"]) == (ack["message"], ack["reply"])


@pytest.mark.parametrize(
    "option",
    [
        {"temperature": 2.5},
        {"max_tokens": 0},
        {"max_tokens": 10**6},
        {"client_id": "x" * 65},
        {"text": ""},
    ],
)
async def test_a_send_outside_the_documented_bounds_is_a_bad_frame(
    site: Site, option: dict[str, Any]
) -> None:
    ws = await site.socket()
    try:
        error = await frame_error(ws, {**send_frame("Bounded"), **option})
        await barrier(ws)
    finally:
        await ws.close()
    assert (error["code"], error["message"]) == ("bad_frame", None), error


async def test_the_same_client_id_in_another_organisation_is_a_new_message(site: Site) -> None:
    frame = send_frame("Same id, two organisations")
    acks = []
    for key in (site.key, site.outsider_key):
        ws = await site.socket(key)
        try:
            await ws.send(json.dumps(frame))
            heard = await hear_reply(ws, timeout=60)
        finally:
            await ws.close()
        acks.append(heard.frames[0])
    assert acks[0]["created"] is True and acks[1]["created"] is True
    assert acks[0]["reply"] != acks[1]["reply"]


async def test_a_programs_socket_from_a_foreign_origin_is_refused(site: Site) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await connect(
            site.topo.ws_url,
            origin=Origin("https://evil.example"),
            additional_headers={"Authorization": f"Bearer {site.key}"},
            open_timeout=15,
        )
    assert refused.value.response.status_code == 403
