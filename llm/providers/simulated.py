"""A deterministic provider for tests and load tests: fixed text at a configured rate."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import re
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from llm.options import GenerationOptions
from llm.providers.base import ProviderConfig
from llm.providers.chunks import TextChunks


def simulated_reply(prompt: str) -> str:
    """The reply the simulated model gives to a prompt: it quotes it and adds some Markdown."""
    return (
        f"You said: {prompt}\n\n"
        "Here is a **simulated** answer with a list:\n\n"
        "- first point\n- second point\n\n"
        '```python\ndef greet(name):\n    return f"Hello, {name}!"\n```\n'
    )


def split_tokens(text: str) -> list[str]:
    """Split text into word-ish tokens that join back to exactly the same text."""
    return re.findall(r"\s*\S+|\s+", text)


class SimulatedChatModel(BaseChatModel):
    tokens_per_second: float = 40.0
    first_token_delay: float = 0.2
    max_tokens: int | None = None
    stop_words: list[str] = []  # the reply ends before the first of them, as a model's would
    # Benchmarks only (bench/stream_bench.py): each token becomes its own emit time,
    # "<epoch seconds, 6 decimals> ", so a client can measure emit -> receive per token.
    stamp_tokens: bool = False

    def _emit(self, token: str) -> str:
        return f"{time.time():.6f} " if self.stamp_tokens else token

    @property
    def _llm_type(self) -> str:
        return "parley-simulated"

    def _tokens(self, messages: list[BaseMessage]) -> tuple[list[str], int, str]:
        """The reply's tokens, the prompt's token count, and the finish reason (as OpenAI's:
        "length" when max_tokens cut the reply, else "stop")."""
        prompt = str(messages[-1].content) if messages else ""
        text = simulated_reply(prompt)
        cuts = [text.find(word) for word in self.stop_words if word and word in text]
        if cuts:
            text = text[: min(cuts)]
        tokens = split_tokens(text)
        finish = "stop"
        if self.max_tokens is not None and len(tokens) > self.max_tokens:
            tokens, finish = tokens[: self.max_tokens], "length"
        prompt_tokens = sum(len(split_tokens(str(m.content))) for m in messages)
        return tokens, prompt_tokens, finish

    def _last(self, prompt_tokens: int, completion_tokens: int, finish: str) -> AIMessageChunk:
        """The stream's last chunk: no text, the usage and the finish reason."""
        return AIMessageChunk(
            content="",
            usage_metadata=UsageMetadata(
                input_tokens=prompt_tokens,
                output_tokens=completion_tokens,
                total_tokens=prompt_tokens + completion_tokens,
            ),
            response_metadata={"finish_reason": finish},
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        tokens, prompt_tokens, finish = self._tokens(messages)
        last = self._last(prompt_tokens, len(tokens), finish)
        message = AIMessage(
            content="".join(tokens),
            usage_metadata=last.usage_metadata,
            response_metadata=last.response_metadata,
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        tokens, prompt_tokens, finish = self._tokens(messages)
        time.sleep(self.first_token_delay)
        for index, token in enumerate(tokens):
            if index:
                time.sleep(1 / self.tokens_per_second)
            yield ChatGenerationChunk(message=AIMessageChunk(content=self._emit(token)))
        yield ChatGenerationChunk(message=self._last(prompt_tokens, len(tokens), finish))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        # Sleeps on the event loop, not in a thread, so hundreds of streams cost no threads.
        # Paced on a schedule (token i is due i / rate after the first), as a model server
        # emits, so the time our own code takes per token does not slow the "model" down.
        tokens, prompt_tokens, finish = self._tokens(messages)
        await asyncio.sleep(self.first_token_delay)
        loop = asyncio.get_running_loop()
        pacer = _pacer_of(loop)
        started = loop.time()
        for index, token in enumerate(tokens):
            if index:
                await pacer.until(started + index / self.tokens_per_second)
            yield _text_chunk(self._emit(token))
        yield ChatGenerationChunk(message=self._last(prompt_tokens, len(tokens), finish))


# A token due this soon after a firing of the pacer goes with it: the streams of a load test
# due within a millisecond take one timer, not one each.
PACE_SLACK = 0.001


class Pacer:
    """When the simulated streams of one event loop emit their next tokens: one loop timer, for
    the earliest, as chat/replies/coalesce.py's FlushSchedule does for flush windows.

    A stand-in model's own cost, not a provider's: `asyncio.sleep` per token is a timer handle
    made, pushed on the loop's heap (compared in Python there), popped and cancelled, for every
    token of every stream; at hundreds of streams it was a large part of a load test's worker
    CPU per token (bench/reply_cost.py, docs/benchmarks.md round 8) that a real model spends
    in its own process. Here a wait is a future in a heap of plain tuples; one firing wakes
    every stream whose token is due within PACE_SLACK of it (a token may come that much early,
    never late)."""

    __slots__ = ("__weakref__", "_due", "_heap", "_loop", "_tickets", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._heap: list[tuple[float, int, asyncio.Future[None]]] = []
        self._tickets = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._due = math.inf  # when the timer fires

    async def until(self, due: float) -> None:
        """Return at `due` (loop time), or at once (after a turn of the loop) if it passed."""
        loop = self._loop
        if due <= loop.time():
            await asyncio.sleep(0)
            return
        waiter = loop.create_future()
        heapq.heappush(self._heap, (due, next(self._tickets), waiter))
        if due < self._due:
            if self._timer is not None:
                self._timer.cancel()
            self._due = due
            self._timer = loop.call_at(due, self._fire)
        await waiter  # a cancelled wait leaves its entry, skipped when due

    def _fire(self) -> None:
        self._timer, self._due = None, math.inf
        heap = self._heap
        until = self._loop.time() + PACE_SLACK
        while heap and heap[0][0] <= until:
            waiter = heapq.heappop(heap)[2]
            if not waiter.done():
                waiter.set_result(None)
        if heap:
            self._due = heap[0][0]
            self._timer = self._loop.call_at(self._due, self._fire)


_pacers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Pacer] = weakref.WeakKeyDictionary()


def _pacer_of(loop: asyncio.AbstractEventLoop) -> Pacer:
    pacer = _pacers.get(loop)
    if pacer is None:
        pacer = _pacers[loop] = Pacer(loop)
    return pacer


# At thousands of simulated tokens a second the stand-in model's chunks were a quarter of a load
# test's worker (bench/reply_cost.py), CPU a real provider spends in its own client instead:
# copies of a validated template (llm/providers/chunks.py).
_text_chunk = TextChunks(ChatGenerationChunk(message=AIMessageChunk(content=""))).make


def build(
    config: ProviderConfig, *, max_tokens: int, options: GenerationOptions | None = None
) -> BaseChatModel:
    return SimulatedChatModel(
        stop_words=list(options.stop) if options and options.stop else [],
        tokens_per_second=float(config.options.get("tokens_per_second", 40.0)),
        first_token_delay=float(config.options.get("first_token_delay", 0.2)),
        max_tokens=max_tokens,
        stamp_tokens=bool(config.options.get("stamp_tokens", False)),
    )
