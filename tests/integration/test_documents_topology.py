"""Documents on the production topology, for real: nginx → two Daphne replicas, a Celery
worker (worker-remote, as compose.yaml runs it) ingesting on DOCUMENTS_QUEUE, PostgreSQL,
Redis. An upload through nginx is ingested by the worker and cited by a reply; nginx passes
uploads over the API's 1 MB body limit to Parley and answers one over its own limit in the
API's JSON error shape."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from chat.tests.documents_fixtures import pdf_bytes
from tests.harness.processes import manage
from tests.harness.topology import Topology, production_topology

USERNAME = "e2e-docs"
PASSWORD = "correct horse battery staple"
TIMEOUT = 120.0
KEY = (
    "from accounts.models import User; from accounts.services import api_key_create; "
    f"u = User.objects.get(username={USERNAME!r}); "
    "print(api_key_create(user=u, organisation=u.personal_organisation, name='docs').raw)"
)


@pytest.fixture(scope="module")
def topology() -> Iterator[Topology]:
    with production_topology(replicas=2, user=(USERNAME, PASSWORD), name="docs") as topo:
        yield topo


def until(check, what: str):
    deadline = time.monotonic() + TIMEOUT
    while (value := check()) is None:
        assert time.monotonic() < deadline, f"{what} within {TIMEOUT}s"
        time.sleep(0.2)
    return value


@pytest.mark.integration
@pytest.mark.timeout(300, func_only=True)
def test_an_upload_is_ingested_by_celery_and_cited_through_nginx(topology: Topology) -> None:
    key = manage("shell", "-c", KEY, env=topology.env).strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {key}"}
    with (
        topology.logs_on_failure(),
        httpx.Client(base_url=topology.base, headers=headers, timeout=30) as api,
    ):
        chat = api.post("/api/v1/conversations", json={"title": "docs"}).json()["id"]
        handbook = pdf_bytes(
            [
                "Welcome to the handbook.",
                "The office wifi password is written on the whiteboard in room 4.",
            ]
        )
        files = {"file": ("handbook.pdf", handbook, "application/pdf")}
        created = api.post("/api/v1/documents", data={"conversation": chat}, files=files)
        assert created.status_code == 201, created.text
        document = created.json()

        def ready() -> dict | None:
            body = api.get(f"/api/v1/documents/{document['id']}").json()
            assert body["status"] != "failed", body["error"]
            return body if body["status"] == "ready" else None

        assert until(ready, "ingested by the Celery worker")["pages"] == 2

        sent = api.post(
            f"/api/v1/conversations/{chat}/messages",
            json={"text": "Where is the wifi password written?"},
        ).json()

        def final() -> dict | None:
            body = api.get(f"/api/v1/messages/{sent['reply']}").json()
            return body if body["status"] in ("complete", "incomplete", "failed") else None

        reply = until(final, "the reply")
        assert reply["status"] in ("complete", "incomplete"), reply
        assert {(c["document"], c["page"]) for c in reply["citations"]} >= {(document["id"], 2)}
        cited = next(c for c in reply["citations"] if c["page"] == 2)

        # Larger than the API's 1 MB body limit: nginx lets it through, Parley judges it.
        garbage = {"file": ("big.pdf", b"%PDF-1.4\n" + b"0" * 1_500_000, "application/pdf")}
        unreadable = api.post("/api/v1/documents", data={"conversation": chat}, files=garbage)
        assert unreadable.status_code == 422
        assert unreadable.json()["error"]["code"] == "document_unreadable"
        # Over nginx's own limit: the same JSON shape.
        huge = {"file": ("huge.txt", b"a" * 12_000_000, "text/plain")}
        refused = api.post("/api/v1/documents", data={"conversation": chat}, files=huge)
        assert refused.status_code == 413
        assert refused.json()["error"]["code"] == "document_too_large"

    # The citation's page, for the signed-in owner, through nginx.
    with httpx.Client(
        base_url=topology.base, headers={"Cookie": topology.cookie}, timeout=30
    ) as browser:
        page = browser.get(cited["url"])
        assert page.status_code == 200
        assert "document-reader__passage--cited" in page.text
        assert "whiteboard in room 4" in page.text
