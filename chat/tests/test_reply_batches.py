"""Group commit on one loop (chat/replies/batches.py) and its two users' cancel semantics: a
claim cancelled while it waited is left out of its batch, an ending cancelled while it waited
still ends."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from chat.replies import ending as ending_module
from chat.replies import stream
from chat.replies.batches import GroupCommit


class _Held:
    """A batch runner whose first batch waits until released (the lead's batch on its way),
    recording every batch it ran."""

    def __init__(self, result: Callable[[object], object] = lambda item: item) -> None:
        self.batches: list[list[object]] = []
        self.begun, self.release = threading.Event(), threading.Event()
        self.ran = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._result = result

    def __call__(self, items: list[object]) -> list[object]:
        self.batches.append(list(items))
        if len(self.batches) == 1:
            self.begun.set()
            self.release.wait(30)
        self._loop.call_soon_threadsafe(self.ran.set)
        return [self._result(item) for item in items]

    async def until_begun(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.begun.wait, 30)

    async def until_batches(self, count: int) -> None:
        while len(self.batches) < count:
            self.ran.clear()
            await asyncio.wait_for(self.ran.wait(), 30)


async def _queued_behind_the_lead(
    submit: Callable[[Any], Awaitable[Any]], held: _Held, *items: int
) -> tuple[asyncio.Task[Any], list[asyncio.Task[Any]]]:
    lead = asyncio.ensure_future(submit(1))
    await held.until_begun()
    waiting = [asyncio.ensure_future(submit(i)) for i in items]
    await asyncio.sleep(0)  # each queued behind the lead's batch
    return lead, waiting


async def test_items_arriving_meanwhile_go_together_each_with_its_own_result():
    held = _Held(lambda item: f"result {item}")
    batches = GroupCommit(held, keep_cancelled=False)
    lead, waiting = await _queued_behind_the_lead(batches.submit, held, 2, 3, 4)
    held.release.set()
    assert await lead == "result 1"
    assert await asyncio.gather(*waiting) == ["result 2", "result 3", "result 4"]
    assert held.batches == [[1], [2, 3, 4]]


async def test_a_failing_batch_fails_each_of_its_items_and_the_next_batch_runs():
    failing = {2}

    def run(items: list[int]) -> list[int]:
        if failing & set(items):
            raise RuntimeError("the statement failed")
        return items

    held = _Held()
    batches: GroupCommit[int, int] = GroupCommit(held, keep_cancelled=False)
    lead, (second, third) = await _queued_behind_the_lead(batches.submit, held, 2, 3)
    batches._run = run  # the waiters' batch fails
    held.release.set()
    assert await lead == 1
    for task in (second, third):
        with pytest.raises(RuntimeError):
            await task
    assert await batches.submit(5) == 5  # nobody holds the lead


async def test_a_claim_cancelled_while_it_waited_is_left_out_of_its_batch(monkeypatch):
    """Its reply would be claimed with nothing to stream it (the reaper's, 20 s later)."""
    held = _Held(lambda message_id: (f"reply {message_id}", []))
    monkeypatch.setattr(stream, "_claim_many", lambda ids: dict(zip(ids, held(ids), strict=True)))
    claims = stream.ClaimBatches()
    lead, (second, third, fourth) = await _queued_behind_the_lead(claims.claim, held, 2, 3, 4)
    third.cancel()
    held.release.set()
    assert await lead == ("reply 1", [])
    assert await second == ("reply 2", [])
    assert await fourth == ("reply 4", [])
    with pytest.raises(asyncio.CancelledError):
        await third
    assert held.batches == [[1], [2, 4]]


async def test_a_reply_claimed_twice_in_a_batch_is_claimed_by_its_first_claim(monkeypatch):
    held = _Held(lambda message_id: (f"reply {message_id}", []))
    monkeypatch.setattr(stream, "_claim_many", lambda ids: dict(zip(ids, held(ids), strict=True)))
    claims = stream.ClaimBatches()
    lead, waiting = await _queued_behind_the_lead(claims.claim, held, 2, 3, 2)
    held.release.set()
    assert await lead == ("reply 1", [])
    assert await asyncio.gather(*waiting) == [("reply 2", []), ("reply 3", []), None]
    assert held.batches == [[1], [2, 3]]


async def test_an_ending_cancelled_while_it_waited_ends_with_the_next_batch(monkeypatch):
    held = _Held()
    monkeypatch.setattr(ending_module, "replies_finish", lambda *, endings: held(endings))
    endings = ending_module.EndBatches()
    lead, (second, third) = await _queued_behind_the_lead(endings.end, held, 2, 3)
    second.cancel()
    held.release.set()
    assert await lead == 1
    assert await third == 3
    assert held.batches == [[1], [3, 2]]  # the lead's own first, then what waited


async def test_endings_all_cancelled_while_they_waited_still_end(monkeypatch):
    """Nobody is left to lead their batch: it runs all the same (before, they waited for the
    loop's next ending, which might never come)."""
    held = _Held()
    monkeypatch.setattr(ending_module, "replies_finish", lambda *, endings: held(endings))
    endings = ending_module.EndBatches()
    lead, (second, third) = await _queued_behind_the_lead(endings.end, held, 2, 3)
    second.cancel()
    third.cancel()
    held.release.set()
    assert await lead == 1
    await held.until_batches(2)
    assert held.batches == [[1], [2, 3]]
    assert await endings.end(4) == 4  # and the lead is free again


async def test_an_ending_told_to_lead_and_cancelled_meanwhile_still_ends(monkeypatch):
    held = _Held()
    monkeypatch.setattr(ending_module, "replies_finish", lambda *, endings: held(endings))
    endings = ending_module.EndBatches()
    lead, (second,) = await _queued_behind_the_lead(endings.end, held, 2)
    hand_on = endings._hand_the_lead_on

    def hand_on_then_cancel_the_one_told() -> None:
        endings._hand_the_lead_on = hand_on  # type: ignore[method-assign]
        hand_on()
        second.cancel()

    endings._hand_the_lead_on = hand_on_then_cancel_the_one_told  # type: ignore[method-assign]
    held.release.set()
    assert await lead == 1
    with pytest.raises(asyncio.CancelledError):
        await second
    await held.until_batches(2)
    assert held.batches == [[1], [2]]
