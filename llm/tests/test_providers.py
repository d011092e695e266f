"""Providers without the network: the simulated model, error mapping, the registry, the builders
and the local llama.cpp model (which runs in-process, from the bundled GGUF file)."""

from __future__ import annotations

import asyncio
import threading

import anthropic
import httpx
import httpx2
import openai
import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGenerationChunk

from llm.providers.base import ProviderConfig, ProviderError, provider_error_from
from llm.providers.local import ChatLocalLlama, bundled_model_path, load_model
from llm.providers.simulated import SimulatedChatModel, simulated_reply, split_tokens
from llm.registry import chat_model_for, provider_config, provider_configs

# --- simulated ------------------------------------------------------------------------------


def _simulated(max_tokens: int = 512):
    return chat_model_for(provider_config("simulated"), max_tokens=max_tokens)


def _contents(chunks) -> list[str]:
    return [c.content for c in chunks if c.content]


def _usage(chunks):
    found = [c.usage_metadata for c in chunks if c.usage_metadata]
    assert len(found) == 1, found
    return found[0]


def _finish(chunks) -> str | None:
    """The finish reason the stream reported (llm/failover.py reads it the same way)."""
    reasons = [c.response_metadata.get("finish_reason") for c in chunks]
    return next((r for r in reasons if r), None)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "one",
        "  leading and trailing  ",
        "tabs\tand\nnew\n\nlines\n",
        "ünïcödé — “quotes” 😀 日本語",
        "```python\ndef f():\n    return 1\n```\n",
    ],
)
def test_split_tokens_joins_back_exactly(text):
    tokens = split_tokens(text)
    assert "".join(tokens) == text
    assert all(tokens)


def test_simulated_same_prompt_gives_same_tokens():
    prompt = [HumanMessage("Tell me about otters")]
    first = _contents(_simulated().stream(prompt))
    second = _contents(_simulated().stream(prompt))
    assert first == second
    assert "".join(first) == simulated_reply("Tell me about otters")
    assert first == split_tokens(simulated_reply("Tell me about otters"))


def test_simulated_max_tokens_truncates():
    chunks = list(_simulated(max_tokens=5).stream([HumanMessage("Tell me about otters")]))
    contents = _contents(chunks)
    assert contents == split_tokens(simulated_reply("Tell me about otters"))[:5]
    assert _usage(chunks)["output_tokens"] == 5
    assert _finish(chunks) == "length"


async def test_simulated_async_stream_yields_tokens_then_usage():
    messages = [SystemMessage("Be brief."), HumanMessage("Tell me about otters")]
    chunks = [chunk async for chunk in _simulated().astream(messages)]
    contents = _contents(chunks)
    assert "".join(contents) == simulated_reply("Tell me about otters")
    usage = _usage(chunks)
    assert usage["output_tokens"] == len(contents)
    assert usage["input_tokens"] == len(split_tokens("Be brief.")) + len(
        split_tokens("Tell me about otters")
    )
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert _finish(chunks) == "stop"


async def test_simulated_chunks_merge_like_validated_ones_and_share_no_state():
    """The async stream's text chunks are built as pydantic's copy builds them, from a validated
    template (cheaper than validating each): they must add up, carry their text, equal what
    validation builds, and leave the next reply's chunks untouched."""
    model = _simulated()
    messages = [HumanMessage("Tell me about otters")]
    raw = [chunk async for chunk in model._astream(messages)]
    merged = raw[0]
    for chunk in raw[1:]:
        merged = merged + chunk
    assert merged.text == simulated_reply("Tell me about otters")
    assert merged.message.content == merged.text
    assert all(chunk.text == chunk.message.content for chunk in raw)
    raw[0].message.tool_call_chunks.append({"name": "x", "args": "", "id": "1", "index": 0})
    raw[0].message.__pydantic_fields_set__.add("id")
    again = [chunk async for chunk in model._astream(messages)]
    assert again[1].message.tool_call_chunks == []
    assert again[1].message.model_fields_set == {"content"}
    # Field for field, slot for slot, what validating the same text builds.
    text = again[1].text
    validated = ChatGenerationChunk(message=AIMessageChunk(content=text))
    for built, expected in ((again[1], validated), (again[1].message, validated.message)):
        assert type(built) is type(expected)
        assert built.__dict__ == expected.__dict__
        assert built.model_fields_set == expected.model_fields_set
        assert built.__pydantic_extra__ == expected.__pydantic_extra__
        assert built.__pydantic_private__ == expected.__pydantic_private__
    assert again[1].model_dump() == validated.model_dump()


async def test_simulated_streams_of_one_loop_wait_for_their_tokens_on_one_timer(monkeypatch):
    """A load test's hundreds of simulated streams are paced by one loop timer (the earliest
    token due), not a timer handle per token of each: the stand-in's pacing is not the
    worker's work. The streams' clocks start together (the loop's clock held still while
    they start), so their next tokens are due together: one timer, and every stream gets its
    token, in order, none lost."""
    loop = asyncio.get_running_loop()
    model = SimulatedChatModel(tokens_per_second=2.0, first_token_delay=0.0)
    messages = [HumanMessage("Tell me about otters")]
    streams = [model._astream(messages) for _ in range(100)]
    now = loop.time()
    monkeypatch.setattr(loop, "time", lambda: now)
    firsts = [await stream.__anext__() for stream in streams]
    monkeypatch.undo()
    timers: list[float] = []
    call_at = loop.call_at

    def counted(when, callback, *args, **kwargs):
        timers.append(when)
        return call_at(when, callback, *args, **kwargs)

    async with asyncio.timeout(30):  # a bound for a lost wake-up, not a speed requirement
        monkeypatch.setattr(loop, "call_at", counted)  # (the bound's own timer is made)
        seconds = await asyncio.gather(*(stream.__anext__() for stream in streams))
        monkeypatch.undo()
    tokens = split_tokens(simulated_reply("Tell me about otters"))
    assert [chunk.text for chunk in firsts] == [tokens[0]] * 100
    assert [chunk.text for chunk in seconds] == [tokens[1]] * 100
    assert len(timers) == 1
    for stream in streams:
        await stream.aclose()


async def test_a_simulated_stream_cancelled_while_it_waits_leaves_the_others_paced():
    model = SimulatedChatModel(tokens_per_second=20.0, first_token_delay=0.0)
    messages = [HumanMessage("Tell me about otters")]
    streams = [model._astream(messages) for _ in range(3)]
    for stream in streams:
        await stream.__anext__()
    waits = [asyncio.ensure_future(stream.__anext__()) for stream in streams]
    await asyncio.sleep(0)
    waits[1].cancel()
    async with asyncio.timeout(30):
        done = await asyncio.gather(*waits, return_exceptions=True)
    assert isinstance(done[1], asyncio.CancelledError)
    second = split_tokens(simulated_reply("Tell me about otters"))[1]
    assert done[0].text == done[2].text == second
    async with asyncio.timeout(30):  # and the next tokens come as before
        assert [(await s.__anext__()).text for s in (streams[0], streams[2])] == [
            split_tokens(simulated_reply("Tell me about otters"))[2]
        ] * 2


def test_simulated_invoke_matches_stream():
    message = _simulated().invoke([HumanMessage("hi")])
    assert message.content == simulated_reply("hi")
    assert message.response_metadata["finish_reason"] == "stop"
    assert message.usage_metadata["output_tokens"] == len(split_tokens(simulated_reply("hi")))


# --- provider_error_from --------------------------------------------------------------------

_REQUEST = httpx2.Request("POST", "https://api.example.test/v1/chat/completions")
_HTTPX_REQUEST = httpx.Request("POST", "https://api.example.test/v1/chat/completions")


def _sdk_error(module, cls_name: str, status: int) -> Exception:
    response = httpx2.Response(status, request=_REQUEST, json={"error": {"message": "no"}})
    return getattr(module, cls_name)("no", response=response, body={"error": {"message": "no"}})


@pytest.mark.parametrize(
    "exc",
    [
        pytest.param(_sdk_error(openai, "RateLimitError", 429), id="openai-429"),
        pytest.param(_sdk_error(openai, "InternalServerError", 500), id="openai-500"),
        pytest.param(_sdk_error(openai, "InternalServerError", 503), id="openai-503"),
        pytest.param(_sdk_error(anthropic, "RateLimitError", 429), id="anthropic-429"),
        pytest.param(_sdk_error(anthropic, "InternalServerError", 500), id="anthropic-500"),
        pytest.param(_sdk_error(anthropic, "OverloadedError", 529), id="anthropic-529"),
        pytest.param(
            httpx.HTTPStatusError(
                "bad gateway",
                request=_HTTPX_REQUEST,
                response=httpx.Response(502, request=_HTTPX_REQUEST),
            ),
            id="httpx-502-via-response",
        ),
        pytest.param(
            httpx.HTTPStatusError(
                "timeout",
                request=_HTTPX_REQUEST,
                response=httpx.Response(408, request=_HTTPX_REQUEST),
            ),
            id="httpx-408",
        ),
    ],
)
def test_overload_and_server_errors_are_retryable_and_keep_their_meaning(exc):
    error = provider_error_from(exc)
    status = getattr(exc, "status_code", None) or exc.response.status_code
    # The upstream's rate limit, its failure, or a timeout: each ends with its own HTTP status.
    expected = {429: "provider_rate_limited", 408: "provider_unavailable"}.get(
        status, "provider_failed"
    )
    assert (error.code, error.retryable) == (expected, True)
    assert str(getattr(exc, "status_code", None) or exc.response.status_code) in error.detail


@pytest.mark.parametrize(
    "exc",
    [
        pytest.param(_sdk_error(openai, "BadRequestError", 400), id="openai-400"),
        pytest.param(_sdk_error(openai, "AuthenticationError", 401), id="openai-401"),
        pytest.param(_sdk_error(openai, "PermissionDeniedError", 403), id="openai-403"),
        pytest.param(_sdk_error(openai, "NotFoundError", 404), id="openai-404"),
        pytest.param(_sdk_error(anthropic, "BadRequestError", 400), id="anthropic-400"),
        pytest.param(_sdk_error(anthropic, "AuthenticationError", 401), id="anthropic-401"),
        pytest.param(_sdk_error(anthropic, "PermissionDeniedError", 403), id="anthropic-403"),
    ],
)
def test_client_errors_are_rejected_and_not_retryable(exc):
    error = provider_error_from(exc)
    assert (error.code, error.retryable) == ("provider_rejected", False)


@pytest.mark.parametrize(
    "exc",
    [
        pytest.param(httpx.ConnectError("refused", request=_HTTPX_REQUEST), id="httpx-connect"),
        pytest.param(httpx.ReadTimeout("slow", request=_HTTPX_REQUEST), id="httpx-read-timeout"),
        pytest.param(httpx.ReadError("reset", request=_HTTPX_REQUEST), id="httpx-read-error"),
        pytest.param(
            httpx.RemoteProtocolError("closed", request=_HTTPX_REQUEST), id="httpx-protocol"
        ),
        pytest.param(httpx2.ConnectError("refused", request=_REQUEST), id="httpx2-connect"),
        pytest.param(TimeoutError(), id="builtin-timeout"),
        pytest.param(ConnectionRefusedError(), id="builtin-connection-refused"),
        pytest.param(openai.APIConnectionError(request=_REQUEST), id="openai-connection"),
        pytest.param(openai.APITimeoutError(request=_REQUEST), id="openai-timeout"),
        pytest.param(anthropic.APIConnectionError(request=_REQUEST), id="anthropic-connection"),
        pytest.param(anthropic.APITimeoutError(request=_REQUEST), id="anthropic-timeout"),
    ],
)
def test_transport_failures_are_retryable_unavailable(exc):
    error = provider_error_from(exc)
    assert (error.code, error.retryable) == ("provider_unavailable", True)


def test_anything_else_is_a_non_retryable_provider_error():
    error = provider_error_from(ValueError("odd chunk"))
    assert (error.code, error.retryable) == ("provider_error", False)
    assert "ValueError" in error.detail
    assert "odd chunk" not in error.detail  # vendor text is not shown to users


def test_a_provider_error_passes_through_unchanged():
    original = ProviderError("provider_rejected", "nope")
    assert provider_error_from(original) is original


# --- registry -------------------------------------------------------------------------------


@pytest.fixture
def no_remote_providers(settings):
    settings.OPENAI_API_KEY = ""
    settings.OPENAI_COMPATIBLE_BASE_URL = ""
    settings.ANTHROPIC_API_KEY = ""
    return settings


def test_local_and_simulated_are_always_configured(no_remote_providers):
    configs = provider_configs()
    assert set(configs) == {"local", "simulated"}
    assert configs["local"].kind == "local" and configs["local"].is_local
    assert configs["simulated"].kind == "simulated" and not configs["simulated"].is_local


@pytest.mark.parametrize(
    ("setting", "value", "name", "kind"),
    [
        ("OPENAI_API_KEY", "sk-test", "openai", "openai"),
        (
            "OPENAI_COMPATIBLE_BASE_URL",
            "http://127.0.0.1:9/v1",
            "openai-compatible",
            "openai-compatible",
        ),
        ("ANTHROPIC_API_KEY", "sk-ant-test", "anthropic", "anthropic"),
    ],
)
def test_remote_providers_appear_only_when_configured(
    no_remote_providers, setting, value, name, kind
):
    assert name not in provider_configs()
    with pytest.raises(ProviderError) as info:
        provider_config(name)
    assert (info.value.code, info.value.retryable) == ("provider_rejected", False)

    setattr(no_remote_providers, setting, value)
    config = provider_config(name)
    assert config.kind == kind
    assert set(provider_configs()) == {"local", "simulated", name}
    assert value in (config.api_key, config.base_url)
    assert "sk-" not in repr(config)  # keys stay out of logs


def test_openai_compatible_config_carries_model_url_and_key(no_remote_providers):
    no_remote_providers.OPENAI_COMPATIBLE_BASE_URL = "http://127.0.0.1:9/v1"
    no_remote_providers.OPENAI_COMPATIBLE_MODEL = "smollm2"
    no_remote_providers.OPENAI_COMPATIBLE_API_KEY = "k"
    no_remote_providers.LLM_REQUEST_TIMEOUT = 12.5
    config = provider_config("openai-compatible")
    assert (config.model, config.base_url, config.api_key, config.timeout) == (
        "smollm2",
        "http://127.0.0.1:9/v1",
        "k",
        12.5,
    )


def test_unknown_provider_name_is_rejected():
    with pytest.raises(ProviderError) as info:
        provider_config("no-such-provider")
    assert (info.value.code, info.value.retryable) == ("provider_rejected", False)


def test_unknown_provider_kind_is_rejected():
    with pytest.raises(ProviderError) as info:
        chat_model_for(ProviderConfig(name="x", kind="carrier-pigeon", model="m"), max_tokens=8)
    assert (info.value.code, info.value.retryable) == ("provider_rejected", False)


# --- builders: what LangChain would send ----------------------------------------------------

_MESSAGES = [SystemMessage("Be brief."), HumanMessage("hi")]


def _openai_model(kind: str, max_tokens: int = 8):
    config = ProviderConfig(
        name=kind,
        kind=kind,
        model="some-model",
        base_url="http://127.0.0.1:9/v1",
        timeout=7.0,
        options={"temperature": 0.3},
    )
    return chat_model_for(config, max_tokens=max_tokens)


def test_openai_kind_sends_max_completion_tokens():
    model = _openai_model("openai")
    payload = model._get_request_payload(_MESSAGES)
    assert payload["max_completion_tokens"] == 8
    assert "max_tokens" not in payload
    assert "max_tokens" not in (payload.get("extra_body") or {})
    assert payload["model"] == "some-model"
    assert payload["temperature"] == 0.3
    assert (model.streaming, model.stream_usage, model.max_retries) == (True, True, 0)


def test_openai_compatible_kind_sends_classic_max_tokens_in_the_body():
    model = _openai_model("openai-compatible")
    payload = model._get_request_payload(_MESSAGES)
    # The OpenAI SDK merges extra_body into the JSON body: the server sees "max_tokens": 8.
    assert payload["extra_body"] == {"max_tokens": 8}
    assert "max_completion_tokens" not in payload
    assert "max_tokens" not in payload
    assert payload["model"] == "some-model"
    assert (model.streaming, model.stream_usage, model.max_retries) == (True, True, 0)
    assert model.openai_api_base == "http://127.0.0.1:9/v1"


@pytest.mark.parametrize("kind", ["openai", "openai-compatible"])
def test_openai_kinds_leave_chunk_timeouts_to_the_router(kind):
    """langchain-openai would wrap every chunk in asyncio.wait_for, which on Python 3.11 drops
    a cancel arriving as the chunk does; llm/failover.py bounds every chunk itself."""
    assert _openai_model(kind).stream_chunk_timeout in (0, None)


def test_openai_compatible_without_a_key_still_builds():
    config = ProviderConfig(
        name="c", kind="openai-compatible", model="m", base_url="http://127.0.0.1:9/v1"
    )
    model = chat_model_for(config, max_tokens=8)
    assert model.openai_api_key.get_secret_value() == "not-needed"


def test_anthropic_builder_sets_model_and_max_tokens():
    config = ProviderConfig(
        name="anthropic",
        kind="anthropic",
        model="claude-3-5-haiku-latest",
        api_key="sk-ant-test",
        timeout=9.0,
    )
    model = chat_model_for(config, max_tokens=321)
    payload = model._get_request_payload(_MESSAGES)
    assert payload["model"] == "claude-3-5-haiku-latest"
    assert payload["max_tokens"] == 321
    assert payload["system"] == "Be brief."
    assert (model.streaming, model.max_retries) == (True, 0)
    assert model.stream_usage  # else the stream's last event carries no stop_reason


# --- local (llama.cpp in-process) -----------------------------------------------------------


def test_bundled_model_file_exists():
    path = bundled_model_path()
    assert path.suffix == ".gguf"
    assert path.is_file()
    assert path.stat().st_size > 50_000_000


def _local(max_tokens: int, temperature: float = 0.0) -> ChatLocalLlama:
    config = ProviderConfig(
        name="local",
        kind="local",
        model="smollm2-135m-instruct",
        options={"n_ctx": 2048, "n_threads": 2, "temperature": temperature},
    )
    model = chat_model_for(config, max_tokens=max_tokens)
    assert isinstance(model, ChatLocalLlama)
    return model


@pytest.fixture(autouse=True, scope="module")
def _drop_loaded_models():
    """Free the models loaded here while Python is whole: llama.cpp's __del__ fails at exit."""
    yield
    load_model.cache_clear()


def _generating_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "llama-generate" and t.is_alive()]


async def test_local_model_streams_a_short_reply_with_usage():
    chunks = []
    async with asyncio.timeout(60):
        async for chunk in _local(max_tokens=8).astream([HumanMessage("Name a fruit.")]):
            chunks.append(chunk)
    contents = _contents(chunks)
    assert contents and "".join(contents).strip()
    assert len(contents) <= 8  # at most one chunk per generated token
    usage = _usage(chunks)
    assert usage["input_tokens"] > 0
    # Counted by re-tokenizing the text, which can differ from the generated ids by a token.
    assert 0 < usage["output_tokens"] <= 9
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


async def test_local_model_reports_its_finish_reason():
    async with asyncio.timeout(60):
        capped = [c async for c in _local(max_tokens=4).astream([HumanMessage("Write an essay.")])]
        whole = [c async for c in _local(max_tokens=200).astream([HumanMessage("Say hi.")])]
    assert _finish(capped) == "length"
    assert _finish(whole) == "stop"


async def test_local_model_stopped_early_releases_the_model_for_the_next_reply():
    long_one = _local(max_tokens=1000)  # ~40 s of generation if nothing stopped it
    stream = long_one.astream([HumanMessage("Write a very long story about a lighthouse.")])
    received = []
    async with asyncio.timeout(60):
        async for chunk in stream:
            if chunk.content:
                received.append(chunk.content)
            if len(received) >= 3:
                break
        await stream.aclose()

    # The generating thread notices within a token or so and lets go of the model's lock.
    async with asyncio.timeout(10):
        while _generating_threads():
            await asyncio.sleep(0.02)
    loaded = load_model(long_one.model_path, long_one.n_ctx, long_one.n_threads)
    assert not loaded.lock.locked()

    # And a second reply runs right away on the same loaded model.
    async with asyncio.timeout(60):  # a deadline for a hung lock, not a speed requirement
        second = [c async for c in _local(max_tokens=8).astream([HumanMessage("Say hi.")])]
    assert _contents(second)
    assert _usage(second)["output_tokens"] > 0
    assert not loaded.lock.locked()
