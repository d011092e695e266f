"""Stream one reply from whichever deployment can answer it, within timeouts and retry bounds.

The rules (docs/routing.md says the same for operators):
- Before the first token, failover is silent: a deployment that fails, times out or is skipped
  is replaced by the next in the route plan, and the user sees only the answer.
- After the first token, there is no silent splice: the reply ends failed with the retryable
  `interrupted` error, keeping the partial text (regenerate asks again).
- A request the provider refuses (400, content filter) is not retried anywhere; a deployment
  whose credentials are refused (401/403) or missing is dropped for this reply and the next one
  is tried.
- When every candidate of a round failed with retryable errors, the next round waits an
  exponential backoff with full jitter (at least the smallest Retry-After); attempts and total
  time are bounded (llm/retry.py).
- When no candidate may even be tried (breakers open, rate limits, Retry-After pauses), the
  reply fails at once with `provider_unavailable`: never a hang.
- Timeouts: the first text must come within the deployment's first-token timeout (measured from
  the request, so connecting counts), every later chunk within its inter-token timeout.
- A stream that ends without the provider's finish reason was cut (a proxy or server closed it
  cleanly mid-reply): before any text that is a retryable failure like any other, after text it
  is `interrupted`. A finish reason of `length` (the token cap) is recorded: the reply is
  incomplete, not complete.
- Stopping: the caller sets `stop` (an asyncio.Event) and the stream ends at the next chunk, or
  at once while waiting for one; the provider's stream, and with it its HTTP response, is
  closed from inside this task. Stopping never relies on a task cancel crossing LangChain, the
  SDKs and httpx: Python 3.11's `asyncio.wait_for` (which langchain-openai puts around every
  chunk unless told not to) drops a cancel that arrives as its inner await completes.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

from asgiref.sync import sync_to_async
from langchain_core.language_models._utils import _normalize_messages
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.tracers.context import _tracing_v2_is_enabled

from core import hops
from core.observability import metrics
from core.observability.context import traced
from llm import router
from llm.breaker import Permit
from llm.catalog import DeploymentConfig, window_learnt
from llm.options import GenerationOptions
from llm.providers.base import ProviderError, provider_error_from
from llm.retry import RetryPolicy
from llm.successes import successes_of

logger = logging.getLogger(__name__)

TextSink = Callable[[str], Awaitable[None]]
ModelBuilder = Callable[[DeploymentConfig], BaseChatModel]
# The prompt fitted to a context window (and its estimated tokens); raises context_length_exceeded
# when the question alone does not fit it (llm/context.py).
Refit = Callable[[int], tuple[list[BaseMessage], int]]
MAX_REFITS = 3  # a reply's prompt fitted again at most this many times
REFIT_SHRINK = 0.85  # each time after the first to this share of the stated window

# What each provider's own finish reason means for the reply; any other reason the provider
# gives (stop, end_turn, stop_sequence, content_filter, ...) ends it as answered.
_LENGTH_REASONS = frozenset({"length", "max_tokens", "model_context_window_exceeded"})
STOP, LENGTH, CANCELLED = "stop", "length", "cancelled"
# Where a chunk's metadata says the stream ended (see _finish_reason).
_FINISH_KEYS = frozenset({"finish_reason", "stop_reason"})


@dataclass
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass
class RoutingRecord:
    """How a reply was routed; saved as Message.routing."""

    alias: str
    chain: list[str] = field(default_factory=list)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    retries: int = 0
    slept_ms: int = 0
    sent_text: bool = False
    # How the stream ended: "stop" (the model finished), "length" (the token cap cut it),
    # "cancelled" (the caller's stop signal); None while it runs or when it failed.
    finish_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    answered_by: DeploymentConfig | None = None
    last_tried: DeploymentConfig | None = None
    # The caller's generation choices (kept with the routing so the reply says how it was asked).
    options: GenerationOptions = field(default_factory=GenerationOptions)
    # The prompt fitted to a context window (llm/context.py): the window, and the earlier turns
    # left out of it (the oldest); None when no window was known.
    prompt: dict[str, int] | None = None

    @property
    def deployment(self) -> DeploymentConfig | None:
        """The deployment that answered, else the last one tried."""
        return self.answered_by or self.last_tried

    def as_json(self) -> dict[str, Any]:
        answered = self.answered_by
        return {
            "alias": self.alias,
            "chain": self.chain,
            "attempts": self.attempts,
            "skipped": self.skipped,
            "retries": self.retries,
            "slept_ms": self.slept_ms,
            "answered_by": answered.key if answered else None,
            "failover": answered is not None and len(self.attempts) > 1,
            "finish_reason": self.finish_reason,
            **({"options": options} if (options := self.options.as_json()) else {}),
            **({"prompt": self.prompt} if self.prompt else {}),
        }


def chunk_texts(chunk: Any) -> list[str]:
    """The text pieces of one streamed chunk (content blocks, e.g. Anthropic's: the text ones)."""
    content = getattr(chunk, "content", "")
    if isinstance(content, str):
        return [content] if content else []
    return [
        str(block.get("text", ""))
        for block in content
        if isinstance(block, dict) and block.get("type") == "text" and block.get("text")
    ]


class RetryClock(Protocol):
    """What retry waits and the retry budget are measured on."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class LoopClock:
    """The running event loop's clock: monotonic, and what asyncio's own timers use."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


# Read at each reply, so a test can put a virtual clock here and check the budget on it rather
# than on how fast a busy machine runs the attempts between the waits.
retry_clock: RetryClock = LoopClock()

# Breaker, limit and health bookkeeping only touches the cache: run it off the event loop but
# not on the one thread Django keeps for database work. (A first text's success that is not a
# probe's goes with its loop's others instead: llm/successes.py.)
_gate = sync_to_async(router.gate, thread_sensitive=False)
_succeeded = sync_to_async(router.attempt_succeeded, thread_sensitive=False)
_failed = sync_to_async(router.attempt_failed, thread_sensitive=False)


async def stream_with_failover(
    *,
    alias: str,
    messages: list[BaseMessage],
    sink: TextSink,
    build: ModelBuilder,
    record: RoutingRecord,
    policy: RetryPolicy,
    prompt_tokens: int = 0,
    plan_for: Callable[[str], router.RoutePlan] = router.route_plan,
    stop: asyncio.Event | None = None,
    refit: Refit | None = None,
) -> DeploymentConfig | None:
    """Stream a reply to `sink` from the first deployment that answers; returns it.

    `record.finish_reason` says how it ended: "stop", "length", or "cancelled" when `stop` was
    set (then the return value is the deployment that was streaming, or None if none was yet).
    A provider that refuses the prompt as longer than its context window, saying the window,
    has it learnt (llm/catalog.py window_learnt); with `refit` the prompt is fitted to it and
    sent again at once, without it the refusal ends the reply (context_length_exceeded).
    """
    clock = retry_clock
    deadline = clock.now() + policy.budget
    dropped: set[str] = set()  # deployments whose credentials failed: not again this reply
    last_error: ProviderError | None = None
    # Made before this task ran (FirstRound): the first round's plan and verdict, no hop. Or
    # being made meanwhile by another thread (first_round_expect): ready by now, as a rule.
    expected = _first_round.get()
    first_round: FirstRound | None
    if isinstance(expected, Future):
        first_round = await asyncio.wrap_future(expected)
    else:
        first_round = expected
    refits = 0  # prompts fitted again to a window a provider stated
    while True:
        if _stopped(stop):
            return _stopped_at(record)
        refitted = False
        made = first_round.take(alias, prompt_tokens) if first_round is not None else None
        first_round = None
        if made is not None:
            plan, first_verdict = made
        else:
            plan, first_verdict = await sync_to_async(_planned)(
                plan_for, alias, dropped=dropped, prompt_tokens=prompt_tokens
            )
        record.chain = plan.chain
        candidates = [d for d in plan.candidates if d.key not in dropped]
        if not plan.candidates:
            raise ProviderError(
                "provider_rejected",
                f"No enabled deployment serves the model {alias!r}.",
                reason="no_deployment",
            )
        round_errors: list[ProviderError] = []
        waits: list[float] = []
        for deployment in candidates:
            if len(record.attempts) >= policy.max_attempts:
                if first_verdict is not None and not isinstance(first_verdict, router.Skip):
                    router.attempt_abandoned(deployment, first_verdict)
                break
            if first_verdict is not None:  # gated with the plan: this round's first candidate
                verdict, first_verdict = first_verdict, None
            else:
                verdict = await _gate(deployment, prompt_tokens=prompt_tokens)
            if _stopped(stop):
                if not isinstance(verdict, router.Skip):
                    router.attempt_abandoned(deployment, verdict)
                return _stopped_at(record)
            if isinstance(verdict, router.Skip):
                metrics.PROVIDER_SKIPS.labels(deployment.name, verdict.reason).inc()
                record.skipped.append(
                    {"deployment": deployment.key, "label": deployment.label, **_skip(verdict)}
                )
                if verdict.retry_in is not None:
                    waits.append(verdict.retry_in)
                continue
            try:
                record.usage = await _attempt(
                    deployment, verdict, build, messages, sink, record, stop
                )
            except ProviderError as error:
                if record.sent_text:
                    raise _interrupted(error) from error
                if error.context_window:
                    window_learnt(deployment.key, error.context_window)
                    if refit is not None and refits < MAX_REFITS:
                        # Tighter each time: the prompt's tokens are estimated (llm/context.py).
                        window = int(error.context_window * REFIT_SHRINK**refits)
                        refits += 1
                        messages, prompt_tokens = refit(window)
                        refitted = True
                        break
                if not (error.retryable or error.deployment_fault):
                    raise
                if error.deployment_fault:
                    dropped.add(deployment.key)
                last_error = error
                round_errors.append(error)
                logger.info(
                    "%s failed before its first token (%s); trying the next deployment",
                    deployment.label,
                    error.reason,
                )
                continue
            if record.finish_reason == CANCELLED:
                return _stopped_at(record)
            record.answered_by = deployment
            return deployment
        if refitted:
            continue  # the fitted prompt goes out at once, planned afresh
        if last_error is None:
            raise _all_unavailable(alias, waits)
        if not round_errors or len(record.attempts) >= policy.max_attempts:
            raise _exhausted(last_error, record)
        delay = policy.delay(record.retries, round_errors)
        if delay is None or clock.now() + delay > deadline:
            raise _exhausted(last_error, record)
        record.retries += 1
        metrics.PROVIDER_RETRIES.labels(alias).inc()
        record.slept_ms += int(delay * 1000)
        await _sleep_unless_stopped(clock, delay, stop)


def _planned(
    plan_for: Callable[[str], router.RoutePlan],
    alias: str,
    *,
    dropped: set[str],
    prompt_tokens: int,
) -> tuple[router.RoutePlan, Permit | router.Skip | None]:
    """A round's route plan and the gate's verdict on its first candidate, in one trip to a
    thread: one thread hop before a reply's first call, not two (each a wait for a core on a
    busy machine, on the way to the first token)."""
    plan = plan_for(alias)
    first = next((d for d in plan.candidates if d.key not in dropped), None)
    return plan, None if first is None else router.gate(first, prompt_tokens=prompt_tokens)


class FirstRound:
    """A reply's first route plan and the gate's verdict on its first candidate, made before
    its generation task runs: in the thread of the request that begins it (chat/replies/
    early.py), which is on the way there anyway, so the first request to a provider goes out
    without a trip from the event loop to a thread and back (a wait for a core, and for the
    loop's turn, on a busy machine).

    Given to the generation with `first_round_context`; stream_with_failover `take`s it for its
    first round if it is for the same alias and prompt size (else it plans afresh). The gate's
    breaker permit is settled exactly once: by the attempt that took it, or given back by
    `release` (abandoned, as a cancelled attempt's), whichever comes first, from any thread;
    call `release` on every path once the generation is over or will never start.
    """

    def __init__(
        self,
        *,
        alias: str,
        prompt_tokens: int | None,
        plan: router.RoutePlan,
        verdict: Permit | router.Skip | None,
    ) -> None:
        self.alias = alias
        self.prompt_tokens = prompt_tokens
        self.plan = plan
        self.verdict = verdict
        self._lock = threading.Lock()
        self._held = True  # neither taken nor released yet

    @classmethod
    def made(
        cls,
        plan_for: Callable[[str], router.RoutePlan],
        alias: str,
        *,
        prompt_tokens: int | None,
    ) -> FirstRound | None:
        """The first round of a reply on `alias` (a blocking call: cache round trips), or None
        if it cannot be planned now: the generation then plans it and fails as it would.
        `prompt_tokens` None: made before the prompt is known (a Celery worker, while it claims
        the reply: chat/replies/tasks.py), for whatever size it turns out to be, unless the
        size matters to the gate (see `take`)."""
        try:
            plan, verdict = _planned(
                plan_for, alias, dropped=set(), prompt_tokens=prompt_tokens or 0
            )
        except Exception:
            return None
        return cls(alias=alias, prompt_tokens=prompt_tokens, plan=plan, verdict=verdict)

    def take(
        self, alias: str, prompt_tokens: int
    ) -> tuple[router.RoutePlan, Permit | router.Skip | None] | None:
        """The plan and verdict, once, if made for this alias and prompt size (made for no
        size: for any, unless the gate's verdict read the size, llm/limits.py: a first
        candidate with a tokens-per-minute limit)."""
        if not self._claim():
            return None
        if alias != self.alias or not self._fits(prompt_tokens):
            self._give_back()
            return None
        return self.plan, self.verdict

    def _fits(self, prompt_tokens: int) -> bool:
        if self.prompt_tokens is None:
            return not (self.plan.candidates and self.plan.candidates[0].tpm_limit)
        return prompt_tokens == self.prompt_tokens

    def release(self) -> None:
        """Give the permit back if the generation never took it (a no-op once taken)."""
        if self._claim():
            self._give_back()

    def _claim(self) -> bool:
        with self._lock:
            held, self._held = self._held, False
        return held

    def _give_back(self) -> None:
        verdict = self.verdict
        if verdict is not None and not isinstance(verdict, router.Skip):
            # Gated with no deployment dropped yet: the verdict is on the plan's first.
            router.attempt_abandoned(self.plan.candidates[0], verdict)


_first_round: contextvars.ContextVar[FirstRound | Future[FirstRound | None] | None] = (
    contextvars.ContextVar("first_round", default=None)
)


def first_round_expect(coming: Future[FirstRound | None]) -> None:
    """In the current context, stream_with_failover's first round is the one `coming` will
    hold (None: it plans as usual): another thread makes it while this task does other work
    (a Celery worker: while the reply is claimed, chat/replies/tasks.py). Whoever completes
    `coming` also `release`s what it held once the generation is over."""
    _first_round.set(coming)


def first_round_context(first: FirstRound) -> contextvars.Context:
    """A copy of the current context in which stream_with_failover finds `first`: run the
    generation's task in it (asyncio's create_task(..., context=))."""
    context = contextvars.copy_context()
    context.run(_first_round.set, first)
    return context


@traced("llm.provider_call")
async def _attempt(
    deployment: DeploymentConfig,
    permit: Permit,
    build: ModelBuilder,
    messages: list[BaseMessage],
    sink: TextSink,
    record: RoutingRecord,
    stop: asyncio.Event | None,
) -> Usage:
    """One request to one deployment; raises ProviderError on any provider failure.

    Returns when the provider finished (record.finish_reason "stop" or "length") or when `stop`
    was set (record.finish_reason "cancelled"), having closed the provider's stream either way.
    """
    loop = asyncio.get_running_loop()
    began = loop.time()
    entry: dict[str, Any] = {
        "deployment": deployment.key,
        "label": deployment.label,
        "alias": deployment.alias,
        "outcome": "started",
    }
    record.attempts.append(entry)
    record.last_tried = deployment
    usage = Usage()
    settled = False  # the breaker has heard how this attempt went
    recorded: asyncio.Future[None] | None = None  # the first text's success, being written
    finish: str | None = None  # the provider's own word for how the stream ended
    try:
        if deployment.problem:
            raise ProviderError(
                "provider_rejected",
                f"The model provider {deployment.name!r} is misconfigured: {deployment.problem}.",
                reason="misconfigured",
            )
        model = build(deployment)
        requested = loop.time()  # after building the client: that is local work
        hops.hop("w.provider_call")
        stream = _chunks(model, messages)
        # One deadline for the whole stream, moved as chunks arrive: the first-token deadline
        # until text comes, then the inter-token timeout after each chunk. It counts only
        # while waiting on the provider, not while the sink works. Moving an asyncio timeout
        # per chunk costs two timer handles a chunk, so the chunk loop only moves `deadline`
        # (a float) and one watchdog timer, re-armed when it fires early, ends a wait that
        # passed it by moving `clock` to now. `waiting` also tells the stop signal's waker
        # whether there is an await on the provider to cut short.
        waiting = False
        answering = False  # text came: the first-token time is taken, the breaker told
        paced = False  # the watchdog was armed for the inter-token timeout once text came
        inter_token_timeout = deployment.inter_token_timeout
        gaps = metrics.ChunkGaps(deployment.name, deployment.model)  # inter-chunk latency
        deadline = requested + deployment.first_token_timeout
        clock = asyncio.timeout(None)
        watchdog: asyncio.TimerHandle | None = None

        def expire() -> None:
            if waiting and not clock.expired():
                clock.reschedule(loop.time())  # the deadline is now: the wait ends at once

        def watch() -> None:
            nonlocal watchdog
            if waiting and loop.time() >= deadline:
                watchdog = None
                expire()
            else:  # moved since it was armed, or the sink is working: look again then
                watchdog = loop.call_at(max(deadline, loop.time() + 0.001), watch)

        def wake(_: object) -> None:
            expire()

        waker = _on_stop(stop, wake)
        try:
            async with clock:
                watchdog = loop.call_at(deadline, watch)
                while stop is None or not stop.is_set():
                    waiting = True
                    try:
                        chunk = await stream.__anext__()
                    except StopAsyncIteration:
                        break
                    except (asyncio.CancelledError, ProviderError):
                        raise
                    except Exception as exc:
                        raise provider_error_from(exc) from exc
                    finally:
                        waiting = False
                    if clock.expired():
                        # The deadline's cancel was swallowed below us and a chunk came anyway.
                        raise _timed_out(deployment, first="first_token_ms" not in entry)
                    if stop is not None and stop.is_set():
                        break
                    # Per chunk, at every token: one clock read (after the sink), no call for
                    # what a plain text chunk does not have (usage, content blocks), and a
                    # look at its metadata only for the words that end a stream.
                    message = getattr(chunk, "message", chunk)  # a ChatGenerationChunk's
                    info = getattr(chunk, "generation_info", None)
                    metadata = getattr(message, "response_metadata", None)
                    if (info and not _FINISH_KEYS.isdisjoint(info)) or (
                        metadata and not _FINISH_KEYS.isdisjoint(metadata)
                    ):
                        finish = _finish_reason(chunk, message) or finish
                    reported = getattr(message, "usage_metadata", None)
                    if reported:
                        usage.prompt_tokens = reported.get("input_tokens")
                        usage.completion_tokens = reported.get("output_tokens")
                    content = getattr(message, "content", "")
                    if answering and content.__class__ is str:
                        # Nearly every chunk: one more piece of text of a reply under way.
                        if content:
                            await sink(content)
                    else:
                        texts: Sequence[str]
                        if content.__class__ is str:
                            texts = (content,) if content else ()
                        else:
                            texts = chunk_texts(message)
                        for text in texts:
                            first = not answering
                            if first:
                                hops.hop("w.first_token")
                                answering = True
                                entry["first_token_ms"] = int((loop.time() - requested) * 1000)
                            record.sent_text = True
                            await sink(text)
                            if first:
                                hops.hop("w.sunk")
                                # After the sink: the first text does not wait for a thread
                                # hop. A probe's success closes its breaker for everyone at
                                # once; any other goes with its loop's batch, not waited for
                                # until the attempt ends (llm/successes.py).
                                if permit.probe:
                                    await _succeeded(
                                        deployment, permit, first_token_ms=entry["first_token_ms"]
                                    )
                                    permit = Permit(permit.key)  # the probe has spoken
                                else:
                                    recorded = successes_of(loop).record(
                                        key=deployment.key, first_token_ms=entry["first_token_ms"]
                                    )
                                settled = True
                    now = loop.time()  # the sink's work is not the provider's wait
                    gaps.chunk(now)
                    if answering:
                        deadline = now + inter_token_timeout
                        if not paced and watchdog is not None and deadline < watchdog.when():
                            # Sooner than it looks (the inter-token timeout after the first
                            # text is shorter than the first-token one): once, not per chunk.
                            # Later deadlines only move on (the loop's clock does), so the
                            # watchdog needs no look per chunk from then on.
                            watchdog.cancel()
                            watchdog = loop.call_at(deadline, watch)
                        paced = True
        except TimeoutError as exc:
            if not clock.expired():
                raise
            if not _stopped(stop):
                raise _timed_out(deployment, first="first_token_ms" not in entry) from exc
        except ProviderError as error:
            if _stopped(stop):
                pass  # cut short by the stop signal: however the stack reported it, no fault
            elif clock.expired():
                # The deadline's cancel surfaced below us as some other failure.
                raise _timed_out(deployment, first="first_token_ms" not in entry) from error
            else:
                raise
        finally:
            if watchdog is not None:
                watchdog.cancel()
            if waker is not None:
                waker.cancel()
            gaps.flush()
            await _close(stream)
        if _stopped(stop):
            record.finish_reason = CANCELLED
        elif finish is None:
            raise _cut()
        else:
            record.finish_reason = LENGTH if finish in _LENGTH_REASONS else STOP
            entry["finish_reason"] = finish
    except ProviderError as error:
        entry.update(_error_fields(error), outcome="failed")
        metrics.PROVIDER_ERRORS.labels(deployment.name, error.code).inc()
        # Counted after the successes that came before it on this loop (this attempt's own
        # first text among them): a success written later would clear this failure's count.
        await successes_of(loop).written()
        await _failed(deployment, permit, error)
        settled = True
        raise
    except asyncio.CancelledError:
        entry["outcome"] = "cancelled"
        raise
    except Exception:
        entry["outcome"] = "crashed"
        raise
    finally:
        entry["ms"] = int((loop.time() - began) * 1000)
        if not settled:
            # Stopped, cancelled or crashed before any verdict; done synchronously, so that it
            # also happens while the task is being cancelled.
            router.attempt_abandoned(deployment, permit)
    if recorded is not None:
        await recorded  # the breaker and health have heard it by the time the reply is over
    if record.finish_reason == CANCELLED:
        entry["outcome"] = "cancelled"
        return usage
    if entry["outcome"] == "started":
        entry["outcome"] = "answered"
    if not settled:  # answered with no text at all: still an answer
        await _succeeded(deployment, permit, first_token_ms=entry["ms"])
    return usage


def _chunks(model: BaseChatModel, messages: list[BaseMessage]) -> AsyncIterator[Any]:
    """The provider's stream: the model's own `_astream` (ChatGenerationChunks) when nothing
    listens to LangChain's callbacks, else `astream` (AIMessageChunks).

    `astream` wraps each chunk of `_astream` in callback dispatch and metadata copies, keeps
    every chunk and merges them all at the end, for tracers and callbacks; with none configured
    (no callbacks on the model, no LangSmith tracing, no rate limiter, streaming not disabled)
    that was a fifth of a worker's CPU per token at 30 tokens/s (bench/reply_cost.py). Read
    directly, the same chunks come from the same provider code, with `generation_info` (where
    langchain-openai puts the finish reason) not yet merged into the message.
    """
    direct = (
        isinstance(model, BaseChatModel)
        and not model.callbacks
        and not model.verbose
        and model.rate_limiter is None
        and not _tracing_v2_is_enabled()
        and model._should_stream(async_api=True, stream=True)
    )
    if direct:
        return model._astream(_normalize_messages(messages))
    return model.astream(messages)


def _finish_reason(chunk: Any, message: Any) -> str | None:
    """The provider's word for how the stream ended, if this chunk says it: OpenAI and
    compatible servers say finish_reason, Anthropic stop_reason."""
    for metadata in (
        getattr(chunk, "generation_info", None),
        getattr(message, "response_metadata", None),
    ):
        if metadata:
            reason = metadata.get("finish_reason") or metadata.get("stop_reason")
            if reason:
                return str(reason)
    return None


def _stopped(stop: asyncio.Event | None) -> bool:
    return stop is not None and stop.is_set()


def _stopped_at(record: RoutingRecord) -> DeploymentConfig | None:
    record.finish_reason = CANCELLED
    return record.last_tried if record.sent_text else None


def _on_stop(
    stop: asyncio.Event | None, wake: Callable[[object], None]
) -> asyncio.Task[bool] | None:
    """A waiter that calls `wake` once `stop` is set (one per attempt, not per chunk)."""
    if stop is None:
        return None
    waiter = asyncio.ensure_future(stop.wait())

    def done(task: asyncio.Task[bool]) -> None:
        if not task.cancelled():
            wake(task)

    waiter.add_done_callback(done)
    return waiter


async def _sleep_unless_stopped(
    clock: RetryClock, delay: float, stop: asyncio.Event | None
) -> None:
    """The backoff between rounds, ended early by the stop signal."""
    if stop is None:
        await clock.sleep(delay)
        return
    sleeping = asyncio.ensure_future(clock.sleep(delay))
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({sleeping, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        sleeping.cancel()
        stopping.cancel()


async def _close(stream: Any) -> None:
    """Close the provider's stream (and its HTTP response); a failure to close is no news."""
    aclose = getattr(stream, "aclose", None)
    if aclose is None:
        return
    try:
        await aclose()
    except Exception:
        logger.debug("closing a provider stream failed", exc_info=True)


def _error_fields(error: ProviderError) -> dict[str, Any]:
    fields: dict[str, Any] = {"code": error.code, "reason": error.reason}
    if error.status is not None:
        fields["status"] = error.status
    if error.retry_after is not None:
        fields["retry_after"] = error.retry_after
    return fields


def _skip(skip: router.Skip) -> dict[str, Any]:
    fields: dict[str, Any] = {"reason": skip.reason}
    if skip.retry_in is not None:
        fields["retry_in"] = round(skip.retry_in, 1)
    return fields


def _timed_out(deployment: DeploymentConfig, *, first: bool) -> ProviderError:
    if first:
        return ProviderError(
            "provider_unavailable",
            "The model provider sent nothing within "
            f"{deployment.first_token_timeout:g} s; try again.",
            reason="first_token_timeout",
        )
    return ProviderError(
        "provider_unavailable",
        f"The model provider went silent for {deployment.inter_token_timeout:g} s mid-reply.",
        reason="inter_token_timeout",
    )


def _cut() -> ProviderError:
    return ProviderError(
        "provider_failed",
        "The model provider ended the stream without finishing the reply; try again.",
        reason="cut",
    )


def _interrupted(error: ProviderError) -> ProviderError:
    return ProviderError(
        "interrupted",
        "The model provider failed in the middle of this reply, so it is incomplete. "
        "The partial text is kept; regenerate to try again.",
        status=error.status,
        reason=error.reason,
    )


def _exhausted(last: ProviderError, record: RoutingRecord) -> ProviderError:
    tries = len(record.attempts)
    if tries <= 1:
        return last
    return ProviderError(
        last.code,
        f"{last.detail} (tried {tries} times)",
        status=last.status,
        retry_after=last.retry_after,
        reason=last.reason,
    )


def _all_unavailable(alias: str, waits: list[float]) -> ProviderError:
    soon = f" in about {max(1, round(min(waits)))} s" if waits else " shortly"
    return ProviderError(
        "provider_unavailable",
        f"Every provider for the model {alias!r} is paused after repeated failures or at its "
        f"rate limit; try again{soon}.",
        retry_after=min(waits) if waits else None,
        reason="all_unavailable",
    )
