"""A prompt that fits its model's context window: the oldest turns left out, the reply's room kept.

A model reads at most its context window of tokens, prompt and reply together; past it, a
provider refuses the request (OpenAI and vLLM: 400), fails it (llama.cpp's server: an empty
stream or a closed connection) or raises (the bundled model). A conversation that grew past
that would fail at every new send. So where a deployment's window is known (`context_window` on
the deployment, the bundled model's `n_ctx`), the prompt is fitted before it is sent, as chat
products do: the system prompt and the question always go, then as many of the latest turns as
fit; the reply keeps room for at least a quarter of the window (or its whole cap, if smaller).
A question that does not fit on its own is refused up front (`context_length_exceeded`), at
send time where possible, so nothing is saved for a reply that could only fail.

Tokens are estimated (llm/accounting.py: ~4 characters a token, plus a chat template's few per
message), and a twentieth of the window is kept back for the estimate's error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from core.errors import ParleyError
from llm.accounting import estimate_tokens
from llm.catalog import alias_window, default_alias

# A chat template wraps each message in a few tokens of its own (role markers, separators).
TEMPLATE_TOKENS_PER_MESSAGE = 8
# The share of the window kept back for the estimate's error (~4 characters a token is an
# average: code, numbers and other languages take more tokens).
ESTIMATE_MARGIN = 0.05
# The reply's room: at least this share of the window, or its whole cap if that is smaller.
REPLY_SHARE = 0.25


def message_tokens(message: BaseMessage | str) -> int:
    """A message's estimated tokens as a chat template sends it."""
    text = message if isinstance(message, str) else str(message.content)
    return estimate_tokens(text) + TEMPLATE_TOKENS_PER_MESSAGE


@dataclass(frozen=True)
class Room:
    """What a window leaves: tokens the prompt may take, and the reply's guaranteed room."""

    window: int
    reply: int

    @classmethod
    def of(cls, window: int, *, max_tokens: int) -> Room:
        return cls(window=window, reply=min(max_tokens, int(window * REPLY_SHARE)))

    @property
    def prompt(self) -> int:
        return self.window - self.reply - int(self.window * ESTIMATE_MARGIN)

    def reply_cap(self, prompt_tokens: int, max_tokens: int) -> int:
        """The reply's token cap once the prompt is known: its own cap, unless the window ends
        sooner (a provider refuses prompt + max_tokens past the window)."""
        left = self.window - prompt_tokens - int(self.window * ESTIMATE_MARGIN)
        return max(self.reply, min(max_tokens, left))


def too_long(*, needed: int, room: Room) -> ParleyError:
    return ParleyError(
        "context_length_exceeded",
        f"The message is too long for this model: about {needed} tokens with the system "
        f"prompt, and the model reads at most {room.prompt} before its reply "
        f"(a context window of {room.window}). Shorten it or choose a model with a larger "
        "context window.",
        extra={"context_window": room.window},
    )


def question_check(
    *, window: int | None, system: Sequence[str], question: str, max_tokens: int
) -> None:
    """Refuse, before anything is saved, a question that cannot fit the window even without
    any history (context_length_exceeded). `system`: the system prompt's parts."""
    if not window:
        return
    room = Room.of(window, max_tokens=max_tokens)
    needed = message_tokens("\n\n".join(part for part in system if part)) + message_tokens(question)
    if needed > room.prompt:
        raise too_long(needed=needed, room=room)


def send_check(*, alias: str, system_prompt: str, question: str, max_tokens: int | None) -> None:
    """question_check for a send on `alias` ("" the default model), with Parley's system
    prompt and the conversation's, and the reply's cap (LLM_MAX_TOKENS when not asked)."""
    question_check(
        window=alias_window(alias or default_alias()),
        system=(settings.LLM_SYSTEM_PROMPT, system_prompt),
        question=question,
        max_tokens=max_tokens or settings.LLM_MAX_TOKENS,
    )


@dataclass(frozen=True)
class Fitted:
    messages: list[BaseMessage]
    max_tokens: int
    left_out: int  # history messages left out (the oldest)


def prompt_fit(messages: list[BaseMessage], *, window: int | None, max_tokens: int) -> Fitted:
    """`messages` (system first, the question last) fitted to `window`: the oldest turns left
    out until the rest fits, the reply's cap lowered if the window ends before it. Raises
    context_length_exceeded when the system prompt and the question alone do not fit."""
    if not window or not messages:
        return Fitted(messages=messages, max_tokens=max_tokens, left_out=0)
    room = Room.of(window, max_tokens=max_tokens)
    head = [messages[0]] if isinstance(messages[0], SystemMessage) else []
    body = messages[len(head) :]
    question, history = body[-1:], body[:-1]
    needed = sum(message_tokens(m) for m in (*head, *question))
    if needed > room.prompt:
        raise too_long(needed=needed, room=room)
    kept: list[BaseMessage] = []
    for message in reversed(history):  # newest first
        cost = message_tokens(message)
        if needed + cost > room.prompt:
            break
        kept.append(message)
        needed += cost
    kept.reverse()
    # A turn begins with the user: an assistant message left first would answer nothing.
    while kept and not isinstance(kept[0], HumanMessage):
        needed -= message_tokens(kept.pop(0))
    return Fitted(
        messages=[*head, *kept, *question],
        max_tokens=room.reply_cap(needed, max_tokens),
        left_out=len(history) - len(kept),
    )
