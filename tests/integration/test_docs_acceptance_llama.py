"""docs/api.md's OpenAI-compatible endpoint and docs/protocol.md's socket, as an acceptance
tester plays them: the official `openai` SDK (and plain HTTP for the raw stream) through nginx
on the production topology (two Daphne replicas, Redis, a Celery worker, PostgreSQL), with a
real upstream — llama.cpp's OpenAI-compatible server (llama-cpp-python's, tests/llama_server.py)
and the bundled SmolLM2 model — serving the alias `llama`.

test_openai_sdk.py runs the SDK against one embedded Daphne and the fault server;
test_api_promises.py the topology with the fault server; test_docs_faults.py kills llama.cpp's
server mid-reply. Here the upstream is the real one answering: streamed and not, usage,
`max_tokens`, `stop`, and a prompt past its context (an upstream failure), in OpenAI's
error shape.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.harness.sockets import hear_reply, recv_frame
from tests.integration.test_protocol_promises import Site, send_frame, topology_with_upstream
from tests.llama_server import LlamaServer, start_llama_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

ALIAS = "llama"
# The same server under a deployment whose context window is entered (docs/routing.md): 768
# tokens, below the server's 2,048 (an operator may choose less), so that reading a fitted
# prompt stays quick on a busy machine.
WINDOWED = "llama-768"
LONG_TEXT = " ".join(f"w{n}x" for n in range(1500))  # ~9,000 characters, ~7,900 tokens


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    with topology_with_upstream("acceptance-llama") as running:
        with running.topo.logs_on_failure():
            yield running


@pytest.fixture(scope="module")
def llama(site: Site) -> Iterator[LlamaServer]:
    with tempfile.TemporaryDirectory() as logs:
        server = start_llama_server(Path(logs))
        try:
            with site.topo.alias_served_by(ALIAS, server.base_url, windowed={WINDOWED: 768}):
                yield server
        finally:
            server.stop()


@pytest.fixture
def sdk(site: Site, llama: LlamaServer) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{site.topo.base}/v1", api_key=site.key, max_retries=0, timeout=180
    )


def question(text: str) -> list[ChatCompletionMessageParam]:
    # A tag of its own keeps two tests from sharing a prompt (and llama.cpp's prompt cache).
    return [{"role": "user", "content": f"{text} ({uuid.uuid4().hex[:6]})"}]


def stream_events(body: str) -> list[dict[str, Any] | str]:
    """The `data:` payloads of a finished `/v1` stream, `[DONE]` as the string."""
    events: list[dict[str, Any] | str] = []
    for block in body.split("\n\n"):
        if block.startswith("data: "):
            data = block.removeprefix("data: ")
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def test_the_sdk_gets_a_completion_from_llama_cpp_with_its_usage(
    site: Site, sdk: openai.OpenAI, llama: LlamaServer
) -> None:
    """api.md, non-streaming: "a `chat.completion` with `choices[0].message`, `finish_reason`
    … and `usage`" (estimated where the provider reports none), and every 200 carries
    `X-Parley-Conversation` and `X-Parley-Message`."""
    raw = sdk.chat.completions.with_raw_response.create(
        model=ALIAS, messages=question("Name three colours."), max_tokens=40, temperature=0
    )
    completion = raw.parse()
    reply = int(raw.headers["x-parley-message"])
    assert int(raw.headers["x-parley-conversation"]) > 0
    assert completion.object == "chat.completion" and completion.model == ALIAS
    (choice,) = completion.choices
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    usage = completion.usage
    assert usage is not None
    # llama.cpp's server reports no usage when streaming, and Parley streams from it: the
    # completion is estimated at ~4 characters a token, the prompt unknown (0).
    content = choice.message.content
    estimate = min(round(len(content) / 4), 40)  # never above the request's max_tokens
    assert (usage.prompt_tokens, usage.completion_tokens) == (0, estimate), usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    row = site.topo.row(reply)
    status = "incomplete" if choice.finish_reason == "length" else "complete"
    assert (row["status"], row["content"]) == (status, choice.message.content), row


def test_a_llama_cpp_stream_has_role_text_finish_reason_usage_and_done(
    site: Site, llama: LlamaServer
) -> None:
    """api.md, streaming: "`data: {chat.completion.chunk}` events (the first carries
    `delta.role`), a last chunk with `finish_reason`, a `usage` chunk when asked, then
    `data: [DONE]`" — read raw through nginx, then through the SDK."""
    body = {
        "model": ALIAS,
        "messages": question("Say hello to a friend."),
        "max_tokens": 30,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    headers = {"Authorization": f"Bearer {site.key}"}
    with httpx.Client(base_url=site.topo.base, headers=headers, timeout=180) as http:
        response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    *payloads, done = stream_events(response.text)
    assert done == "[DONE]"
    objects = [payload for payload in payloads if isinstance(payload, dict)]
    assert len(objects) == len(payloads), payloads  # one [DONE], at the end
    *chunks, usage_chunk = objects
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    finishes = [c["choices"][0]["finish_reason"] for c in chunks]
    assert finishes[-1] in ("stop", "length") and set(finishes[:-1]) == {None}, finishes
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert usage_chunk["choices"] == []
    usage = usage_chunk["usage"]
    # The estimate where the provider reports none (api.md): ~4 characters a token, at most
    # the request's max_tokens.
    estimate = min(round(len(text) / 4), 30)
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (0, estimate)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    row = site.topo.row(int(response.headers["x-parley-message"]))
    assert row["content"] == text and text.strip(), (row, text)

    sdk = openai.OpenAI(base_url=f"{site.topo.base}/v1", api_key=site.key, max_retries=0)
    streamed = sdk.chat.completions.create(
        model=ALIAS, messages=question("Say hello to a friend."), max_tokens=30, stream=True
    )
    pieces = [chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices]
    assert "".join(pieces).strip()


def test_max_tokens_cuts_a_llama_cpp_reply_with_finish_reason_length(
    site: Site, sdk: openai.OpenAI, llama: LlamaServer
) -> None:
    """api.md: `max_tokens` 1 to LLM_MAX_TOKENS; "A reply cut by it ends with
    `finish_reason: "length"`" — llama.cpp's server stops at it and says so."""
    raw = sdk.chat.completions.with_raw_response.create(
        model=ALIAS,
        messages=question("Write a long story about a lighthouse keeper and the sea."),
        max_tokens=5,
        temperature=0,
    )
    completion = raw.parse()
    assert completion.choices[0].finish_reason == "length"
    content = completion.choices[0].message.content or ""
    assert 1 <= len(llama.tokenize(content)) <= 5, content  # the model's own count
    row = site.topo.row(int(raw.headers["x-parley-message"]))
    assert (row["status"], row["content"]) == ("incomplete", completion.choices[0].message.content)


def test_langchains_chat_openai_max_tokens_reaches_llama_cpp_and_says_length(
    site: Site, llama: LlamaServer
) -> None:
    """api.md: LangChain's `ChatOpenAI` works unchanged; `max_completion_tokens` (what
    `ChatOpenAI(max_tokens=…)` sends) is "sent … to OpenAI-compatible servers as `max_tokens`
    (llama.cpp's server ignores the other one)" — so the cap holds on the real server."""
    from langchain_openai import ChatOpenAI
    from pydantic import SecretStr

    model = ChatOpenAI(
        base_url=f"{site.topo.base}/v1",
        api_key=SecretStr(site.key),
        model=ALIAS,
        max_tokens=6,  # type: ignore[call-arg]
        temperature=0,
        max_retries=0,
        timeout=180,
    )
    answer = model.invoke(f"Write a long poem about mountains in winter. ({uuid.uuid4().hex[:6]})")
    assert answer.response_metadata["finish_reason"] == "length", answer.response_metadata
    assert 1 <= len(llama.tokenize(str(answer.content))) <= 6, answer.content


def test_stop_ends_a_llama_cpp_reply_just_before_the_stop_sequence(sdk: openai.OpenAI) -> None:
    """api.md: `stop` (a string or up to 4) is "supported": the same greedy answer, asked again
    with one of its later words as `stop`, ends just before that word."""
    messages = question("Describe a sunny morning in a small village.")
    whole = sdk.chat.completions.create(
        model=ALIAS, messages=messages, max_tokens=40, temperature=0, seed=7
    )
    text = whole.choices[0].message.content or ""
    words = [w for w in text.split()[2:] if len(w) >= 4 and text.index(w) > 0]
    assert words, f"the model's answer has no third word to stop at: {text!r}"
    stop_at = words[0]
    stopped = sdk.chat.completions.create(
        model=ALIAS, messages=messages, max_tokens=40, temperature=0, seed=7, stop=[stop_at]
    )
    assert stopped.choices[0].finish_reason == "stop"
    got = stopped.choices[0].message.content or ""
    assert stop_at not in got
    assert got.rstrip() == text[: text.index(stop_at)].rstrip(), (got, text, stop_at)


# llama-cpp-python's server answers a streamed request whose prompt is past its context (2048
# tokens here) with an empty 200 body, or at times a connection closed with no response; asked
# again not streamed it refuses it, stating its window (docs/routing.md, "Context window":
# learnt from a refusal).


def test_a_message_past_an_unstated_window_is_refused_in_openais_shape(
    sdk: openai.OpenAI,
) -> None:
    """api.md: 400 `invalid_request_error` / `context_length_exceeded` (the upstream's refusal,
    with its window), as OpenAI answers it; the SDK's BadRequestError, no `X-Parley-Message`."""
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.chat.completions.create(
            model=ALIAS, messages=[{"role": "user", "content": LONG_TEXT}], max_tokens=8
        )
    error = refused.value.body
    assert isinstance(error, dict), error
    assert (error["type"], error["code"]) == ("invalid_request_error", "context_length_exceeded")
    assert "2048" in error["message"], error
    assert "x-parley-message" not in refused.value.response.headers


async def test_a_socket_reply_from_llama_cpp_streams_contiguously_and_done_has_usage(
    site: Site, llama: LlamaServer
) -> None:
    """protocol.md's example, with a real model behind a Celery worker: `ack`, deltas whose
    `start` is the previous `seq`, then `done` with the stored text's `seq` and `usage`."""
    ws = await site.socket()
    try:
        frame = send_frame(f"Tell me a fact about cats. ({uuid.uuid4().hex[:6]})", model=ALIAS)
        await ws.send(json.dumps({**frame, "max_tokens": 24}))
        heard = await hear_reply(ws, timeout=180)
    finally:
        await ws.close()
    heard.check_contiguous()
    final = heard.final
    assert final is not None and final["status"] in ("complete", "incomplete"), final
    assert final["usage"]["completion_tokens"] >= 1, final
    row = site.topo.row(heard.reply or 0)
    assert (row["content"], row["seq"], row["provider"]) == (
        heard.text,
        final["seq"],
        "harness-upstream",
    ), row


async def test_a_socket_reply_past_an_unstated_window_fails_as_too_long(
    site: Site, llama: LlamaServer
) -> None:
    """protocol.md: `context_length_exceeded`, not retryable: the reply's `error` (the
    upstream's refusal, with its window), the reply failed with no text kept; or, where the
    replica already learnt the window (the in-server generation of an earlier `/v1` request),
    the send's own `error`, nothing saved."""
    before = site.topo.query("SELECT count(*) FROM chat_message")[0][0]
    ws = await site.socket()
    try:
        await ws.send(json.dumps(send_frame(LONG_TEXT, model=ALIAS)))
        while (frame := await recv_frame(ws, 120))["type"] != "error":
            assert frame["type"] in ("ack", "message"), frame
    finally:
        await ws.close()
    assert frame["code"] == "context_length_exceeded" and frame["retryable"] is False, frame
    if frame.get("message") is None:
        assert site.topo.query("SELECT count(*) FROM chat_message")[0][0] == before
        return
    row = site.topo.row(frame["message"])
    assert (row["status"], row["error_code"], row["content"]) == ("failed", frame["code"], "")


# With the deployment's context window known (docs/routing.md, "Context window").
TURN = "The quick brown fox jumps over the lazy dog. " * 14  # ~630 characters, ~165 tokens


def long_history(turns: int) -> list[ChatCompletionMessageParam]:
    history: list[ChatCompletionMessageParam] = []
    for n in range(turns):
        if n % 2 == 0:
            history.append({"role": "user", "content": f"{n}: {TURN}"})
        else:
            history.append({"role": "assistant", "content": f"{n}: {TURN}"})
    return history


def test_a_history_past_an_unstated_window_is_answered_from_its_latest_turns(
    sdk: openai.OpenAI,
) -> None:
    """routing.md: a window learnt from the upstream's refusal; the prompt fitted to it is sent
    again at once (the deployment has no `context_window`: ALIAS). The earlier turn is the one
    too long for the window (~7,900 tokens against 2,048), so the fitted prompt is short and
    read quickly on a busy machine."""
    messages: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": f"Remember these words: {LONG_TEXT}"},
        {"role": "assistant", "content": "I will remember them."},
        *question("Say hello."),
    ]
    completion = sdk.chat.completions.create(model=ALIAS, messages=messages, max_tokens=8)
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason in ("stop", "length")


def test_a_history_past_llama_cpps_window_is_answered_from_its_latest_turns(
    sdk: openai.OpenAI,
) -> None:
    """routing.md: the oldest turns are left out of a prompt the window cannot hold; without
    the window known the same request is an upstream failure (above)."""
    messages = [*long_history(19), *question("Say hello.")]  # ~3,300 tokens against 768
    completion = sdk.chat.completions.create(model=WINDOWED, messages=messages, max_tokens=8)
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason in ("stop", "length")


def test_a_message_past_llama_cpps_window_is_refused_before_anything_is_sent(
    site: Site, sdk: openai.OpenAI
) -> None:
    """api.md: 400 `invalid_request_error` / `context_length_exceeded`, nothing saved."""
    before = site.topo.query("SELECT count(*) FROM chat_message")[0][0]
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.chat.completions.create(
            model=WINDOWED, messages=[{"role": "user", "content": LONG_TEXT}], max_tokens=8
        )
    error = refused.value.body
    assert isinstance(error, dict), error
    assert (error["type"], error["code"]) == ("invalid_request_error", "context_length_exceeded")
    assert "x-parley-message" not in refused.value.response.headers
    assert site.topo.query("SELECT count(*) FROM chat_message")[0][0] == before


async def test_the_socket_refuses_a_message_past_llama_cpps_window(
    site: Site, llama: LlamaServer
) -> None:
    """protocol.md: an `error` frame `context_length_exceeded`, not retryable, nothing saved."""
    before = site.topo.query("SELECT count(*) FROM chat_message")[0][0]
    ws = await site.socket()
    try:
        await ws.send(json.dumps(send_frame(LONG_TEXT, model=WINDOWED)))
        frame = await recv_frame(ws, 60)
    finally:
        await ws.close()
    assert frame["type"] == "error", frame
    assert frame["code"] == "context_length_exceeded" and frame["retryable"] is False, frame
    assert site.topo.query("SELECT count(*) FROM chat_message")[0][0] == before
