"""Documents over REST (multipart upload, status, file, delete, collections) and the whole
path: upload → ingestion → a reply that cites the passage, in its REST message."""

from __future__ import annotations

import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from chat import services as chat_services
from chat.documents.ingestion import document_ingest
from chat.documents.models import Document
from chat.tests.conftest import API
from chat.tests.documents_fixtures import pdf_bytes

TEXT = b"The office wifi password is written on the whiteboard in room 4."


@pytest.fixture
def conversation(owner, organisation):
    return chat_services.conversation_create(owner=owner, title="Docs", organisation=organisation)


def upload(api: Client, name: str, data: bytes, **fields) -> dict:
    response = api.post(f"{API}/documents", {"file": SimpleUploadedFile(name, data), **fields})
    return {"http": response.status_code, **response.json()}


def test_upload_over_rest_stores_the_document_and_a_repeat_is_deduplicated(api, conversation):
    first = upload(api, "wifi.txt", TEXT, conversation=conversation.pk)
    assert first["http"] == 201
    assert (
        first["kind"] == "text" and first["pages"] == 1 and first["conversation"] == conversation.pk
    )
    again = upload(api, "copy.txt", TEXT, conversation=conversation.pk)
    assert again["http"] == 200 and again["id"] == first["id"]
    detail = api.get(f"{API}/documents/{first['id']}").json()
    assert detail["status"] in ("pending", "processing", "ready")
    assert api.get(f"{API}/documents/{first['id']}/file").content == TEXT


@pytest.mark.parametrize(
    ("name", "data", "status", "code"),
    [
        ("tool.exe", b"MZ", 415, "document_unsupported"),
        ("broken.pdf", b"%PDF-1.4 garbage", 422, "document_unreadable"),
    ],
)
def test_refused_uploads_get_a_clear_error(api, conversation, name, data, status, code):
    body = upload(api, name, data, conversation=conversation.pk)
    assert body["http"] == status and body["error"]["code"] == code
    assert body["error"]["detail"]
    assert not Document.objects.exists()


def test_an_upload_over_the_size_limit_is_a_413(api, conversation, settings):
    settings.DOCUMENTS_MAX_BYTES = 5
    body = upload(api, "a.txt", b"123456", conversation=conversation.pk)
    assert body["http"] == 413 and body["error"]["code"] == "document_too_large"


def test_upload_needs_exactly_one_place(api, conversation):
    assert upload(api, "a.txt", b"x")["http"] == 400


def test_outsider_cannot_see_fetch_or_delete_a_document(api, conversation, outsider):
    document = upload(api, "wifi.txt", TEXT, conversation=conversation.pk)
    stranger = Client()
    stranger.force_login(outsider)
    for path in (f"/documents/{document['id']}", f"/documents/{document['id']}/file"):
        assert stranger.get(API + path).status_code == 404
    assert stranger.delete(f"{API}/documents/{document['id']}").status_code == 404
    assert stranger.get(f"/documents/{document['id']}/").status_code == 404
    assert stranger.get(f"{API}/documents").json()["count"] == 0
    assert api.delete(f"{API}/documents/{document['id']}").status_code == 204
    assert not Document.objects.exists()


def test_collections_are_created_listed_and_picked(api, conversation, outsider):
    created = api.post(f"{API}/collections", {"name": "Handbook"}, content_type="application/json")
    assert created.status_code == 201
    collection = created.json()["id"]
    assert (
        upload(api, "hr.pdf", pdf_bytes(["Leave: 25 days."]), collection=collection)["http"] == 201
    )
    assert api.get(f"{API}/collections").json()["results"][0]["documents"] == 1
    picked = api.put(
        f"{API}/conversations/{conversation.pk}/collections",
        {"collections": [collection]},
        content_type="application/json",
    )
    assert picked.status_code == 200 and [c["id"] for c in picked.json()] == [collection]
    stranger = Client()
    stranger.force_login(outsider)
    assert stranger.get(f"{API}/collections").json()["count"] == 0


@pytest.mark.django_db(transaction=True)
def test_a_reply_cites_the_uploaded_document_over_rest(api, conversation):
    document = upload(api, "wifi.txt", TEXT, conversation=conversation.pk)
    deadline = time.monotonic() + 60
    while api.get(f"{API}/documents/{document['id']}").json()["status"] != "ready":
        assert time.monotonic() < deadline, "the in-process ingestion did not finish"
        document_ingest(document_id=document["id"])  # no-op once the background thread has it
        time.sleep(0.05)
    sent = api.post(
        f"{API}/conversations/{conversation.pk}/messages",
        {"text": "Where is the wifi password written?"},
        content_type="application/json",
    ).json()
    while (reply := api.get(f"{API}/messages/{sent['reply']}").json())["status"] not in (
        "complete",
        "failed",
    ):
        assert time.monotonic() < deadline, "the reply did not finish"
        time.sleep(0.05)
    assert reply["status"] == "complete"
    (citation,) = reply["citations"]
    assert citation["document"] == document["id"] and citation["page"] == 1
    page = api.get(citation["url"])  # a key is not a session: the page wants a sign-in
    assert page.status_code == 302


def test_a_file_larger_than_the_api_body_limit_is_taken_up_to_the_documents_limit(
    api, conversation, settings
):
    # The API's 1 MiB body limit (HTTP_MAX_BODY_BYTES) is for JSON and forms, not files.
    data = ("A line of a long handbook.\n" * 80_000).encode()
    assert len(data) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    assert upload(api, "long.txt", data, conversation=conversation.pk)["http"] == 201


def test_a_member_cannot_delete_a_shared_document_someone_else_uploaded(
    api, owner, member, organisation
):
    created = api.post(f"{API}/collections", {"name": "Shared"}, content_type="application/json")
    document = upload(api, "a.md", b"shared notes", collection=created.json()["id"])
    colleague = Client()
    colleague.force_login(member)
    assert colleague.get(f"{API}/documents/{document['id']}").status_code == 200
    refused = colleague.delete(f"{API}/documents/{document['id']}")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "permission_denied"
    assert Document.objects.filter(pk=document["id"]).exists()
