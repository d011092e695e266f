"""Group commit on one event loop: work items that arrive while a batch is on its way go
together in the next one, run by one of them (the lead) in one thread hop.

A reply's claim (chat/replies/stream.py ClaimBatches) and its ending (chat/replies/ending.py
EndBatches) are a statement or a few each; hundreds of replies start or end within a second
of each other, and one statement and one hop for each batch instead of each reply is what made
those moments cheap (docs/benchmarks.md, rounds 6 and 7). A lone item runs at once.

The lead runs the batch with `sync_to_async` from its own context, so on its own database lane
(chat/replies/tasks.py on_database_lane); when the batch is done it hands the lead to the
first item waiting, if any, and returns its own result. The callers differ in what a waiter
cancelled before its batch ran means, so they say it (`keep_cancelled`):

- a claim cancelled before its batch is dropped: nothing waits for the reply it would claim,
  which would otherwise be left `streaming` for the reaper;
- an ending cancelled before its batch still goes with the next one: the reply must end
  whether or not anyone still waits to hear it did.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Generic, TypeVar

from asgiref.sync import sync_to_async

Item = TypeVar("Item")
Result = TypeVar("Result")

logger = logging.getLogger(__name__)


class _Lead:
    """Told to a waiting item: lead the next batch."""


_LEAD = _Lead()


class GroupCommit(Generic[Item, Result]):
    """The items of one event loop in batches, one batch at a time. `run` takes a batch (the
    lead's own item first, then the waiters' in their order) and returns one result per item,
    in the same order; it runs in a thread (sync_to_async, thread-sensitive)."""

    def __init__(self, run: Callable[[list[Item]], list[Result]], *, keep_cancelled: bool) -> None:
        self._run = run
        self._keep_cancelled = keep_cancelled
        self._waiting: list[tuple[Item, asyncio.Future[Result | _Lead]]] = []
        self._leading = False
        self._orphans: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        """The item's result, from the batch it went in; raises what the batch's `run` raised."""
        if self._leading:
            told: asyncio.Future[Result | _Lead] = asyncio.get_running_loop().create_future()
            self._waiting.append((item, told))
            try:
                result = await told
            except asyncio.CancelledError:
                # Handed the lead and cancelled before it could run: pass the lead on, or
                # the items queued behind it would wait for a batch nobody leads.
                if told.done() and not told.cancelled() and isinstance(told.result(), _Lead):
                    if self._keep_cancelled:
                        self._waiting.insert(0, (item, told))
                    self._hand_the_lead_on()
                raise
            if not isinstance(result, _Lead):
                return result
        (own,) = await self._lead([item])
        return own

    async def _lead(self, own: list[Item]) -> list[Result]:
        """Run `own` and everything waiting as one batch; the results of `own`."""
        self._leading = True
        batch, self._waiting = self._waiting, []
        if not self._keep_cancelled:
            batch = [(waiting, future) for waiting, future in batch if not future.done()]
        try:
            results = await sync_to_async(self._run)([*own, *(waiting for waiting, _ in batch)])
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            raise
        finally:
            self._leading = False
            self._hand_the_lead_on()
        for (_, future), result in zip(batch, results[len(own) :], strict=True):
            if not future.done():
                future.set_result(result)
        return results[: len(own)]

    def _hand_the_lead_on(self) -> None:
        """The first waiter not cancelled leads the next batch. Cancelled ones ahead of it go
        with that batch, or are dropped from it (`keep_cancelled`)."""
        for index, (_, future) in enumerate(self._waiting):
            if not future.done():
                del self._waiting[index]
                future.set_result(_LEAD)
                return
        if self._keep_cancelled and self._waiting:
            # Only cancelled items wait, and nobody would run them: a task of their own does.
            self._leading = True
            self._orphans = asyncio.get_running_loop().create_task(self._lead_orphans())

    async def _lead_orphans(self) -> None:
        try:
            await self._lead([])
        except Exception:
            logger.exception("a batch of cancelled items failed")
