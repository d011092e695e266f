"""/v1/embeddings and CORS against a real Daphne (embedded mode): the official `openai` SDK and
LangChain's OpenAIEmbeddings on the bundled all-MiniLM-L6-v2, an OpenAI-compatible upstream's
embeddings model routed through (tests/fault_server.py), and browser preflights over real HTTP."""

from __future__ import annotations

import httpx
import numpy as np
import openai
import pytest
from langchain_openai import OpenAIEmbeddings

from tests.fault_server import Fail, FaultServer, fake_embedding, fault_server
from tests.harness.embedded import RunningParley, running_parley

pytestmark = pytest.mark.integration

ALLOWED = "https://app.example.com"


@pytest.fixture(scope="module")
def upstream():
    with fault_server() as server:
        yield server


@pytest.fixture(scope="module")
def parley(tmp_path_factory, upstream: FaultServer):
    with running_parley(
        tmp_path_factory.mktemp("openai-embeddings"),
        OPENAI_COMPATIBLE_BASE_URL=upstream.base_url("emb"),
        OPENAI_COMPATIBLE_MODEL="fault-model",
        OPENAI_COMPATIBLE_EMBEDDING_MODEL="fault-embed",
        CORS_ALLOWED_ORIGINS=ALLOWED,
    ) as server:
        yield server


@pytest.fixture
def sdk(parley: RunningParley) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{parley.url}/v1", api_key=parley.key, max_retries=0)


def test_the_sdk_embeds_with_the_bundled_model(sdk):
    # The SDK asks for base64 unless told otherwise, and decodes it itself.
    texts = ["A cat sits on the mat.", "A kitten rests on a rug.", "Bond yields fell sharply."]
    packed = sdk.embeddings.create(model="all-MiniLM-L6-v2", input=texts)
    plain = sdk.embeddings.create(model="all-MiniLM-L6-v2", input=texts, encoding_format="float")
    assert packed.model == "all-MiniLM-L6-v2" and [d.index for d in packed.data] == [0, 1, 2]
    vectors = np.array([d.embedding for d in packed.data], dtype=np.float32)
    np.testing.assert_allclose(vectors, [d.embedding for d in plain.data], atol=1e-7)
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similar, unrelated = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert similar > unrelated
    assert packed.usage.prompt_tokens == packed.usage.total_tokens > 3
    one = sdk.embeddings.create(model="default", input="A cat sits on the mat.")
    np.testing.assert_allclose(one.data[0].embedding, vectors[0], atol=1e-6)


def test_langchain_openai_embeddings_work_unchanged(parley):
    embeddings = OpenAIEmbeddings(
        base_url=f"{parley.url}/v1",
        api_key=parley.key,
        model="all-MiniLM-L6-v2",
        check_embedding_ctx_length=False,
        max_retries=0,
    )
    documents = embeddings.embed_documents(["first document", "second document"])
    query = embeddings.embed_query("first document")
    assert len(documents) == 2 and len(documents[0]) == 384
    np.testing.assert_allclose(query, documents[0], atol=1e-6)


def test_the_sdk_gets_400s_naming_what_cannot_be_done(sdk):
    for kwargs, param in [
        ({"input": [[101, 2023]]}, "input"),
        ({"input": "x", "dimensions": 128}, "dimensions"),
        ({"input": "word " * 300}, "input"),
    ]:
        with pytest.raises(openai.BadRequestError) as refused:
            sdk.embeddings.create(model="all-MiniLM-L6-v2", **kwargs)
        assert refused.value.param == param
    with pytest.raises(openai.NotFoundError):
        sdk.embeddings.create(model="fault-model", input="a chat model")


def test_an_upstreams_embeddings_model_is_routed_to_it(sdk, upstream):
    texts = ["alpha beta", "gamma", "delta epsilon zeta"]
    result = sdk.embeddings.create(model="fault-embed", input=texts)
    np.testing.assert_allclose(
        [d.embedding for d in result.data], [fake_embedding(t) for t in texts], atol=1e-6
    )
    assert result.model == "fault-embed" and result.usage.prompt_tokens == 6  # its own count
    sent = upstream.requests("emb", "embeddings-reply")[-1].body
    assert sent["model"] == "fault-embed" and sent["input"] == texts
    # Its `dimensions` are its business: passed on.
    sized = sdk.embeddings.create(model="fault-embed", input="x", dimensions=4)
    assert len(sized.data[0].embedding) == 4
    upstream.script("emb", Fail(429, retry_after=2))
    with pytest.raises(openai.RateLimitError) as limited:
        sdk.embeddings.create(model="fault-embed", input="x")
    assert limited.value.response.headers["retry-after"] == "2"


def test_models_lists_both_embedding_models(sdk):
    listed = [m.id for m in sdk.models.list()]
    assert {"all-MiniLM-L6-v2", "fault-embed", "simulated"} <= set(listed)


@pytest.mark.parametrize(
    "path", ["/v1/chat/completions", "/v1/embeddings", "/api/v1/conversations"]
)
def test_a_preflight_from_an_allowed_origin_is_answered(parley, path):
    response = httpx.options(
        f"{parley.url}{path}",
        headers={
            "Origin": ALLOWED,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED
    allowed = {h.strip() for h in response.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "x-stainless-os"} <= allowed
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in response.headers


def test_a_preflight_from_another_origin_is_refused(parley):
    for origin in ("https://evil.example.com", "http://app.example.com"):
        response = httpx.options(
            f"{parley.url}/v1/chat/completions",
            headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        )
        assert response.status_code == 403
        assert "access-control-allow-origin" not in response.headers


def test_an_allowed_origins_request_can_read_the_answer(parley):
    response = httpx.post(
        f"{parley.url}/v1/embeddings",
        json={"model": "all-MiniLM-L6-v2", "input": "from a browser"},
        headers={"Origin": ALLOWED, "Authorization": f"Bearer {parley.key}"},
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED
    other = httpx.get(
        f"{parley.url}/v1/models",
        headers={"Origin": "https://evil.example.com", "Authorization": f"Bearer {parley.key}"},
    )
    assert other.status_code == 200 and "access-control-allow-origin" not in other.headers
    # The page itself is no API: no CORS there, whatever the origin.
    page = httpx.options(
        f"{parley.url}/accounts/login/",
        headers={"Origin": ALLOWED, "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in page.headers
