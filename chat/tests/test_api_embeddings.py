"""POST /v1/embeddings through the full ASGI application with the bundled all-MiniLM-L6-v2:
OpenAI's shapes, its refusals, and usage charged like a reply's (ledger, budgets, rate limit)."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest

from accounts.models import Budget, UsageLedger
from llm.embeddings import embedder

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "all-MiniLM-L6-v2"


def error_of(response: httpx.Response) -> dict:
    return response.json()["error"]


async def test_it_embeds_a_list_in_order_with_usage(http):
    texts = ["The cat sat on the mat.", "Quarterly revenue rose by ten percent."]
    response = await http.post("/v1/embeddings", json={"model": MODEL, "input": texts})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list" and body["model"] == MODEL
    assert [row["index"] for row in body["data"]] == [0, 1]
    vectors = np.array([row["embedding"] for row in body["data"]], dtype=np.float32)
    assert vectors.shape == (2, 384)
    np.testing.assert_allclose(vectors, embedder().embed(texts), atol=1e-6)
    usage = body["usage"]
    assert usage["prompt_tokens"] == usage["total_tokens"] > len(texts)


async def test_base64_is_the_same_vector_as_little_endian_float32(http):
    plain = await http.post("/v1/embeddings", json={"model": MODEL, "input": "hello world"})
    packed = await http.post(
        "/v1/embeddings",
        json={"model": "default", "input": "hello world", "encoding_format": "base64"},
    )
    assert packed.status_code == 200, packed.text
    decoded = np.frombuffer(base64.b64decode(packed.json()["data"][0]["embedding"]), "<f4")
    np.testing.assert_array_equal(decoded, np.float32(plain.json()["data"][0]["embedding"]))
    assert packed.json()["model"] == MODEL


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"model": MODEL, "input": [1, 2, 3]}, "input"),
        ({"model": MODEL, "input": [[1, 2], [3]]}, "input"),
        ({"model": MODEL, "input": []}, "input"),
        ({"model": MODEL, "input": ["ok", ""]}, "input"),
        ({"model": MODEL, "input": ["ok", 5]}, "input"),
        ({"model": MODEL}, "input"),
        ({"input": "x"}, "model"),
        ({"model": MODEL, "input": "x", "dimensions": 256}, "dimensions"),
        ({"model": MODEL, "input": "x", "dimensions": "384"}, "dimensions"),
        ({"model": MODEL, "input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"model": MODEL, "input": "x", "temperature": 1}, "temperature"),
        ({"model": MODEL, "input": "word " * 400}, "input"),
    ],
)
async def test_what_it_cannot_do_is_a_400_naming_the_param(http, payload, param):
    response = await http.post("/v1/embeddings", json=payload)
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert not await UsageLedger.objects.aexists()


async def test_matching_dimensions_are_accepted(http):
    response = await http.post(
        "/v1/embeddings", json={"model": MODEL, "input": "x", "dimensions": 384}
    )
    assert response.status_code == 200 and len(response.json()["data"][0]["embedding"]) == 384


async def test_a_chat_model_or_unknown_name_is_404(http):
    for name in ("simulated", "text-embedding-3-small"):
        response = await http.post("/v1/embeddings", json={"model": name, "input": "x"})
        assert response.status_code == 404 and error_of(response)["code"] == "model_not_found"
        assert MODEL in error_of(response)["message"]


async def test_models_lists_the_embedding_model(http):
    listed = [m["id"] for m in (await http.get("/v1/models")).json()["data"]]
    assert listed[0] != MODEL and MODEL in listed
    assert (await http.get(f"/v1/models/{MODEL}")).json()["id"] == MODEL


async def test_usage_is_settled_in_the_ledger(http, organisation, owner):
    response = await http.post("/v1/embeddings", json={"model": MODEL, "input": ["a b c", "d"]})
    tokens = response.json()["usage"]["prompt_tokens"]
    entry = await UsageLedger.objects.aget()
    assert (entry.state, entry.used_tokens) == (UsageLedger.State.SETTLED, tokens)
    assert (entry.organisation_id, entry.user_id, entry.message_id) == (
        organisation.pk,
        owner.pk,
        None,
    )


async def test_a_spent_budget_is_429_insufficient_quota(http, organisation):
    await Budget.objects.acreate(organisation=organisation, period="month", max_tokens=3)
    refused = await http.post("/v1/embeddings", json={"model": MODEL, "input": "one two three"})
    assert refused.status_code == 429 and error_of(refused)["code"] == "insufficient_quota"
    assert not await UsageLedger.objects.aexists()


async def test_embeddings_share_the_send_rate_limit(http, settings):
    settings.WS_RATE_SENDS_PER_USER = "1/m"
    first = await http.post("/v1/embeddings", json={"model": MODEL, "input": "x"})
    assert first.status_code == 200
    refused = await http.post("/v1/embeddings", json={"model": MODEL, "input": "x"})
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert error_of(refused)["code"] == "rate_limit_exceeded"


async def test_it_needs_a_key_and_post(http):
    anonymous = await http.post(
        "/v1/embeddings", json={"model": MODEL, "input": "x"}, headers={"Authorization": ""}
    )
    assert anonymous.status_code == 401
    assert (await http.get("/v1/embeddings")).status_code == 405
