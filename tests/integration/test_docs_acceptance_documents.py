"""docs/documents.md's promises that test_documents_topology.py (an upload ingested by the
worker and cited, nginx's limits) leaves unchecked, checked through nginx on the production
topology (nginx → two Daphne replicas → Redis ← a Celery worker ingesting, PostgreSQL), with a
program's API key as docs/api.md gives it:

- every refusal of the upload table, in its status and code, with nothing stored;
- the same bytes again (also two uploads racing on two replicas) return the first document;
- every accepted kind is ingested by the worker, and the embedding is charged to the ledger;
- a document and its passages go together; an outsider reads nothing; collections are picked
  only from the conversation's own organisation.

The limits are set low (DOCUMENTS_MAX_PAGES=3, DOCUMENTS_MAX_BYTES=2 MB) so small files pass
them; nginx's own 11 MB is unchanged, so Parley judges the size.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from chat.tests.documents_fixtures import docx_bytes, pdf_bytes
from tests.harness.processes import manage
from tests.harness.sockets import sign_in_cookie
from tests.harness.topology import Topology, production_topology

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PASSWORD = "correct horse battery staple"
MAX_BYTES = 2_000_000
TIMEOUT = 120.0

PEOPLE = """
import json
from accounts.services import account_create, api_key_create
made = {{}}
account_create(username="doc-root", password={password!r}, is_superuser=True)
for name in ("owner", "outsider", "switched-off", "crash"):
    user = account_create(username=f"doc-{{name}}", password={password!r})
    organisation = user.personal_organisation
    made[name] = {{
        "key": api_key_create(user=user, organisation=organisation, name="docs").raw,
        "organisation": organisation.pk,
    }}
    if name == "switched-off":
        organisation.documents_enabled = False
        organisation.save()
print(json.dumps(made))
"""


@dataclass
class Site:
    topo: Topology
    made: dict[str, Any]

    def api(self, who: str = "owner", base: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=base or self.topo.base,
            headers={"Authorization": f"Bearer {self.made[who]['key']}"},
            timeout=60,
        )

    def count(self, sql: str, *params: Any) -> int:
        ((value,),) = self.topo.query(sql, *params)
        return int(value)


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    env = {
        "DOCUMENTS_MAX_PAGES": "3",
        "DOCUMENTS_MAX_BYTES": str(MAX_BYTES),
        "DOCUMENTS_EMBED_BATCH": "8",
    }
    with production_topology(replicas=2, env=env, name="acceptance-documents") as topo:
        printed = manage("shell", "-c", PEOPLE.format(password=PASSWORD), env=topo.env)
        with topo.logs_on_failure():
            yield Site(topo, json.loads(printed.strip().splitlines()[-1]))


def conversation(api: httpx.Client) -> int:
    made = api.post("/api/v1/conversations", json={"title": "documents"})
    assert made.status_code == 201, made.text
    return int(made.json()["id"])


def upload(
    api: httpx.Client, name: str, content: bytes, content_type: str, **where: Any
) -> httpx.Response:
    return api.post("/api/v1/documents", data=where, files={"file": (name, content, content_type)})


def until_ready(api: httpx.Client, document: int, timeout: float = TIMEOUT) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = api.get(f"/api/v1/documents/{document}").json()
        assert body["status"] != "failed", body["error"]
        if body["status"] == "ready":
            return dict(body)
        assert time.monotonic() < deadline, f"not ingested within {timeout}s: {body}"
        time.sleep(0.2)


def test_every_refusal_of_the_upload_table_has_its_status_and_code_and_stores_nothing(
    site: Site,
) -> None:
    with site.api() as api:
        chat = conversation(api)
        cases = [
            (
                ("four.pdf", pdf_bytes(["a", "b", "c", "d"]), "application/pdf"),
                422,
                "document_too_many_pages",
            ),
            (
                ("tool.exe", b"MZ\x90\x00binary", "application/octet-stream"),
                415,
                "document_unsupported",
            ),
            # Over DOCUMENTS_MAX_BYTES, under nginx's 11 MB: Parley's own 413.
            (("big.txt", b"a" * (MAX_BYTES + 1000), "text/plain"), 413, "document_too_large"),
            (
                ("latin1.txt", "café crème".encode("latin-1"), "text/plain"),
                422,
                "document_unreadable",
            ),
            (
                ("broken.docx", b"PK\x03\x04 not really a zip", "application/octet-stream"),
                422,
                "document_unreadable",
            ),
        ]
        for (name, content, content_type), status, code in cases:
            refused = upload(api, name, content, content_type, conversation=chat)
            assert refused.status_code == status, (name, refused.status_code, refused.text[:300])
            error = refused.json()["error"]
            assert error["code"] == code and error["detail"], (name, error)
        at_the_limit = upload(
            api, "three.pdf", pdf_bytes(["a", "b", "c"]), "application/pdf", conversation=chat
        )
        assert at_the_limit.status_code == 201, at_the_limit.text
    stored = site.count("SELECT count(*) FROM chat_document WHERE conversation_id = %s", chat)
    assert stored == 1  # only the one that passed


def test_documents_switched_off_for_an_organisation_refuse_uploads_with_403(site: Site) -> None:
    with site.api("switched-off") as api:
        chat = conversation(api)
        refused = upload(api, "notes.md", b"# Notes\n\nhello", "text/markdown", conversation=chat)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "documents_disabled"
    assert site.count("SELECT count(*) FROM chat_document WHERE conversation_id = %s", chat) == 0


async def test_the_same_bytes_again_return_the_first_document_even_when_racing(
    site: Site,
) -> None:
    """ "The same bytes uploaded again to the same conversation or collection return the first
    document (SHA-256; HTTP 200 instead of 201), also when two uploads race": one upload on
    each replica at once, then a third through nginx."""
    with site.api() as api:
        chat = conversation(api)
    content = f"Race notes {uuid.uuid4().hex}\n\nThe same bytes twice.".encode()
    bases = [f"http://127.0.0.1:{port}" for port in site.topo.daphne_ports]

    def one(base: str) -> httpx.Response:
        with site.api(base=base) as api:
            return upload(api, "race.txt", content, "text/plain", conversation=chat)

    answers = await asyncio.gather(*(asyncio.to_thread(one, base) for base in bases))
    assert sorted(a.status_code for a in answers) == [200, 201], [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    with site.api() as api:
        again = upload(api, "renamed.txt", content, "text/plain", conversation=chat)
        assert again.status_code == 200 and again.json()["id"] == answers[0].json()["id"]
        elsewhere = upload(api, "race.txt", content, "text/plain", conversation=conversation(api))
        assert elsewhere.status_code == 201 and elsewhere.json()["id"] != again.json()["id"]
    assert site.count("SELECT count(*) FROM chat_document WHERE conversation_id = %s", chat) == 1


def test_every_kind_is_ingested_by_the_worker_and_its_embedding_is_charged(site: Site) -> None:
    """Markdown, text, HTML and DOCX (PDF: test_documents_topology.py) become `ready`; "one
    usage-ledger entry per ingestion (without a message, provider `embeddings`, model
    `all-MiniLM-L6-v2`) ... settled to the tokens the model read, which
    Document.embedding_tokens keeps too"."""
    files = [
        ("guide.md", b"# Guide\n\nThe **kettle** is in the north kitchen.", "text/markdown"),
        ("plain.txt", "The bicycle shed opens at 07:00.".encode("utf-16"), "text/plain"),
        (
            "page.html",
            b"<html><head><style>p{}</style><script>var hidden=1</script></head>"
            b"<body><p>Visitors sign in at the front desk.</p></body></html>",
            "text/html",
        ),
        (
            "memo.docx",
            docx_bytes(["The printer on floor two needs toner."]),
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ),
    ]
    with site.api() as api:
        chat = conversation(api)
        ids = []
        for name, content, content_type in files:
            made = upload(api, name, content, content_type, conversation=chat)
            assert made.status_code == 201, (name, made.text)
            assert made.json()["status"] == "pending"
            ids.append(made.json()["id"])
        ready = [until_ready(api, document) for document in ids]
        assert [d["kind"] for d in ready] == ["markdown", "text", "html", "docx"]
        assert all(d["progress"] == 1 and d["chunks_done"] == d["chunks_total"] > 0 for d in ready)
    html_text = site.topo.query(
        "SELECT p.text FROM chat_documentpage p WHERE p.document_id = %s", ids[2]
    )
    assert "front desk" in html_text[0][0] and "hidden" not in html_text[0][0]
    # Every ingestion of the organisation so far has ended (the other tests' too): one settled
    # entry per ready document, charged what the model read.
    organisation = site.made["owner"]["organisation"]
    deadline = time.monotonic() + TIMEOUT
    while site.count(
        "SELECT count(*) FROM chat_document WHERE organisation_id = %s "
        "AND status IN ('pending', 'processing')",
        organisation,
    ):
        assert time.monotonic() < deadline, "ingestions never ended"
        time.sleep(0.2)
    ((documents, read),) = site.topo.query(
        "SELECT count(*), sum(embedding_tokens) FROM chat_document "
        "WHERE organisation_id = %s AND status = 'ready'",
        organisation,
    )
    ((entries, charged, with_message),) = site.topo.query(
        "SELECT count(*), sum(used_tokens), count(message_id) FROM accounts_usageledger "
        "WHERE organisation_id = %s AND provider = 'embeddings' AND model = 'all-MiniLM-L6-v2' "
        "AND state = 'settled'",
        organisation,
    )
    assert (entries, charged, with_message) == (documents, read, 0)
    tokens = site.topo.query("SELECT embedding_tokens FROM chat_document WHERE id = ANY(%s)", ids)
    assert all(t > 0 for (t,) in tokens), tokens


def test_deleting_a_document_takes_its_passages_and_an_outsider_reads_nothing(
    site: Site,
) -> None:
    with site.api() as api:
        chat = conversation(api)
        made = upload(
            api,
            "secret.md",
            b"# Secret\n\nThe vault code is 4711.",
            "text/markdown",
            conversation=chat,
        )
        assert made.status_code == 201, made.text
        document = until_ready(api, made.json()["id"])
    doc_id = document["id"]
    assert site.count("SELECT count(*) FROM chat_documentchunk WHERE document_id = %s", doc_id) > 0

    # An outsider: neither the API with their key, nor the pages with their session.
    with site.api("outsider") as outsider:
        for path in (f"/api/v1/documents/{doc_id}", f"/api/v1/documents/{doc_id}/file"):
            assert outsider.get(path).status_code == 404, path
        listed = outsider.get("/api/v1/documents", params={"conversation": chat})
        assert listed.status_code in (200, 404)
        if listed.status_code == 200:
            assert listed.json()["results"] == []
        assert outsider.delete(f"/api/v1/documents/{doc_id}").status_code in (403, 404)
    cookie = sign_in_cookie(site.topo.base, "doc-outsider", PASSWORD)
    with httpx.Client(base_url=site.topo.base, headers={"Cookie": cookie}, timeout=30) as page:
        assert page.get(document["url"]).status_code == 404
        assert page.get(f"/documents/{doc_id}/file").status_code == 404

    with site.api() as api:
        assert api.get(f"/api/v1/documents/{doc_id}/file").content.endswith(b"4711.")
        assert api.delete(f"/api/v1/documents/{doc_id}").status_code == 204
        assert api.get(f"/api/v1/documents/{doc_id}").status_code == 404
    for table in ("chat_documentchunk", "chat_documentpage"):
        left = site.count(f"SELECT count(*) FROM {table} WHERE document_id = %s", doc_id)
        assert left == 0, table


def test_a_conversation_picks_only_collections_of_its_own_organisation(site: Site) -> None:
    with site.api("outsider") as outsider:
        theirs = outsider.post(
            "/api/v1/collections", json={"name": f"theirs-{uuid.uuid4().hex[:6]}"}
        )
        assert theirs.status_code == 201, theirs.text
    with site.api() as api:
        name = f"handbook-{uuid.uuid4().hex[:6]}"
        ours = api.post("/api/v1/collections", json={"name": name})
        assert ours.status_code == 201, ours.text
        assert api.post("/api/v1/collections", json={"name": name}).status_code == 409
        chat = conversation(api)
        path = f"/api/v1/conversations/{chat}/collections"
        foreign = api.put(path, json={"collections": [theirs.json()["id"]]})
        assert foreign.status_code == 404, foreign.text
        assert api.get(path).json() == []
        picked = api.put(path, json={"collections": [ours.json()["id"]]})
        assert picked.status_code == 200, picked.text
        assert [c["id"] for c in picked.json()] == [ours.json()["id"]]
        assert [c["id"] for c in api.get(path).json()] == [ours.json()["id"]]
        assert api.put(path, json={"collections": []}).json() == []
        # A collection of another organisation is invisible to the owner's key.
        mine = {c["id"] for c in api.get("/api/v1/collections").json()["results"]}
        assert ours.json()["id"] in mine and theirs.json()["id"] not in mine


# --- a worker that dies mid-ingestion (kills the module's worker: keep it last) -------------


def admin_retry_ingestion(site: Site, document: int) -> None:
    """What an operator does: Documents → select → *Ingest failed or stuck documents again*."""
    with httpx.Client(base_url=site.topo.base, timeout=60) as admin:
        admin.get("/admin/login/")
        origin = {"Origin": site.topo.base, "Referer": f"{site.topo.base}/admin/"}
        signed_in = admin.post(
            "/admin/login/?next=/admin/",
            data={
                "username": "doc-root",
                "password": PASSWORD,
                "csrfmiddlewaretoken": admin.cookies["csrftoken"],
                "next": "/admin/",
            },
            headers=origin,
        )
        assert signed_in.status_code == 302, signed_in.text[:300]
        done = admin.post(
            "/admin/chat/document/",
            data={
                "action": "retry_ingestion",
                "_selected_action": str(document),
                "index": "0",
                "csrfmiddlewaretoken": admin.cookies["csrftoken"],
            },
            headers=origin,
        )
        assert done.status_code == 302, done.text[:300]


@pytest.mark.timeout(900)
def test_a_document_whose_worker_died_is_ingested_again_and_charged_once(site: Site) -> None:
    """docs/documents.md: "A worker that dies mid-ingestion leaves the document `processing`
    ... queue it again from the admin with the same action"; "Any failure: ... the reservation
    released", and "one usage-ledger entry per ingestion ... settled to the tokens the model
    read": the dead worker's reservation must not stay charged to the budgets."""
    organisation = site.made["crash"]["organisation"]
    # ~150 passages: embedded in 19 batches of 8 (DOCUMENTS_EMBED_BATCH, above), each a
    # progress step, so the worker is caught between two of them.
    lines = [f"Line {i}: crate {i} of aisle {i % 97} holds part {i * 7}." for i in range(1500)]
    content = "\n".join(lines).encode()
    with site.api("crash") as api:
        made = upload(api, "inventory.txt", content, "text/plain", conversation=conversation(api))
        assert made.status_code == 201, made.text
        document = made.json()["id"]
        deadline = time.monotonic() + TIMEOUT
        while True:  # embedding has begun (its reservation is made before the first batch)
            body = api.get(f"/api/v1/documents/{document}").json()
            assert body["status"] in ("pending", "processing"), body
            if body["status"] == "processing" and 0 < body["chunks_done"] < body["chunks_total"]:
                break
            assert time.monotonic() < deadline, body
            time.sleep(0.02)
    site.topo.kill("worker")
    try:
        reserved = site.count(
            "SELECT count(*) FROM accounts_usageledger WHERE organisation_id = %s "
            "AND state = 'reserved'",
            organisation,
        )
        assert reserved == 1  # the dead worker's
        (status,) = site.topo.query("SELECT status FROM chat_document WHERE id = %s", document)[0]
        assert status == "processing"
    finally:
        site.topo.restore()
    admin_retry_ingestion(site, document)
    with site.api("crash") as api:
        ready = until_ready(api, document, timeout=600)
    assert ready["chunks_done"] == ready["chunks_total"]
    rows = site.topo.query(
        "SELECT state, used_tokens FROM accounts_usageledger WHERE organisation_id = %s",
        organisation,
    )
    assert [state for state, _ in rows].count("settled") == 1, rows
    assert "reserved" not in {state for state, _ in rows}, rows
    ((counted,),) = site.topo.query(
        "SELECT tokens FROM accounts_usagecounter WHERE organisation_id = %s "
        "AND user_id IS NULL AND period = 'day' AND start = (now() AT TIME ZONE 'UTC')::date",
        organisation,
    )
    assert counted == sum(used for state, used in rows if state == "settled") > 0, rows
