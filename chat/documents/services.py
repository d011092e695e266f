"""Writes: upload (checked, deduplicated by hash, text extracted before anything is stored),
delete (with chunks and vectors), purge an organisation's documents, collections."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction

from accounts.models import Organisation, User
from chat.documents.extract import DocumentRefused, kind_of, pages_extract
from chat.documents.models import (
    VECTOR_NAMESPACE,
    Collection,
    Document,
    DocumentChunk,
    DocumentPage,
)
from chat.documents.tasks import ingestion_dispatch
from chat.errors import ChatError
from chat.models import Conversation
from llm.vectors import vector_store

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Upload:
    document: Document
    created: bool  # False: the same bytes were already there (deduplicated by SHA-256)


def documents_enabled_check(*, organisation: Organisation) -> None:
    if not organisation.documents_enabled:
        raise DocumentRefused(
            "documents_disabled", f"Documents are switched off for {organisation.name}."
        )


def document_size_check(*, name: str, size: int) -> None:
    if size > settings.DOCUMENTS_MAX_BYTES:
        raise DocumentRefused(
            "document_too_large",
            f"{name} is {size:,} bytes; the limit is {settings.DOCUMENTS_MAX_BYTES:,}.",
        )


def document_upload(
    *,
    by: User | None,
    name: str,
    data: bytes,
    content_type: str = "",
    conversation: Conversation | None = None,
    collection: Collection | None = None,
) -> Upload:
    """Store a document in one scope and have it ingested, or refuse it with the reason.

    Everything that can refuse it (switch, size, kind, pages, readability) runs before the
    first write; the rows are then written in one transaction, and ingestion starts after it
    commits. The same bytes uploaded again to the same place return the first document.
    """
    if (conversation is None) == (collection is None):
        raise ChatError("invalid", "A document goes to a conversation or to a collection.")
    owner = conversation if conversation is not None else collection
    assert owner is not None
    organisation = owner.organisation
    documents_enabled_check(organisation=organisation)
    name = (name or "document").strip()[:255] or "document"
    document_size_check(name=name, size=len(data))
    if not data:
        raise DocumentRefused("document_unreadable", f"{name} is empty.")
    kind = kind_of(name, content_type)
    if kind is None or kind not in settings.DOCUMENTS_KINDS:
        accepted = ", ".join(settings.DOCUMENTS_KINDS)
        raise DocumentRefused(
            "document_unsupported", f"{name}: this kind of file is not accepted ({accepted})."
        )
    sha256 = hashlib.sha256(data).hexdigest()
    scope: dict[str, Conversation | Collection | None] = (
        {"conversation": conversation} if conversation else {"collection": collection}
    )
    if (existing := Document.objects.filter(sha256=sha256, **scope).first()) is not None:
        return Upload(existing, created=False)
    pages = pages_extract(kind, data, max_pages=settings.DOCUMENTS_MAX_PAGES)
    if len(pages) > settings.DOCUMENTS_MAX_PAGES:
        raise DocumentRefused(
            "document_too_many_pages",
            f"{name} has {len(pages)} pages; the limit is {settings.DOCUMENTS_MAX_PAGES}.",
        )
    try:
        with transaction.atomic():
            document = Document.objects.create(
                organisation=organisation,
                uploaded_by=by,
                name=name,
                kind=kind,
                content_type=content_type or kind,
                size=len(data),
                sha256=sha256,
                data=data,
                pages=len(pages),
                **scope,
            )
            DocumentPage.objects.bulk_create(
                [
                    DocumentPage(document=document, number=number, text=text)
                    for number, text in enumerate(pages, start=1)
                ]
            )
            transaction.on_commit(lambda: ingestion_dispatch(document.pk))
    except IntegrityError:
        # The same bytes were uploaded concurrently: the other upload's document stands.
        return Upload(Document.objects.get(sha256=sha256, **scope), created=False)
    return Upload(document, created=True)


def document_delete(*, document: Document) -> None:
    """Delete a document, its pages, chunks and vectors together (chat/documents/signals.py
    forgets the vectors, also when a cascade deletes the document)."""
    with transaction.atomic():
        document.delete()


def documents_delete(*, documents: Iterable[Document]) -> int:
    count = 0
    for document in documents:
        document_delete(document=document)
        count += 1
    return count


def organisation_documents_purge(*, organisation: Organisation) -> int:
    """Delete every document of an organisation (attached and shared), with their chunks and
    vectors; its collections stay, empty. Returns how many documents went."""
    with transaction.atomic():
        scopes = {
            d.scope
            for d in Document.objects.filter(organisation=organisation).only(
                "conversation_id", "collection_id"
            )
        }
        if scopes:
            vector_store(VECTOR_NAMESPACE).delete_scopes(scopes)
        DocumentChunk.objects.filter(document__organisation=organisation).delete()
        _, deleted = Document.objects.filter(organisation=organisation).delete()
    count = deleted.get(Document._meta.label, 0)
    logger.info("purged %s documents of organisation %s", count, organisation.pk)
    return count


def collection_create(*, organisation: Organisation, name: str, by: User | None) -> Collection:
    documents_enabled_check(organisation=organisation)
    name = name.strip()
    if not name:
        raise ChatError("invalid", "A collection needs a name.")
    try:
        with transaction.atomic():
            return Collection.objects.create(organisation=organisation, name=name, created_by=by)
    except IntegrityError:
        raise ChatError(
            "conflict", f"{organisation.name} already has a collection {name!r}."
        ) from None


def conversation_collections_set(
    *, conversation: Conversation, collections: Iterable[Collection]
) -> list[Collection]:
    """The shared collections a conversation's replies retrieve from (its own organisation's)."""
    picked = list(collections)
    if any(c.organisation_id != conversation.organisation_id for c in picked):
        raise ChatError("not_found", "No such collection in this conversation's organisation.")
    Collection.conversations.through.objects.filter(conversation=conversation).delete()
    conversation.collections.add(*picked)
    return picked
