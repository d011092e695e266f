from __future__ import annotations

from django.conf import settings
from django.db import models


class Conversation(models.Model):
    class Origin(models.TextChoices):
        """Where it was started: people's chats (the page) are listed apart from programs'."""

        PAGE = "page", "Page"  # the web page (a signed-in person, session socket)
        WEBSOCKET = "websocket", "WebSocket program"  # a program's socket (API key or JWT)
        REST = "rest", "REST API"
        OPENAI = "openai", "OpenAI endpoint"

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations"
    )
    # The tenant it belongs to; private to its owner within it (chat/selectors.py).
    organisation = models.ForeignKey(
        "accounts.Organisation", on_delete=models.CASCADE, related_name="conversations"
    )
    title = models.CharField(max_length=200, default="New chat")
    origin = models.CharField(max_length=16, choices=Origin.choices, default=Origin.PAGE)
    # The conversation's own instructions, given to the model after Parley's system prompt
    # (chat/replies/prompt.py); e.g. an OpenAI-compatible request's system messages.
    system_prompt = models.TextField(blank=True, default="")
    # Kept at the top of its owner's conversation list (the page's sidebar).
    pinned = models.BooleanField(default=False)
    # Set once a document is attached to it or a shared collection picked for it
    # (chat/documents/signals.py), and never cleared: a reply looks for passages only then
    # (chat/documents/retrieval.py), so one in a conversation that never had any costs no query.
    retrieves = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    class Meta:
        ordering = ["-updated_at"]
        indexes = [
            models.Index(fields=["owner", "-updated_at"]),
            models.Index(fields=["organisation", "owner", "-updated_at"]),
        ]

    def __str__(self) -> str:
        return self.title

    @property
    def group_name(self) -> str:
        """The channel-layer group every socket watching this conversation joins."""
        return f"conversation.{self.pk}"


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"

    class Status(models.TextChoices):
        PENDING = "pending"
        STREAMING = "streaming"
        COMPLETE = "complete"
        # Final, but cut short by the token cap (the provider's finish reason was "length").
        INCOMPLETE = "incomplete"
        FAILED = "failed"
        CANCELLED = "cancelled"

    FINAL_STATUSES = (Status.COMPLETE, Status.INCOMPLETE, Status.FAILED, Status.CANCELLED)

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    role = models.CharField(max_length=16, choices=Role.choices)
    # Who wrote a user message (null for the assistant); idempotent sends are keyed on it.
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="messages",
    )
    content = models.TextField(blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, db_index=True)
    # Position in the reply text (in code points) up to which `content` is saved; deltas on the
    # wire carry the same kind of seq, like TCP sequence numbers (see docs/protocol.md).
    seq = models.PositiveIntegerField(default=0)
    # Chosen by the client for idempotent sends: a repeat by the same author in the same
    # organisation finds the first message, even when the first send also created the
    # conversation. The same client_id in another organisation is another message.
    client_id = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001 - unique when set
    # The conversation's organisation, kept on messages that carry a client_id: the scope of
    # that id's uniqueness (a constraint cannot reach through the conversation).
    organisation = models.ForeignKey(
        "accounts.Organisation",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
    )
    # The user message an assistant reply answers; regenerating adds a reply to the same one.
    reply_to = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="replies"
    )
    # Replaced by a regenerate or an edit: kept for the record, left out of pages and prompts.
    superseded = models.BooleanField(default=False)
    provider = models.CharField(max_length=64, blank=True, default="")
    model = models.CharField(max_length=128, blank=True, default="")
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    tokens_estimated = models.BooleanField(
        default=False, help_text="Counts were estimated, not reported by the provider."
    )
    # Cost from the configured prices (llm/accounting.py); null when no price is configured.
    cost = models.DecimalField(max_digits=14, decimal_places=8, null=True, blank=True)
    # How the router got this reply: attempts, deployments tried, failovers (llm/router.py).
    routing = models.JSONField(default=dict, blank=True)
    # The document passages the reply was given (chat/documents/retrieval.py): document, page,
    # chunk; in its `done` event and REST message, shown as citations.
    citations = models.JSONField(default=list, blank=True)
    error_code = models.CharField(max_length=64, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    # Refreshed by the generator every few seconds; a streaming reply whose heartbeat stops is
    # reaped (marked failed, retryable) instead of hanging forever.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    first_token_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["status", "heartbeat_at"], name="message_status_heartbeat")]
        constraints = [
            models.UniqueConstraint(
                fields=["author", "organisation", "client_id"],
                condition=models.Q(client_id__isnull=False),
                name="unique_client_id_per_author_organisation",
            ),
            models.CheckConstraint(
                condition=models.Q(client_id__isnull=True) | models.Q(organisation__isnull=False),
                name="client_id_has_organisation",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.role} #{self.pk} ({self.status})"

    @property
    def is_final(self) -> bool:
        return self.status in self.FINAL_STATUSES

    @property
    def first_token_ms(self) -> int | None:
        if self.started_at and self.first_token_at:
            return int((self.first_token_at - self.started_at).total_seconds() * 1000)
        return None

    @property
    def total_ms(self) -> int | None:
        if self.started_at and self.finished_at:
            return int((self.finished_at - self.started_at).total_seconds() * 1000)
        return None


class UsageReport(Message):
    """Charged usage per user and day, as an admin page (chat/admin.py); the figures come
    from the usage ledger (accounts/usage.py), not from messages, which a deletion takes."""

    class Meta:
        proxy = True
        verbose_name = "usage per user and day"
        verbose_name_plural = "usage per user and day"


from chat.documents.models import *  # noqa: E402, F403 - documents (chat/documents/)
