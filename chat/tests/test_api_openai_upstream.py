"""POST /v1/chat/completions against a real OpenAI-compatible upstream on loopback
(tests/fault_server.py): what the upstream receives for each request parameter, the system
prompt it is given, what is refused with a 400 naming the parameter, and the status an upstream
failure ends as."""

from __future__ import annotations

import pytest

from chat.models import Conversation
from tests.fault_server import Fail, FaultServer, Reply

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "openai-compatible"  # the settings provider's alias
ROUTE = "up"


@pytest.fixture
def upstream(settings, fault: FaultServer) -> FaultServer:
    settings.LLM_DEFAULT_PROVIDER = MODEL
    settings.OPENAI_COMPATIBLE_BASE_URL = fault.base_url(ROUTE)
    settings.OPENAI_COMPATIBLE_MODEL = "fault-model"
    settings.LLM_SYSTEM_PROMPT = "You are Parley."
    settings.LLM_RETRY_BASE_DELAY = 0.01
    settings.LLM_RETRY_MAX_DELAY = 0.05
    settings.WS_RATE_SENDS_PER_USER = "10000/m"
    settings.WS_RATE_SENDS_PER_ORG = "10000/m"
    return fault


def ask(text: str = "Hello", model: str = MODEL, **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


PARAMS = {
    "temperature": 0.3,
    "top_p": 0.9,
    "seed": 7,
    "stop": ["END", "STOP"],
    "presence_penalty": 0.5,
    "frequency_penalty": -0.5,
    "user": "customer-42",
}


@pytest.mark.parametrize("stream", [False, True])
async def test_the_upstream_receives_every_parameter_and_the_cap_says_length(
    upstream, http, stream
):
    upstream.default(ROUTE, Reply(text="one two three four five six", chunk_chars=4))
    response = await http.post(
        "/v1/chat/completions", json=ask(max_tokens=3, stream=stream, **PARAMS)
    )
    assert response.status_code == 200
    (seen,) = upstream.requests(ROUTE)
    for name, value in PARAMS.items():
        assert seen.body[name] == value, name
    # The classic field, which llama.cpp's server reads; never the one it ignores.
    assert seen.body["max_tokens"] == 3 and "max_completion_tokens" not in seen.body
    if stream:
        text = response.text
        assert '"finish_reason":"length"' in text and text.rstrip().endswith("data: [DONE]")
    else:
        choice = response.json()["choices"][0]
        assert choice["finish_reason"] == "length"
        assert choice["message"]["content"] == "one two thre"


async def test_max_completion_tokens_is_sent_as_max_tokens(upstream, http):
    response = await http.post("/v1/chat/completions", json=ask(max_completion_tokens=2))
    assert response.status_code == 200
    (seen,) = upstream.requests(ROUTE)
    assert seen.body["max_tokens"] == 2 and "max_completion_tokens" not in seen.body
    assert response.json()["choices"][0]["finish_reason"] == "length"


async def test_without_parameters_the_deployment_defaults_apply(upstream, http, settings):
    response = await http.post("/v1/chat/completions", json=ask())
    assert response.status_code == 200
    (seen,) = upstream.requests(ROUTE)
    assert seen.body["max_tokens"] == settings.LLM_MAX_TOKENS
    assert seen.body["temperature"] == settings.LLM_TEMPERATURE
    assert not {"seed", "stop", "top_p", "user", "response_format"} & set(seen.body)
    assert response.json()["choices"][0]["finish_reason"] == "stop"


async def test_system_messages_reach_the_upstream_as_its_system_prompt(upstream, http):
    payload = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "Answer in French."},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Bonjour !"},
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": "How are you?"},
        ],
    }
    response = await http.post("/v1/chat/completions", json=payload)
    assert response.status_code == 200
    (seen,) = upstream.requests(ROUTE)
    assert seen.body["messages"] == [
        {"role": "system", "content": "You are Parley.\n\nAnswer in French.\n\nBe brief."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Bonjour !"},
        {"role": "user", "content": "How are you?"},
    ]


async def test_response_format_passes_through_to_an_openai_compatible_upstream(upstream, http):
    schema = {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
    }
    for response_format in ({"type": "json_object"}, schema):
        response = await http.post(
            "/v1/chat/completions", json=ask(response_format=response_format)
        )
        assert response.status_code == 200
    assert [s.body["response_format"] for s in upstream.requests(ROUTE)] == [
        {"type": "json_object"},
        schema,
    ]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"temperature": "hot"}, "temperature"),
        ({"temperature": 2.5}, "temperature"),
        ({"max_tokens": -1}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 1.5}, "max_tokens"),
        ({"max_tokens": 10**9}, "max_tokens"),
        ({"max_completion_tokens": "5"}, "max_completion_tokens"),
        ({"top_p": 1.2}, "top_p"),
        ({"seed": "x"}, "seed"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": [""]}, "stop"),
        ({"presence_penalty": 3}, "presence_penalty"),
        ({"frequency_penalty": True}, "frequency_penalty"),
        ({"user": 5}, "user"),
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"response_format": {"type": "xml"}}, "response_format"),
        ({"frobnicate": 1}, "frobnicate"),
    ],
)
async def test_a_bad_or_unsupported_parameter_is_a_400_naming_it(upstream, http, extra, param):
    response = await http.post("/v1/chat/completions", json=ask(**extra))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert upstream.count() == 0
    assert not await Conversation.objects.aexists()  # nothing recorded, nothing reserved


async def test_an_option_the_models_provider_cannot_honour_is_refused(upstream, http):
    # The simulated provider has no structured output: refused, not answered as plain text.
    response = await http.post(
        "/v1/chat/completions",
        json=ask(model="simulated", response_format={"type": "json_object"}),
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "response_format"


# --- the upstream's status, carried through --------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_an_upstream_429_ends_as_429_with_its_retry_after(upstream, http, settings, stream):
    settings.LLM_RETRY_MAX_ATTEMPTS = 2
    upstream.default(ROUTE, Fail(429, retry_after=1))
    response = await http.post("/v1/chat/completions", json=ask(stream=stream))
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "1"
    error = response.json()["error"]
    assert error["code"] == "provider_rate_limited" and error["type"] == "requests"
    assert upstream.count(ROUTE) == 2  # retried within Parley first


@pytest.mark.parametrize("stream", [False, True])
async def test_an_upstream_500_ends_as_502(upstream, http, settings, stream):
    settings.LLM_RETRY_MAX_ATTEMPTS = 2
    upstream.default(ROUTE, Fail(500))
    response = await http.post("/v1/chat/completions", json=ask(stream=stream))
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "provider_failed" and error["type"] == "server_error"
    assert upstream.count(ROUTE) == 2


async def test_an_open_circuit_is_503_with_retry_after(upstream, http, settings):
    settings.LLM_RETRY_MAX_ATTEMPTS = 1
    settings.LLM_BREAKER_FAILURES = 2
    upstream.default(ROUTE, Fail(500))
    for _ in range(2):
        assert (await http.post("/v1/chat/completions", json=ask())).status_code == 502
    response = await http.post("/v1/chat/completions", json=ask())
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1
    assert response.json()["error"]["code"] == "provider_unavailable"
    assert upstream.count(ROUTE) == 2  # the open circuit sent nothing upstream
