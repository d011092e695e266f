"""A deterministic provider for tests and load tests: fixed text at a configured rate."""

from __future__ import annotations

import asyncio
import re
import time
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
        started = loop.time()
        for index, token in enumerate(tokens):
            if index:
                due = started + index / self.tokens_per_second
                await asyncio.sleep(max(0.0, due - loop.time()))
            yield _text_chunk(self._emit(token))
        yield ChatGenerationChunk(message=self._last(prompt_tokens, len(tokens), finish))


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
