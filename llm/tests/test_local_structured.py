"""Structured output on the bundled llama.cpp model: OpenAI's response_format becomes a
llama.cpp grammar, and what comes out is checked against what was asked for."""

from __future__ import annotations

import json

import pytest

from llm.options import GenerationOptions
from llm.providers.base import ProviderError
from llm.providers.local import (
    ChatLocalLlama,
    build,
    llama_response_format,
    structured_output_check,
)
from llm.registry import provider_configs

SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string", "maxLength": 30}, "sure": {"type": "boolean"}},
    "required": ["answer", "sure"],
    "additionalProperties": False,
}
AS_JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "Reply", "schema": SCHEMA}}


def test_response_formats_become_llama_cpp_grammars():
    assert llama_response_format(None) is None
    assert llama_response_format({"type": "text"}) is None
    assert llama_response_format({"type": "json_object"}) == {"type": "json_object"}
    assert llama_response_format(AS_JSON_SCHEMA) == {"type": "json_object", "schema": SCHEMA}


@pytest.mark.parametrize(
    ("text", "response_format", "complaint"),
    [
        ('{"answer": "yes"', {"type": "json_object"}, "not valid JSON"),
        ("[1, 2]", {"type": "json_object"}, "not a JSON object"),
        ('{"answer": "yes"}', AS_JSON_SCHEMA, "'sure' is a required property"),
        ('{"answer": 3, "sure": true}', AS_JSON_SCHEMA, "does not match the schema"),
    ],
)
def test_an_answer_that_is_not_what_was_asked_is_refused(text, response_format, complaint):
    with pytest.raises(ProviderError) as refused:
        structured_output_check(text, response_format)
    assert refused.value.code == "provider_failed" and complaint in refused.value.detail


def test_a_matching_answer_passes():
    structured_output_check('{"answer": "yes", "sure": true}', AS_JSON_SCHEMA)
    structured_output_check('{"anything": [1]}', {"type": "json_object"})


def test_the_local_model_answers_in_the_json_schema_asked_for():
    response_format = AS_JSON_SCHEMA
    model = build(
        provider_configs()["local"],
        max_tokens=48,
        options=GenerationOptions(temperature=0.0, response_format=response_format),
    )
    assert isinstance(model, ChatLocalLlama)
    answer = model.invoke("Is the sky blue? Answer in JSON.")
    finish = answer.response_metadata.get("finish_reason")
    assert finish in ("stop", "length")
    if finish == "stop":  # a reply cut by max_tokens says so instead
        value = json.loads(str(answer.content))
        assert set(value) == {"answer", "sure"} and isinstance(value["sure"], bool)
