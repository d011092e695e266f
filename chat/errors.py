"""The chat's own errors; what each code means on every edge is in core/errors.py."""

from __future__ import annotations

from core.errors import ParleyError


class ChatError(ParleyError):
    """A request the chat cannot carry out (a bad frame, a message not found, …)."""


class ReplyNotStarted(ChatError):
    """A send, edit or regenerate whose messages are saved but whose reply could not be handed
    to its generator (the broker down): `not_started`, retryable. The same request again (same
    client_id) starts that reply (chat/replies/dispatch.py reply_dispatch_again)."""

    def __init__(self, *, retry_after: int) -> None:
        super().__init__(
            "not_started",
            "Your message is saved, but its reply could not be started; send the same request "
            f"again (same client_id or Idempotency-Key) in {retry_after} s to start it.",
            extra={"retry_after": retry_after},
        )
