"""Documents as the database holds them; imported into chat/models.py so Django finds them.

A document is attached to one conversation (only its owner retrieves from it) or belongs to
one of its organisation's shared collections (every member may pick the collection for a
conversation). Its original bytes are kept in the row (bounded by DOCUMENTS_MAX_BYTES), so any
worker can ingest it and any replica can serve it without a shared volume.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from accounts.models import Organisation, UsageLedger

# The vector store's namespace of document chunks (llm/vectors/): keys are DocumentChunk ids.
VECTOR_NAMESPACE = "documents"


class Collection(models.Model):
    """An organisation's shared set of documents; conversations pick the ones to draw on."""

    organisation = models.ForeignKey(
        "accounts.Organisation", on_delete=models.CASCADE, related_name="collections"
    )
    name = models.CharField(max_length=200)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The conversations that retrieve from it (picked by their owners).
    conversations = models.ManyToManyField(
        "chat.Conversation", blank=True, related_name="collections"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["organisation", "name"]
        constraints = [
            models.UniqueConstraint(fields=["organisation", "name"], name="unique_collection_name")
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def scope(self) -> str:
        return f"collection:{self.pk}"


class Document(models.Model):
    class Kind(models.TextChoices):
        PDF = "pdf", "PDF"
        MARKDOWN = "markdown", "Markdown"
        TEXT = "text", "Plain text"
        HTML = "html", "HTML"
        DOCX = "docx", "Word (DOCX)"

    class Status(models.TextChoices):
        PENDING = "pending"  # stored, waiting for its ingestion
        PROCESSING = "processing"  # being split and embedded
        READY = "ready"  # retrievable
        FAILED = "failed"  # ingestion failed: `error` says why; no chunk is kept

    organisation = models.ForeignKey(
        "accounts.Organisation", on_delete=models.CASCADE, related_name="documents"
    )
    conversation = models.ForeignKey(
        "chat.Conversation",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="documents",
    )
    collection = models.ForeignKey(
        Collection, null=True, blank=True, on_delete=models.CASCADE, related_name="documents"
    )
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    name = models.CharField(max_length=255)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    content_type = models.CharField(max_length=100)
    size = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64)
    data = models.BinaryField()
    pages = models.PositiveIntegerField(default=0)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    chunks_total = models.PositiveIntegerField(default=0)
    chunks_done = models.PositiveIntegerField(default=0)
    # Tokens the embedding model read (charged to the uploader's budgets).
    embedding_tokens = models.PositiveIntegerField(default=0)
    # The budget reservation of the ingestion under way (chat/documents/ingestion.py). A worker
    # that dies mid-ingestion leaves it reserved; the next ingestion of the document releases it.
    reservation = models.ForeignKey(
        UsageLedger,
        null=True,
        blank=True,
        editable=False,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    ingested_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(conversation__isnull=True) ^ Q(collection__isnull=True),
                name="document_in_one_scope",
            ),
            # Re-uploading the same bytes to the same place finds the first document.
            models.UniqueConstraint(
                fields=["conversation", "sha256"],
                condition=Q(conversation__isnull=False),
                name="unique_document_in_conversation",
            ),
            models.UniqueConstraint(
                fields=["collection", "sha256"],
                condition=Q(collection__isnull=False),
                name="unique_document_in_collection",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def scope(self) -> str:
        """The vector store's scope of its chunks."""
        if self.conversation_id is not None:
            return f"conversation:{self.conversation_id}"
        return f"collection:{self.collection_id}"

    @property
    def progress(self) -> float:
        """0..1: how much of the ingestion is done."""
        if self.status == self.Status.READY:
            return 1.0
        return self.chunks_done / self.chunks_total if self.chunks_total else 0.0


class DocumentPage(models.Model):
    """A page's extracted text (a PDF page; the whole text of other kinds is page 1)."""

    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="page_texts")
    number = models.PositiveIntegerField()
    text = models.TextField()

    class Meta:
        ordering = ["document", "number"]
        constraints = [
            models.UniqueConstraint(fields=["document", "number"], name="unique_document_page")
        ]

    def __str__(self) -> str:
        return f"{self.document} p. {self.number}"


class DocumentChunk(models.Model):
    """A passage that is embedded and retrieved: where it comes from (page, character offsets
    in that page's text) and its text. Its vector is in the vector store under its id."""

    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="chunks")
    position = models.PositiveIntegerField()  # order within the document
    page = models.PositiveIntegerField()
    start = models.PositiveIntegerField()
    end = models.PositiveIntegerField()
    text = models.TextField()
    tokens = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["document", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["document", "position"], name="unique_document_chunk_position"
            )
        ]

    def __str__(self) -> str:
        return f"{self.document} #{self.position} (p. {self.page})"


class OrganisationDocuments(Organisation):
    """Organisations as the documents admin lists them: the switch, counts, the purge."""

    class Meta:
        proxy = True
        verbose_name = "organisation's documents"
        verbose_name_plural = "documents per organisation"
