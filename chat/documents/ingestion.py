"""A stored document made retrievable: split its pages, embed the chunks in batches, store
chunks and vectors; progress and failure on the document's row.

`document_ingest` is the one function: production runs it as a Celery task
(chat/documents/tasks.py, queue DOCUMENTS_QUEUE), embedded mode in one background thread of the
server process (like replies, chat/replies/dispatch.py; one thread, so ingestion never takes
more than one core from the chat). It is idempotent: only a `pending` document is claimed.
Chunks and vectors are written in one transaction at the end, so a failure (or a worker that
dies) leaves none behind: the document is `failed` with the reason, or stays `processing`
until its task is redelivered.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from langchain_text_splitters import RecursiveCharacterTextSplitter

from accounts.models import UsageLedger
from accounts.quotas import QuotaExceeded, ledger_settle, quota_reserve, tokens_estimate
from chat.documents.models import VECTOR_NAMESPACE, Document, DocumentChunk
from llm.embeddings import Vectors, embedder
from llm.vectors import VectorItem, vector_store

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Piece:
    page: int
    start: int  # offsets in the page's text
    end: int
    text: str


def pages_split(pages: list[tuple[int, str]]) -> list[Piece]:
    """Chunks of DOCUMENTS_CHUNK_CHARS with DOCUMENTS_CHUNK_OVERLAP, split at paragraphs, then
    lines, then sentences and words; never across a page, so each cites one page."""
    splitter = RecursiveCharacterTextSplitter(
        chunk_size=settings.DOCUMENTS_CHUNK_CHARS,
        chunk_overlap=settings.DOCUMENTS_CHUNK_OVERLAP,
        separators=["\n\n", "\n", ". ", " ", ""],
        add_start_index=True,
    )
    pieces: list[Piece] = []
    for number, text in pages:
        if not text.strip():
            continue
        for chunk in splitter.create_documents([text]):
            start = int(chunk.metadata.get("start_index", -1))
            if start < 0:  # not found verbatim (it never is here): point at the page
                start = 0
            body = chunk.page_content
            pieces.append(Piece(number, start, start + len(body), body))
    return pieces


def document_ingest(*, document_id: int) -> str:
    """Ingest one pending document; returns its final status (or "skipped")."""
    claimed = Document.objects.filter(pk=document_id, status=Document.Status.PENDING).update(
        status=Document.Status.PROCESSING
    )
    if not claimed:
        return "skipped"
    document = Document.objects.defer("data").get(pk=document_id)
    if document.reservation_id is not None:
        # An earlier ingestion's worker died after reserving (its document stayed
        # `processing` until queued again): give that reservation back. A settled one is left.
        ledger_settle(entry_id=document.reservation_id, used_tokens=None)
    reservation = None
    try:
        pages = list(document.page_texts.order_by("number").values_list("number", "text"))
        pieces = pages_split(pages)
        Document.objects.filter(pk=document_id).update(chunks_total=len(pieces), chunks_done=0)
        if document.uploaded_by_id is not None:
            # Embedding is work the budgets count: reserve a high estimate, settle the real
            # count. Over budget: the document fails with the budget's own message.
            reservation = quota_reserve(
                user_id=document.uploaded_by_id,
                organisation_id=document.organisation_id,
                prompt_tokens=tokens_estimate(sum(len(p.text) for p in pieces)),
                max_tokens=0,
            )
            Document.objects.filter(pk=document_id).update(reservation=reservation)
        model = embedder()
        batch = max(1, settings.DOCUMENTS_EMBED_BATCH)
        vectors: list[Vectors] = []
        tokens = 0
        for at in range(0, len(pieces), batch):
            texts = [p.text for p in pieces[at : at + batch]]
            vectors.extend(model.embed(texts))
            tokens += sum(model.count_tokens(texts))
            Document.objects.filter(pk=document_id).update(chunks_done=at + len(texts))
        with transaction.atomic():
            if not Document.objects.filter(pk=document_id).exists():
                return "deleted"  # deleted while it was being embedded
            chunks = DocumentChunk.objects.bulk_create(
                [
                    DocumentChunk(
                        document_id=document_id,
                        position=position,
                        page=p.page,
                        start=p.start,
                        end=p.end,
                        text=p.text,
                    )
                    for position, p in enumerate(pieces)
                ],
                batch_size=500,
            )
            if any(c.pk is None for c in chunks):  # a backend that returns no ids
                chunks = list(DocumentChunk.objects.filter(document_id=document_id))
            vector_store(VECTOR_NAMESPACE).add(
                [
                    VectorItem(key=chunk.pk, scope=document.scope, vector=vector)
                    for chunk, vector in zip(chunks, vectors, strict=True)
                ]
            )
            Document.objects.filter(pk=document_id).update(
                status=Document.Status.READY,
                chunks_done=len(pieces),
                embedding_tokens=tokens,
                ingested_at=timezone.now(),
                error="",
            )
        if reservation is not None:
            ledger_settle(entry_id=reservation.pk, used_tokens=tokens)
            # Named in the usage reports and dashboard: embedding work, not a reply.
            UsageLedger.objects.filter(pk=reservation.pk).update(
                provider="embeddings", model=getattr(model, "name", "embeddings")
            )
        return Document.Status.READY
    except Exception as exc:
        if reservation is not None:
            ledger_settle(entry_id=reservation.pk, used_tokens=None)
        reason = (
            exc.detail if isinstance(exc, QuotaExceeded) else "The document could not be processed."
        )
        if not isinstance(exc, QuotaExceeded):
            logger.exception("ingestion of document %s failed", document_id)
        Document.objects.filter(pk=document_id).update(status=Document.Status.FAILED, error=reason)
        return Document.Status.FAILED
