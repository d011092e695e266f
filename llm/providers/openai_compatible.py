"""OpenAI and OpenAI-compatible servers (vLLM, Ollama, llama.cpp's server) via ChatOpenAI."""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import cache, partial
from typing import Any

import httpx2
import openai
from django.conf import settings
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk
from langchain_openai import ChatOpenAI
from openai._exceptions import APIConnectionError, APIError, APITimeoutError
from openai._httpx2 import request_exceptions, timeout_exceptions
from openai._streaming_cleanup import drain_response_async

from llm.options import GenerationOptions, sampling_kwargs
from llm.providers.base import (
    ProviderConfig,
    ProviderError,
    context_refusal,
    provider_error_from,
)
from llm.providers.chunks import TextChunks
from llm.providers.http_clients import async_http_client


def request_timeout(config: ProviderConfig) -> float | tuple[float, float, float, float]:
    """The client's timeout: (connect, read, write, pool) when a connect timeout is set.

    A tuple, not an httpx.Timeout: langchain-openai shares one pooled HTTP client per
    (base_url, timeout) and can only do so for a hashable timeout; an httpx.Timeout would make
    it build a new client (and new TLS connections) for every reply.
    """
    if config.connect_timeout is None:
        return config.timeout
    return (config.connect_timeout, config.timeout, config.timeout, config.timeout)


class SseData:
    """The `data` of each server-sent event in a byte stream, as bytes (the SSE rules the
    SDK's SSEDecoder follows: lines end with CR, LF or CRLF, a blank line ends an event, its
    data lines are joined by LF, comments and other fields are skipped). An event without data
    is none, as SSE says (the SDK hands it on, and then fails to read its empty data as JSON).
    Feeds may be split anywhere, a CRLF too."""

    __slots__ = ("_data", "_rest")

    def __init__(self) -> None:
        self._rest = b""  # an unfinished line (with its CR, when its LF may follow)
        self._data: list[bytes] = []

    def feed(self, raw: bytes) -> list[bytes]:
        buffer = self._rest + raw if self._rest else raw
        if b"\r" in buffer:
            # A CR at the end may be the first half of a CRLF: its line waits for what follows.
            held = buffer.endswith(b"\r")
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if held:
                buffer = buffer[:-1]
            lines = buffer.split(b"\n")
            self._rest = lines.pop() + (b"\r" if held else b"")
        else:
            lines = buffer.split(b"\n")
            self._rest = lines.pop()
        return self._events(lines)

    def finish(self) -> list[bytes]:
        """What the stream's end completes (a last line without its line end, a last event
        without its blank line)."""
        rest, self._rest = self._rest.rstrip(b"\r"), b""
        return self._events([rest, b""] if rest else [b""])

    def _events(self, lines: list[bytes]) -> list[bytes]:
        # A list, not a generator: a read brings about one event, and this runs per read.
        events: list[bytes] = []
        data = self._data
        for line in lines:
            if not line:
                if data:
                    events.append(data[0] if len(data) == 1 else b"\n".join(data))
                    data.clear()
            elif line.startswith(b"data:"):
                value = line[5:]
                data.append(value[1:] if value.startswith(b" ") else value)
        return events


logger = logging.getLogger(__name__)

# What a request says only about its stream, or its length (the diagnosis asks for one token).
_STREAM_ONLY = frozenset({"stream", "stream_options", "max_tokens", "max_completion_tokens"})


class _JsonChunks(openai.AsyncStream[Any]):
    """The SDK's AsyncStream of a chat completion, each chunk the JSON object it is.

    The SDK's own decoding runs an SSE decoder object per line, and a runtime Protocol check
    per chunk to find out that the chunk is to be left as it is: most of what reading a stream
    cost the process generating it, once the HTTP reads are left out (bench/openai_stream_cost.py).
    This reads the same events (SseData) and keeps what the SDK does with them: `[DONE]` ends
    the stream (the rest of an HTTP/1.1 body drained, for the connection's reuse), a chunk
    with an `error` raises the SDK's APIError, a timeout or a broken connection while reading
    raises its APITimeoutError or APIConnectionError, and the response is closed whatever
    happens.

    One async generator between the HTTP body and langchain-openai, not three: every token
    resumes each generator in the chain and comes back out through it, so the SDK's
    pass-through `__aiter__` is left out and the body is read in `__stream__` itself.
    """

    # Asked when the body ended without a single event (see _DictChunks.create).
    diagnose: Callable[[], Awaitable[Any]] | None = None

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterator

    async def __stream__(self) -> AsyncIterator[Any]:
        response = self.response
        events = SseData()
        done = False
        said = False  # an event came
        try:
            try:
                async for raw in response.aiter_bytes():
                    for data in events.feed(raw):
                        said = True
                        if data.startswith(b"[DONE]"):
                            done = True
                            break
                        yield _json_chunk(data, response)
                    if done:
                        break
                else:
                    for data in events.finish():
                        said = True
                        if data.startswith(b"[DONE]"):
                            done = True
                            break
                        yield _json_chunk(data, response)
            except timeout_exceptions() as err:
                raise APITimeoutError(request=response.request) from err
            except request_exceptions() as err:
                raise APIConnectionError(request=response.request) from err
            if done and response.http_version == "HTTP/1.1":
                await drain_response_async(response)
        finally:
            await response.aclose()
        if not said and self.diagnose is not None:
            await self.diagnose()  # raises the refusal the stream could not carry, if any


def _json_chunk(data: bytes, response: httpx2.Response) -> Any:
    """One event's data as the JSON object it is; a chunk with an `error` raises the SDK's
    APIError, as the SDK's own stream does."""
    # As text: json.loads of bytes first guesses their encoding (SSE is UTF-8).
    chunk = json.loads(data.decode("utf-8", "surrogatepass"))
    if chunk.__class__ is dict and chunk.get("error"):
        error = chunk["error"]
        message = error.get("message") if isinstance(error, dict) else None
        raise APIError(
            message=message
            if isinstance(message, str) and message
            else "An error occurred during streaming",
            request=response.request,
            body=error,
        )
    return chunk


class _DictChunks:
    """`AsyncOpenAI.chat.completions` whose streams yield each chunk as the JSON object it is.

    ChatOpenAI streams through the SDK's `create`, which builds a ChatCompletionChunk model per
    chunk (pydantic construct, behind a runtime Protocol check) that langchain-openai dumps
    straight back to a dict: two fifths of a streamed reply's CPU in the process generating it
    (bench/openai_bench.py). The same request is posted through the client's own `post`
    (auth, retries, errors and closing unchanged) and read by _JsonChunks, with the chunks
    left as dicts, which langchain-openai reads as they are. Anything but a stream goes to the
    SDK's `create`.
    """

    def __init__(self, completions: Any, client: openai.AsyncOpenAI) -> None:
        self._completions = completions
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._completions, name)

    async def create(self, **params: Any) -> Any:
        if not params.get("stream"):
            return await self._completions.create(**params)
        options: Any = {"security": {"bearer_auth": True}}  # as the SDK's own create
        for name, option in (
            ("extra_headers", "headers"),
            ("extra_query", "params"),
            ("extra_body", "extra_json"),
            ("timeout", "timeout"),
        ):
            if (value := params.pop(name, None)) is not None:
                options[option] = value
        try:
            stream = await self._client.post(
                "/chat/completions",
                body=params,
                options=options,
                cast_to=object,
                stream=True,
                stream_cls=_JsonChunks,
            )
        except openai.APITimeoutError:
            raise
        except openai.APIConnectionError:
            # Closed with no response: llama-cpp-python's server may also say "too long" so.
            await self._diagnose(params, options)
            raise
        stream.diagnose = partial(self._diagnose, params, options)
        return stream

    async def _diagnose(self, params: dict[str, Any], options: Any) -> None:
        """Why a stream ended before its first event: the same request once more, not streamed
        and for one token. llama-cpp-python's server answers a streamed prompt past its context
        window with 200 and an empty stream (or, at times, a connection closed with no response),
        but refuses it not streamed (400, with the window), which Parley learns from
        (llm/failover.py). Any other answer says nothing: the failure stands as it was (a cut or
        a connection error, retried)."""
        once = {
            **{k: v for k, v in params.items() if k not in _STREAM_ONLY},
            "stream": False,
            "max_tokens": 1,
        }
        for _ in range(2):  # again on a new connection if the stream's was closed under it
            try:
                await self._client.post(
                    "/chat/completions", body=once, options=options, cast_to=object
                )
            except openai.APIConnectionError:
                continue
            except openai.BadRequestError as refused:
                if context_refusal(refused) is not None:
                    raise
            except Exception:
                logger.info("the diagnosis of an empty stream failed", exc_info=True)
            return


class _ChatOpenAI(ChatOpenAI):
    """ChatOpenAI with its most frequent chunk built cheaply: a plain piece of the assistant's
    text (the content of one choice's delta, nothing else said), which is nearly every chunk of
    a reply. The first such chunk of the process is langchain-openai's own; later ones are
    copies of it with their own text (llm/providers/chunks.py; the tests compare them field
    for field). Every other chunk (tool calls, a finish reason, usage, logprobs, an id) goes
    through langchain-openai's own conversion."""

    def _convert_chunk_to_generation_chunk(
        self,
        chunk: dict[Any, Any],
        default_chunk_class: type,
        base_generation_info: dict[Any, Any] | None,
    ) -> ChatGenerationChunk | None:
        choices = chunk.get("choices")
        if (
            choices
            and len(choices) == 1
            and default_chunk_class is AIMessageChunk
            and not base_generation_info
            and not chunk.get("usage")
            and "type" not in chunk
            and self.output_version != "v1"
        ):
            choice = choices[0]
            delta = choice.get("delta")
            if (
                delta
                and not choice.get("finish_reason")
                and not choice.get("logprobs")
                and delta.get("role") in (None, "assistant")
                and delta.get("id") is None
                and not delta.get("function_call")
                and not delta.get("tool_calls")
            ):
                content = delta.get("content") or ""
                if content.__class__ is str:
                    if _text_chunks is not None:
                        return _text_chunks.make(content)
                    return self._text_template(chunk, content)
        return super()._convert_chunk_to_generation_chunk(
            chunk, default_chunk_class, base_generation_info
        )

    def _text_template(self, chunk: dict[Any, Any], content: str) -> ChatGenerationChunk | None:
        """langchain-openai's own chunk for this plain text delta, kept (a snapshot) as the
        template of the next ones."""
        global _text_chunks
        built = super()._convert_chunk_to_generation_chunk(chunk, AIMessageChunk, None)
        if built is not None and built.text == content:
            _text_chunks = TextChunks(built)
        return built


_text_chunks: TextChunks | None = None


# Built models, per event loop, most recently used last. Building one costs a sync and an async
# SDK client, and each new async client runs its platform probe in a thread on its first
# request; a model holds no request's state, so the replies of one loop share it. Per loop:
# pooled connections belong to the loop that opened them.
_built: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, OrderedDict[str, ChatOpenAI]] = (
    weakref.WeakKeyDictionary()
)
BUILT_PER_LOOP = 64  # distinct (deployment, max tokens, options) kept; requests' options vary


def build(
    config: ProviderConfig, *, max_tokens: int, options: GenerationOptions | None = None
) -> BaseChatModel:
    """The deployment's chat model with these options: built once per event loop and reused
    (outside a running loop, a new one each time)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return _build(config, max_tokens=max_tokens, options=options)
    key = json.dumps(
        [
            config.kind,
            config.model,
            config.base_url,
            config.api_key,
            config.timeout,
            config.connect_timeout,
            config.options,
            settings.LLM_HTTP_CLIENT,
            max_tokens,
            options.as_json() if options is not None else None,
        ],
        sort_keys=True,
        default=str,
    )
    models = _built.setdefault(loop, OrderedDict())
    model = models.get(key)
    if model is None:
        model = models[key] = _build(config, max_tokens=max_tokens, options=options)
        if len(models) > BUILT_PER_LOOP:
            models.popitem(last=False)
    else:
        models.move_to_end(key)
    return model


def _build(
    config: ProviderConfig, *, max_tokens: int, options: GenerationOptions | None
) -> ChatOpenAI:
    sampling = sampling_kwargs(options)
    common: dict[str, Any] = dict(
        model=config.model,
        api_key=config.api_key or "not-needed",
        base_url=config.base_url or None,
        timeout=request_timeout(config),
        max_retries=0,  # retries are the router's job, with backoff it controls
        streaming=True,
        stream_usage=True,
        # No per-chunk timeout of its own: llm/failover.py bounds every chunk for every kind, and
        # langchain-openai's wraps each chunk in asyncio.wait_for, which on Python 3.11 drops a
        # cancel arriving as the chunk does (and costs a task per chunk).
        stream_chunk_timeout=0,
        http_async_client=async_http_client(
            config.base_url or "https://api.openai.com/v1", request_timeout(config)
        ),
        temperature=float(sampling.pop("temperature", config.options.get("temperature", 0.7))),
    )
    # The request's own choices go into the body as they are, by OpenAI's names, which
    # compatible servers (vLLM, llama.cpp's, Ollama's) read too.
    body: dict[str, Any] = dict(sampling)
    if options is not None and options.user is not None:
        body["user"] = options.user
    if options is not None and options.response_format is not None:
        body["response_format"] = options.response_format
    if config.kind == "openai":
        # OpenAI's own API takes max_completion_tokens, which ChatOpenAI sends for max_tokens.
        model = _ChatOpenAI(  # type: ignore[call-arg]
            max_tokens=max_tokens, extra_body=body or None, **common
        )
    else:
        # Compatible servers (llama.cpp's among them) ignore max_completion_tokens and would
        # run unbounded; send the classic field they understand.
        model = _ChatOpenAI(extra_body={**body, "max_tokens": max_tokens}, **common)
    model.async_client = _DictChunks(model.async_client, model.root_async_client)
    return model


@cache
def _embeddings_client(base_url: str, api_key: str, timeout: float) -> Any:
    """One pooled client per upstream (its HTTP connections are reused across requests)."""
    return openai.OpenAI(
        base_url=base_url or None, api_key=api_key or "not-needed", timeout=timeout, max_retries=0
    )


def embed(
    config: ProviderConfig, texts: list[str], *, dimensions: int | None = None
) -> tuple[list[list[float]], int | None]:
    """Vectors for `texts` from the deployment's /embeddings (input order), and the prompt
    tokens it reports (None if it reports none). `dimensions` is passed on when asked for; a
    vendor error becomes our ProviderError."""
    client = _embeddings_client(config.base_url, config.api_key, config.timeout)
    extra: dict[str, Any] = {} if dimensions is None else {"dimensions": dimensions}
    try:
        response = client.embeddings.create(
            model=config.model, input=texts, encoding_format="float", **extra
        )
    except Exception as exc:
        raise provider_error_from(exc) from exc
    rows = sorted(response.data, key=lambda row: row.index)
    if len(rows) != len(texts) or any(not isinstance(row.embedding, list) for row in rows):
        raise ProviderError(
            "provider_failed",
            f"The embeddings provider answered {len(rows)} vectors for {len(texts)} inputs.",
            reason="bad_answer",
        )
    usage = getattr(response, "usage", None)
    tokens = getattr(usage, "prompt_tokens", None)
    return [list(row.embedding) for row in rows], tokens if isinstance(tokens, int) else None
