"""A caller's generation options: kept as plain data, built into each provider kind in the form
it understands, and refused by a kind that cannot honour them."""

from __future__ import annotations

import pytest

from llm.options import GenerationOptions, option_unsupported
from llm.providers.base import ProviderConfig, ProviderError
from llm.registry import chat_model_for

ALL = GenerationOptions(
    max_tokens=7,
    temperature=0.1,
    top_p=0.5,
    seed=3,
    stop=("END",),
    presence_penalty=0.2,
    frequency_penalty=-0.2,
    user="u-1",
)


def test_options_round_trip_through_json():
    stored = ALL.as_json()
    assert stored["stop"] == ["END"] and "response_format" not in stored
    assert GenerationOptions.from_json(stored) == ALL
    assert GenerationOptions.from_json(None) == GenerationOptions()


def test_only_options_that_change_the_text_bypass_the_cache():
    assert ALL.shapes_text
    assert not GenerationOptions(user="u-1").shapes_text
    assert not GenerationOptions().shapes_text


def test_an_openai_compatible_server_gets_the_classic_fields_in_the_body():
    config = ProviderConfig(name="c", kind="openai-compatible", model="m", base_url="http://x/v1")
    model = chat_model_for(config, max_tokens=7, options=ALL)
    payload = model._get_request_payload([("user", "hi")])  # type: ignore[attr-defined]
    body = {**payload, **payload.pop("extra_body")}
    assert body["max_tokens"] == 7 and "max_completion_tokens" not in body
    assert (body["temperature"], body["top_p"], body["seed"], body["stop"]) == (
        0.1,
        0.5,
        3,
        ["END"],
    )
    assert (body["presence_penalty"], body["frequency_penalty"], body["user"]) == (0.2, -0.2, "u-1")


def test_openai_itself_gets_max_completion_tokens_and_the_rest():
    config = ProviderConfig(name="o", kind="openai", model="gpt-4o-mini", api_key="sk-test")
    model = chat_model_for(config, max_tokens=7, options=ALL)
    payload = model._get_request_payload([("user", "hi")])  # type: ignore[attr-defined]
    body = {**payload, **payload.pop("extra_body")}
    assert body["max_completion_tokens"] == 7 and body["seed"] == 3 and body["user"] == "u-1"


def test_the_local_model_gets_llama_cpps_sampling_arguments():
    config = ProviderConfig(name="local", kind="local", model="m", options={"model_path": "/x"})
    model = chat_model_for(config, max_tokens=7, options=ALL)
    assert (model.max_tokens, model.temperature) == (7, 0.1)  # type: ignore[attr-defined]
    assert model.sampling == {  # type: ignore[attr-defined]
        "top_p": 0.5,
        "seed": 3,
        "stop": ["END"],
        "presence_penalty": 0.2,
        "frequency_penalty": -0.2,
    }


def test_anthropic_gets_what_it_has_and_refuses_the_rest():
    config = ProviderConfig(name="a", kind="anthropic", model="claude", api_key="sk-ant")
    options = GenerationOptions(max_tokens=7, temperature=0.3, top_p=0.5, stop=("END",))
    model = chat_model_for(config, max_tokens=7, options=options)
    assert (model.temperature, model.top_p, model.stop_sequences) == (  # type: ignore[attr-defined]
        0.3,
        0.5,
        ["END"],
    )
    assert option_unsupported(ALL, "anthropic") == "seed"
    with pytest.raises(ProviderError) as refused:
        chat_model_for(config, max_tokens=7, options=ALL)
    assert refused.value.code == "provider_rejected" and "`seed`" in refused.value.detail


def test_structured_output_goes_to_openai_style_servers_and_the_local_model():
    structured = GenerationOptions(response_format={"type": "json_object"})
    for kind in ("openai", "openai-compatible", "local"):
        assert option_unsupported(structured, kind) is None
    for kind in ("simulated", "anthropic"):
        assert option_unsupported(structured, kind) == "response_format"


async def test_the_simulated_model_stops_at_a_stop_word():
    config = ProviderConfig(name="simulated", kind="simulated", model="simulated")
    model = chat_model_for(config, max_tokens=100, options=GenerationOptions(stop=("**",)))
    text = "".join([str(c.content) async for c in model.astream([("user", "Hi")])])
    assert text == "You said: Hi\n\nHere is a "
