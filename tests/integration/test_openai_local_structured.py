"""LangChain's structured output against a real Daphne whose model is the bundled llama.cpp
one: `with_structured_output(..., method="json_schema")` gets JSON that matches its schema (a
grammar constrains the model, Parley checks the answer); the tool-calling method is refused."""

from __future__ import annotations

import openai
import pytest
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

from tests.harness.embedded import running_parley

pytestmark = pytest.mark.integration


class Verdict(BaseModel):
    answer: str = Field(max_length=30)
    sure: bool


@pytest.fixture(scope="module")
def parley(tmp_path_factory):
    with running_parley(
        tmp_path_factory.mktemp("local-structured"),
        LLM_DEFAULT_PROVIDER="local",
        LLM_MAX_TOKENS="64",
    ) as server:
        yield server


def chat(parley) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=f"{parley.url}/v1",
        api_key=parley.key,
        model="local",
        temperature=0,
        max_retries=0,
        timeout=240,
    )


@pytest.mark.timeout(300)
def test_with_structured_output_json_schema_on_the_local_model(parley):
    result = (
        chat(parley)
        .with_structured_output(Verdict, method="json_schema")
        .invoke("Is the sky blue? Give a short answer.")
    )
    assert isinstance(result, Verdict) and result.answer


def test_the_tool_calling_method_is_refused_naming_tools(parley):
    with pytest.raises(openai.BadRequestError) as refused:
        chat(parley).with_structured_output(Verdict, method="function_calling").invoke("Hi")
    assert refused.value.param == "tools"
