"""Clients nobody here wrote, against a running Parley: the official `openai` SDK and
LangChain's ChatOpenAI, pointed at a real Daphne (embedded mode, simulated provider, an API key
made with manage.py). Also the SSE stream's Last-Event-ID resume over a real socket."""

from __future__ import annotations

import json
import time
from itertools import pairwise

import httpx
import openai
import pytest
from langchain_core.messages import AIMessageChunk
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from llm.providers.simulated import simulated_reply
from tests.fault_server import Fail, FaultServer, Reply, fault_server
from tests.harness.embedded import RunningParley, running_parley

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def parley(tmp_path_factory):
    with running_parley(tmp_path_factory.mktemp("openai-sdk")) as server:
        yield server


@pytest.fixture
def sdk(parley: RunningParley) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{parley.url}/v1", api_key=parley.key, max_retries=0)


def rest(parley: RunningParley) -> httpx.Client:
    return httpx.Client(
        base_url=parley.url, headers={"Authorization": f"Bearer {parley.key}"}, timeout=30
    )


def test_the_openai_sdk_streams_a_chat_completion(sdk):
    stream = sdk.chat.completions.create(
        model="simulated",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Stream me something"},
        ],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == simulated_reply("Stream me something")
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert {c.model for c in chunks} == {"simulated"}


def test_the_openai_sdk_gets_a_completion_and_its_usage(sdk, parley):
    completion = sdk.chat.completions.create(
        model="simulated", messages=[{"role": "user", "content": "Not streamed"}]
    )
    assert completion.object == "chat.completion" and completion.model == "simulated"
    assert completion.choices[0].message.content == simulated_reply("Not streamed")
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    # Recorded like any chat, for its owner and operators to see.
    with rest(parley) as http:
        found = http.get("/api/v1/conversations", params={"search": "Not streamed"}).json()
        assert found["count"] == 1


def test_the_openai_sdk_lists_models(sdk):
    models = [m.id for m in sdk.models.list()]
    assert models[0] == "simulated" and "local" in models
    assert sdk.models.retrieve("simulated").id == "simulated"


def test_the_openai_sdk_raises_its_own_errors(parley, sdk):
    bad = openai.OpenAI(base_url=f"{parley.url}/v1", api_key="pk_nope_nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="simulated", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.chat.completions.create(model="gpt-17", messages=[{"role": "user", "content": "x"}])
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model="simulated", messages=[])


def test_an_idempotent_retry_through_the_sdk_returns_the_first_completion(sdk):
    headers = {"Idempotency-Key": "sdk-retry-1"}
    first = sdk.chat.completions.create(
        model="simulated",
        messages=[{"role": "user", "content": "Once only"}],
        extra_headers=headers,
    )
    again = sdk.chat.completions.with_raw_response.create(
        model="simulated",
        messages=[{"role": "user", "content": "Once only"}],
        extra_headers=headers,
    )
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.parse().id == first.id


def test_langchain_chat_openai_streams_and_invokes(parley):
    model = ChatOpenAI(
        base_url=f"{parley.url}/v1", api_key=parley.key, model="simulated", max_retries=0
    )
    chunks = list(model.stream("Hello from LangChain"))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert "".join(str(c.content) for c in chunks) == simulated_reply("Hello from LangChain")
    answer = model.invoke([("system", "Be kind."), ("human", "Invoked")])
    assert answer.content == simulated_reply("Invoked")
    assert answer.usage_metadata is not None and answer.usage_metadata["output_tokens"] > 0


def test_leaving_a_stream_early_cancels_the_reply(parley):
    """As with OpenAI: a client that stops reading stops the generation (the text so far is
    kept in the conversation)."""
    slow = httpx.Client(base_url=parley.url, timeout=30)
    payload = {
        "model": "simulated",
        "messages": [{"role": "user", "content": "Cancel me " + "word " * 400}],
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {parley.key}"}
    with slow.stream("POST", "/v1/chat/completions", json=payload, headers=headers) as response:
        reply_id = int(response.headers["X-Parley-Message"])
        next(response.iter_lines())  # the first chunk, then hang up
    slow.close()
    with rest(parley) as http:
        deadline = time.monotonic() + 20
        while (reply := http.get(f"/api/v1/messages/{reply_id}").json())["status"] not in (
            "cancelled",
            "complete",
            "failed",
        ):
            assert time.monotonic() < deadline, reply
            time.sleep(0.1)
    assert reply["status"] == "cancelled"
    assert 0 < len(reply["content"]) < len(simulated_reply(payload["messages"][0]["content"]))


def sse_events(lines) -> list[dict]:
    events: list[dict] = []
    current: dict = {}
    for line in lines:
        if not line:
            if "event" in current:
                current["data"] = json.loads(current["data"])
                events.append(current)
                if current["event"] in ("done", "error"):
                    return events
            current = {}
        elif not line.startswith((":", "retry:")):
            name, _, value = line.partition(": ")
            current[name] = value
    return events


def test_the_sse_stream_resumes_with_last_event_id_over_a_real_socket(parley):
    with rest(parley) as http:
        conversation = http.post("/api/v1/conversations", json={"title": "SSE"}).json()
        text = "Resume over the wire " + "again " * 150
        sent = http.post(
            f"/api/v1/conversations/{conversation['id']}/messages", json={"text": text}
        ).json()
        # Read two deltas, then drop the connection mid-reply.
        held = ""
        with http.stream("GET", sent["stream_url"]) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            first: list[dict] = []
            current: dict = {}
            for line in response.iter_lines():
                if not line and "event" in current:
                    first.append(current)
                    current = {}
                    if len(first) == 2:
                        break
                elif line and not line.startswith((":", "retry:")):
                    name, _, value = line.partition(": ")
                    current[name] = value
        for event in first:
            assert event["event"] == "delta"
            held += json.loads(event["data"])["text"]
        last_id = first[-1]["id"]
        assert int(last_id) == len(held)
        # Reconnect as EventSource does: Last-Event-ID = the last seq held.
        with http.stream("GET", sent["stream_url"], headers={"Last-Event-ID": last_id}) as response:
            rest_events = sse_events(response.iter_lines())
    deltas = [e for e in rest_events if e["event"] == "delta"]
    assert deltas[0]["data"]["start"] == len(held)
    for before, after in pairwise(deltas):
        assert after["data"]["start"] == before["data"]["seq"]
    held += "".join(d["data"]["text"] for d in deltas)
    assert held == simulated_reply(text)
    assert rest_events[-1]["event"] == "done" and rest_events[-1]["data"]["seq"] == len(held)


# --- against a real OpenAI-compatible upstream (tests/fault_server.py) -----------------------


@pytest.fixture(scope="module")
def upstream():
    with fault_server() as server:
        yield server


@pytest.fixture(scope="module")
def parley_upstream(tmp_path_factory, upstream: FaultServer):
    with running_parley(
        tmp_path_factory.mktemp("openai-sdk-upstream"),
        OPENAI_COMPATIBLE_BASE_URL=upstream.base_url("up"),
        OPENAI_COMPATIBLE_MODEL="fault-model",
        LLM_SYSTEM_PROMPT="You are Parley.",
        LLM_RETRY_MAX_ATTEMPTS="2",
        LLM_RETRY_BASE_DELAY="0.01",
        LLM_BREAKER_FAILURES="1000",
    ) as server:
        yield server


@pytest.fixture
def sdk_upstream(parley_upstream: RunningParley) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{parley_upstream.url}/v1", api_key=parley_upstream.key, max_retries=0
    )


def test_the_sdks_parameters_reach_the_upstream_and_the_cap_says_length(sdk_upstream, upstream):
    upstream.script("up", Reply(text="one two three four five", chunk_chars=4))
    completion = sdk_upstream.chat.completions.create(
        model="openai-compatible",
        messages=[
            {"role": "system", "content": "Answer tersely."},
            {"role": "user", "content": "Count"},
        ],
        max_tokens=2,
        temperature=0.1,
        top_p=0.5,
        seed=3,
        stop=["six"],
        presence_penalty=0.25,
        frequency_penalty=-0.25,
        user="customer-7",
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].message.content == "one two "
    body = upstream.requests("up")[-1].body
    assert {k: body[k] for k in ("max_tokens", "temperature", "top_p", "seed", "stop")} == {
        "max_tokens": 2,
        "temperature": 0.1,
        "top_p": 0.5,
        "seed": 3,
        "stop": ["six"],
    }
    assert (body["presence_penalty"], body["frequency_penalty"], body["user"]) == (
        0.25,
        -0.25,
        "customer-7",
    )
    assert body["messages"][0] == {
        "role": "system",
        "content": "You are Parley.\n\nAnswer tersely.",
    }


def test_the_sdk_gets_a_400_naming_a_bad_parameter(sdk_upstream, upstream):
    before = upstream.count()
    for extra, param in [
        ({"temperature": 7}, "temperature"),
        ({"max_tokens": -1}, "max_tokens"),
        ({"logprobs": True}, "logprobs"),
        ({"n": 2}, "n"),
    ]:
        with pytest.raises(openai.BadRequestError) as refused:
            sdk_upstream.chat.completions.create(
                model="openai-compatible",
                messages=[{"role": "user", "content": "x"}],
                **extra,
            )
        assert refused.value.param == param
    assert upstream.count() == before


def test_the_sdk_sees_the_upstreams_500_and_429(sdk_upstream, upstream):
    upstream.script("up", Fail(500), Fail(500))
    with pytest.raises(openai.InternalServerError) as failed:
        sdk_upstream.chat.completions.create(
            model="openai-compatible",
            messages=[{"role": "user", "content": "x"}],
            stream=True,
        )
    assert failed.value.status_code == 502 and failed.value.code == "provider_failed"
    # The 429's Retry-After pauses the deployment for a second.
    upstream.script("up", Fail(429, retry_after=1), Fail(429, retry_after=1))
    with pytest.raises(openai.RateLimitError) as limited:
        sdk_upstream.chat.completions.create(
            model="openai-compatible", messages=[{"role": "user", "content": "x"}]
        )
    assert limited.value.response.headers["retry-after"] == "1"
    assert limited.value.code == "provider_rate_limited"
    # The pause ends by itself (503 "paused" meanwhile): wait for it, so the next test finds
    # the deployment open.
    deadline = time.monotonic() + 30
    while True:
        try:
            sdk_upstream.chat.completions.create(
                model="openai-compatible", messages=[{"role": "user", "content": "x"}]
            )
            break
        except openai.InternalServerError as paused:
            assert paused.status_code == 503 and time.monotonic() < deadline
            assert paused.response.headers["retry-after"] == "1"
            time.sleep(0.2)


def test_langchain_structured_output_and_its_refusals(parley_upstream, upstream):
    class Answer(BaseModel):
        answer: str

    def chat(model: str) -> ChatOpenAI:
        return ChatOpenAI(
            base_url=f"{parley_upstream.url}/v1",
            api_key=parley_upstream.key,
            model=model,
            max_retries=0,
        )

    upstream.script("up", Reply(text='{"answer": "yes"}'))
    result = chat("openai-compatible").with_structured_output(Answer).invoke("Yes or no?")
    assert result == Answer(answer="yes")
    sent = upstream.requests("up")[-1].body["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "Answer"
    # A model whose provider cannot constrain its output, and tools: refused, never ignored.
    with pytest.raises(openai.BadRequestError) as refused:
        chat("simulated").with_structured_output(Answer).invoke("Yes or no?")
    assert refused.value.param == "response_format"
    with pytest.raises(openai.BadRequestError) as no_tools:
        chat("openai-compatible").bind_tools([Answer]).invoke("Call it")
    assert no_tools.value.param == "tools"
