"""The chat's own errors; what each code means on every edge is in core/errors.py."""

from __future__ import annotations

from core.errors import ParleyError


class ChatError(ParleyError):
    """A request the chat cannot carry out (a bad frame, a message not found, …)."""
