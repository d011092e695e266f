"""The reply watch: one batch per process instead of one query per reply.

Every streaming reply needs three chores done at a steady cadence: its cancel flag looked up
(STREAM_CANCEL_POLL_INTERVAL), its heartbeat refreshed (STREAM_HEARTBEAT_INTERVAL; the reaper
fails replies whose heartbeat goes stale, and a reply it took away must stop), and its text
checkpointed (STREAM_CHECKPOINT_INTERVAL). Done by each reply alone, 500 replies in two worker
processes made ~2,000 thread hops and cache reads a second and ~670 UPDATEs, on the machine that
also serves the sockets. One watch per event loop does each chore for all its replies at once:
one `get_many` per poll, one heartbeat round per heartbeat interval, one checkpoint statement
per checkpoint interval.

A generation enters the watch with `reply_watch(message_id=...)` (the watch starts with the first
reply on its loop and ends after the last), notes its text with `WatchedReply.checkpoint` (no
await, no query) and waits on `WatchedReply.stop`, which the watch sets when the reply is
cancelled or no longer streaming. It leaves before its final save (lifecycle.reply_finish).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from django.conf import settings
from django.db import close_old_connections, connections

from chat.replies.lifecycle import (
    ReplyCheckpoint,
    replies_cancel_requested,
    replies_checkpoint,
    replies_heartbeat,
)

logger = logging.getLogger(__name__)


class WatchedReply:
    """One generation's place on its loop's watch; `stop` is set when it must stop."""

    def __init__(
        self, message_id: int, watch: ReplyWatch, stop: asyncio.Event | None = None
    ) -> None:
        self.message_id = message_id
        self.stop = stop if stop is not None else asyncio.Event()
        self._watch = watch

    def checkpoint(self, *, content: str, seq: int, first_token_at: datetime | None = None) -> None:
        """Note the text streamed so far (and when its first token came); the watch saves the
        latest note within an interval."""
        self._watch.note(self, content, seq, first_token_at)

    def close(self) -> None:
        """Leave the watch; an unsaved note is dropped (the final save writes all the text)."""
        self._watch.deregister(self)


@dataclass(frozen=True)
class _Stored:
    """What one database round achieved: checkpoints saved, and which replies still stream
    (None when no heartbeat was sent or it failed)."""

    saved: bool
    live: set[int] | None


class ReplyWatch:
    """The watch of one event loop: polls cancel flags, heartbeats and checkpoints its replies.

    Its cache and database calls run in two threads of its own, not on the loop and not on a
    generation's database lane (chat/replies/tasks.py): the lanes stay free for the generations' own
    writes, the database work is one connection (one thread) whatever the number of replies,
    and a cancel poll never queues behind a slow database round (cancel latency stays within a
    poll). `sync_to_async(thread_sensitive=False)` would spread the rounds over the loop's
    default executor, one connection per thread that ever ran one, never closed.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._replies: dict[int, WatchedReply] = {}
        # message id → (content, seq, first token at)
        self._unsaved: dict[int, tuple[str, int, datetime | None]] = {}
        self._idle = asyncio.Event()  # set when the last reply leaves: end now, not next tick
        self._task: asyncio.Task[None] | None = None

    # --- called by generations, on the loop ---------------------------------------------

    def register(self, message_id: int, stop: asyncio.Event | None = None) -> WatchedReply:
        watched = WatchedReply(message_id, self, stop)
        # reply_start lets one generation claim a reply, so ids are unique; were one registered
        # twice, the later registration would be the one watched.
        self._replies[message_id] = watched
        self._idle.clear()
        self._ensure_running()
        return watched

    def deregister(self, watched: WatchedReply) -> None:
        # A checkpoint round already on its way may still carry this reply's text: harmless,
        # it only writes a reply still streaming, so it lands before the final save or not at all.
        if self._replies.get(watched.message_id) is watched:
            del self._replies[watched.message_id]
            self._unsaved.pop(watched.message_id, None)
        if not self._replies:
            self._idle.set()

    def note(
        self, watched: WatchedReply, content: str, seq: int, first_token_at: datetime | None
    ) -> None:
        if self._replies.get(watched.message_id) is watched:
            self._unsaved[watched.message_id] = (content, seq, first_token_at)

    # --- the watch itself -----------------------------------------------------------------

    def _ensure_running(self) -> None:
        """Start the watch task unless it runs (it may have ended, or crashed)."""
        if not self._replies or self._loop.is_closed():
            return
        if self._task is None or self._task.done():
            # A fresh context: the first generation's (its database lane, say) is not ours.
            self._task = self._loop.create_task(
                self._run(), name="reply-watch", context=contextvars.Context()
            )
            self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return  # the loop is shutting down
        if (exc := task.exception()) is not None:
            # A bug, since every round catches its own errors. Generations go on meanwhile
            # (unwatched: no cancel, no heartbeat); the watch comes back after a poll interval,
            # or sooner if a reply registers.
            logger.error("the reply watch crashed; restarting it", exc_info=exc)
            if self._replies and not self._loop.is_closed():
                self._loop.call_later(settings.STREAM_CANCEL_POLL_INTERVAL, self._ensure_running)

    async def _run(self) -> None:
        """Do the chores until no reply is left, then leave the registry."""
        cache_lane = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reply-watch-cache")
        db_lane = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reply-watch-db")
        try:
            await self._rounds(cache_lane, db_lane)
        finally:
            # No await since _rounds saw no reply left: one registering now finds this watch
            # gone from the registry and starts a new one.
            db_lane.submit(connections.close_all)  # the lane's thread's connection
            db_lane.shutdown(wait=False)
            cache_lane.shutdown(wait=False)
            if not self._replies:
                _retire(self._loop, self)

    async def _rounds(self, cache_lane: ThreadPoolExecutor, db_lane: ThreadPoolExecutor) -> None:
        """The schedule: each chore when due, and never a second one of a kind while the last
        is still running (a slow cache or database skips rounds instead of piling them up).
        Returns once no reply is left and the last rounds have ended."""
        loop = self._loop
        now = loop.time()
        next_poll = now + settings.STREAM_CANCEL_POLL_INTERVAL
        next_save = now + settings.STREAM_CHECKPOINT_INTERVAL
        next_beat = now + settings.STREAM_HEARTBEAT_INTERVAL
        polling: asyncio.Task[None] | None = None
        storing: asyncio.Task[None] | None = None
        try:
            while True:
                if not self._replies:
                    running = [t for t in (polling, storing) if t is not None and not t.done()]
                    if not running:
                        return
                    # Let the last rounds end; a reply registering meanwhile (or a round hung on
                    # an unanswering cache) sends us back to work within a poll interval.
                    await asyncio.wait(running, timeout=settings.STREAM_CANCEL_POLL_INTERVAL)
                    continue
                nap = min(next_poll, next_save, next_beat) - loop.time()
                if nap > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._idle.wait(), nap)
                    continue
                now = loop.time()
                retry = now + settings.STREAM_CANCEL_POLL_INTERVAL
                if now >= next_poll:
                    next_poll = retry
                    if polling is None or polling.done():
                        polling = loop.create_task(self._poll_cancels(cache_lane))
                save_due, beat_due = now >= next_save, now >= next_beat
                if save_due or beat_due:
                    if storing is not None and not storing.done():
                        next_save = retry if save_due else next_save
                        next_beat = retry if beat_due else next_beat
                        continue
                    if save_due:
                        next_save = now + settings.STREAM_CHECKPOINT_INTERVAL
                    if beat_due:
                        next_beat = now + settings.STREAM_HEARTBEAT_INTERVAL
                    checkpoints = self._take_unsaved() if save_due else []
                    heartbeat = list(self._replies) if beat_due else []
                    if checkpoints or heartbeat:
                        storing = loop.create_task(self._store(db_lane, checkpoints, heartbeat))
        except BaseException:
            for task in (polling, storing):
                if task is not None:
                    task.cancel()
            raise

    def _take_unsaved(self) -> list[ReplyCheckpoint]:
        unsaved, self._unsaved = self._unsaved, {}
        return [
            ReplyCheckpoint(message_id=message_id, content=content, seq=seq, first_token_at=first)
            for message_id, (content, seq, first) in unsaved.items()
        ]

    async def _poll_cancels(self, lane: ThreadPoolExecutor) -> None:
        message_ids = list(self._replies)
        try:
            asked = await self._loop.run_in_executor(
                lane, partial(replies_cancel_requested, message_ids=message_ids)
            )
        except Exception:  # the cache (Redis) is down: keep generating, look again next poll
            logger.warning("cancel flags of %d replies unreadable", len(message_ids), exc_info=True)
            return
        for message_id in asked:
            if watched := self._replies.get(message_id):
                watched.stop.set()

    async def _store(
        self,
        lane: ThreadPoolExecutor,
        checkpoints: list[ReplyCheckpoint],
        heartbeat: list[int],
    ) -> None:
        try:
            stored = await self._loop.run_in_executor(lane, _database_round, checkpoints, heartbeat)
        except Exception:
            logger.exception("the reply watch's database round failed")
            stored = _Stored(saved=False, live=None)
        if not stored.saved:
            # Retried next interval, unless the reply left or noted newer text meanwhile.
            for checkpoint in checkpoints:
                if checkpoint.message_id in self._replies:
                    self._unsaved.setdefault(
                        checkpoint.message_id,
                        (checkpoint.content, checkpoint.seq, checkpoint.first_token_at),
                    )
        if stored.live is not None:
            # No longer streaming: reaped (or finished elsewhere), so no longer this generator's
            # to write. A reply that left meanwhile is no longer here to be told.
            for message_id in set(heartbeat) - stored.live:
                if watched := self._replies.get(message_id):
                    watched.stop.set()


def _database_round(checkpoints: list[ReplyCheckpoint], heartbeat: list[int]) -> _Stored:
    """One trip to the database in the watch's thread, handled like a request: a broken or
    obsolete connection is dropped before and after (with the psycopg pool, PostgreSQL's
    production setting, that is a borrow and a return per round; otherwise CONN_MAX_AGE rules).
    A database outage costs failed rounds, logged and retried; the watch reconnects when the
    database is back."""
    close_old_connections()
    try:
        saved = False
        if checkpoints:
            try:
                replies_checkpoint(checkpoints=checkpoints)
                saved = True
            except Exception:
                logger.warning(
                    "checkpoints of %d replies not saved; retrying next interval",
                    len(checkpoints),
                    exc_info=True,
                )
        live = None
        if heartbeat:
            try:
                live = replies_heartbeat(message_ids=heartbeat)
            except Exception:
                logger.warning(
                    "heartbeat of %d replies not saved; retrying next interval",
                    len(heartbeat),
                    exc_info=True,
                )
        return _Stored(saved=saved, live=live)
    finally:
        close_old_connections()


_watches: dict[asyncio.AbstractEventLoop, ReplyWatch] = {}
_watches_lock = threading.Lock()  # loops in several threads (Daphne, Celery, tests) share it


def reply_watch(*, message_id: int, stop: asyncio.Event | None = None) -> WatchedReply:
    """Put a streaming reply under the watch of the running event loop (started if need be).
    Close it in a `finally`: a reply left on the watch would be heartbeated forever. `stop`:
    the event its generation already stops on (a source started before the reply was watched)."""
    loop = asyncio.get_running_loop()
    with _watches_lock:
        for closed in [other for other in _watches if other.is_closed()]:
            del _watches[closed]  # closed with replies on it (a test's loop): nothing to watch
        watch = _watches.get(loop)
        if watch is None:
            watch = _watches[loop] = ReplyWatch(loop)
    return watch.register(message_id, stop)


def _retire(loop: asyncio.AbstractEventLoop, watch: ReplyWatch) -> None:
    with _watches_lock:
        if _watches.get(loop) is watch:
            del _watches[loop]
