"""Where ingestion runs: a Celery task in production, the process's ingestion thread in
embedded mode (the same switch as replies, GENERATION_BACKEND); chat/documents/ingestion.py
does the work."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor

from celery import shared_task
from django.conf import settings
from django.db import close_old_connections

from chat.documents.ingestion import document_ingest


@shared_task(
    name="chat.documents.ingest", acks_late=True, reject_on_worker_lost=True, ignore_result=True
)
def ingest_document(document_id: int) -> str:
    """Split, embed and store one uploaded document."""
    return document_ingest(document_id=document_id)


_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def ingestion_dispatch(document_id: int) -> Future[str] | None:
    """Start ingesting a stored document: a Celery task on DOCUMENTS_QUEUE (CPU-bound, like
    local inference), or the process's one ingestion thread."""
    global _executor
    if settings.GENERATION_BACKEND == "celery":
        ingest_document.apply_async((document_id,), queue=settings.DOCUMENTS_QUEUE)
        return None
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="documents-ingest")
        return _executor.submit(_ingest_in_thread, document_id)


def _ingest_in_thread(document_id: int) -> str:
    try:
        return document_ingest(document_id=document_id)
    finally:
        close_old_connections()
