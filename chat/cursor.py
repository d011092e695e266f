"""One reader's place in one reply's text: what of each event to forward, when a gap needs the
saved text, when the final frame may go.

A reply reaches a reader three ways: live deltas from the channel layer (in order, but
at-most-once), the saved text in the database (whole up to its `seq`, a checkpoint behind the
live edge), and the final event (`done` or `error`, published after the final row commits). A
reader is a socket (chat/consumers.py) or an HTTP stream (chat/api/follow.py: the SSE stream and
the OpenAI-compatible endpoint). The cursor decides and the edge reads and sends, so the cursor
is pure (no I/O, no ORM) and its rules are tested on their own (chat/tests/test_cursor.py).

The rules (docs/protocol.md, "Sequence numbers"):
- `position` is what the reader holds: all it was sent, or more if it says so (a `resume` after
  a reload, holding what the page loaded). Every piece sent starts at `position`: no gap, no
  overlap, no duplicate. Frames on one connection arrive in order, so a `resume` behind
  `position` is answered from `position`: the frames in flight take the reader there first.
- A live delta past `position` is a gap (the layer dropped one). Its text is held and the edge
  is asked for the saved text, which with the held text continues the reader's text once a
  checkpoint reaches the gap. While the gap lasts it asks at most once per `fill_every` seconds:
  checkpoints land at that cadence, so reading more often finds nothing new.
- The final event ends the reader's text at the final `seq`: what is missing comes from the held
  text or the saved text (the final row is committed before its event); then the final frame
  goes, once per reader. A `resume` asks for it again.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Piece:
    """Reply text from `start` up to `seq` (code points), as a `delta` frame carries it."""

    start: int
    seq: int
    text: str


@dataclass(frozen=True, slots=True)
class Step:
    """What to do about one event: send `piece` if any; if `fill`, read the saved reply and give
    it to `ReplyCursor.saved` (and do what that Step says); if `end`, send the final frame."""

    piece: Piece | None = None
    fill: bool = False
    end: bool = False


NOTHING = Step()


class ReplyCursor:
    """One reader of one reply (module docstring)."""

    __slots__ = ("_filled_at", "_held", "_held_start", "fill_every", "finished", "position")

    def __init__(self, *, position: int = 0, fill_every: float = 1.0) -> None:
        self.position = position
        self.finished = False  # its final frame was sent: later events are late repeats
        self.fill_every = fill_every
        self._held_start = 0
        self._held = ""  # live text past a gap, from _held_start on
        self._filled_at: float | None = None  # when this gap last asked for the saved text

    def live(self, *, start: int, seq: int, text: str, now: float) -> Step:
        """A live delta; `now` is a monotonic clock reading (for the fill cadence)."""
        if self.finished or seq <= self.position:
            return NOTHING
        if start <= self.position:
            before = self.position
            joined = text[before - start :]
            self.position = seq
            joined += self._release(limit=None)
            return Step(piece=Piece(before, self.position, joined))
        self._hold(start, text)
        if self._filled_at is None or now - self._filled_at >= self.fill_every:
            self._filled_at = now
            return Step(fill=True)
        return NOTHING

    def takes_whole(self, *, start: int, seq: int) -> bool:
        """A live delta that continues the reader's text exactly, with nothing held past a gap:
        the reader takes it whole, as `live` would (its edge may then send the delta's own
        frame). True, and `position` moved to `seq`, if so; otherwise nothing changed and
        `live` decides."""
        if self.finished or start != self.position or seq <= start or self._held:
            return False
        self.position = seq
        return True

    def final(self, *, seq: int) -> Step:
        """The final event, for a reply final at `seq`: the missing text from the held text or
        else the saved reply (final by now), then the final frame."""
        if self.finished:
            return NOTHING
        before = self.position
        released = self._release(limit=seq)
        piece = Piece(before, self.position, released) if released else None
        if self.position < seq:
            return Step(piece=piece, fill=True)
        return Step(piece=piece, end=self._finish(seq))

    def saved(self, *, content: str, seq: int, final: bool) -> Step:
        """The saved reply (its text, the `seq` it reaches, whether it is final): what of it,
        and of the held text it joins, the reader still needs; the final frame if final."""
        if self.finished:
            return NOTHING
        before = self.position
        seq = min(seq, len(content))
        if seq > before:
            self.position = seq
        joined = content[before : self.position] + self._release(limit=seq if final else None)
        piece = Piece(before, self.position, joined) if self.position > before else None
        return Step(piece=piece, end=final and self._finish(seq))

    def resume(self, *, after_seq: int) -> None:
        """The reader holds `after_seq` and asks for the rest (and the final frame again if the
        reply is final): the edge answers with `saved`."""
        self.finished = False
        self.position = max(self.position, after_seq)

    def _finish(self, seq: int) -> bool:
        self.finished = True
        self._held, self._filled_at = "", None
        # Shown more than was kept (a generator died between a publish and its save): the final
        # frame's `seq` tells the reader to trim to it, so that is what it holds.
        self.position = min(self.position, seq)
        return True

    def _hold(self, start: int, text: str) -> None:
        """Keep live text past a gap: one run, extended while contiguous; after another gap the
        later run, the one nearer the live edge."""
        end = self._held_start + len(self._held)
        if self._held and self._held_start <= start <= end:
            self._held += text[end - start :]
        else:
            self._held_start, self._held = start, text

    def _release(self, *, limit: int | None) -> str:
        """The held text that continues from `position` (up to `limit`), advancing it; held text
        that no longer can is dropped."""
        if not self._held or self._held_start > self.position:
            return ""  # nothing held, or still a gap
        end = self._held_start + len(self._held)
        if limit is not None:
            end = min(end, limit)
        text = self._held[self.position - self._held_start : end - self._held_start]
        self.position = max(self.position, end)
        self._held, self._filled_at = "", None
        return text
