"""The reply cursor on its own: what a reader is sent of live deltas, saved text and final
events (chat/cursor.py), with no socket, layer or database."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from chat.cursor import NOTHING, Piece, ReplyCursor, Step

REPLY = "Hello, wörld 👋 and more"


def live(cursor: ReplyCursor, start: int, seq: int, *, now: float = 0.0) -> Step:
    return cursor.live(start=start, seq=seq, text=REPLY[start:seq], now=now)


def saved(cursor: ReplyCursor, seq: int, *, final: bool = False) -> Step:
    return cursor.saved(content=REPLY[:seq], seq=seq, final=final)


def piece(start: int, seq: int) -> Piece:
    return Piece(start, seq, REPLY[start:seq])


def test_in_order_deltas_are_forwarded_as_they_are():
    cursor = ReplyCursor()
    assert live(cursor, 0, 5) == Step(piece=piece(0, 5))
    assert live(cursor, 5, 14) == Step(piece=piece(5, 14))
    assert cursor.position == 14


def test_it_counts_code_points_not_bytes():
    cursor = ReplyCursor(position=13)
    assert live(cursor, 13, 15).piece == Piece(13, 15, "👋 ")


def test_a_duplicate_delta_is_dropped():
    cursor = ReplyCursor()
    live(cursor, 0, 5)
    assert live(cursor, 0, 5) == NOTHING
    assert live(cursor, 2, 4) == NOTHING


def test_an_overlapping_delta_is_trimmed_to_what_the_reader_lacks():
    cursor = ReplyCursor()
    live(cursor, 0, 5)
    assert live(cursor, 3, 9) == Step(piece=piece(5, 9))


def test_a_gap_asks_for_the_saved_text_and_joins_it_to_the_held_live_text():
    cursor = ReplyCursor()
    live(cursor, 0, 3)
    assert live(cursor, 7, 10) == Step(fill=True)  # 3..7 was dropped
    assert cursor.position == 3  # nothing past a gap is sent
    # The checkpoint reached 8: the reader gets 3..8 from it and 8..10 from the held delta.
    assert saved(cursor, 8) == Step(piece=piece(3, 10))
    assert live(cursor, 10, 12) == Step(piece=piece(10, 12))


def test_a_gap_the_checkpoint_has_not_reached_waits_and_asks_again_a_fill_interval_later():
    cursor = ReplyCursor(fill_every=1.0)
    live(cursor, 0, 3)
    assert live(cursor, 7, 10, now=0.0) == Step(fill=True)
    assert saved(cursor, 5) == Step(piece=piece(3, 5))  # what the checkpoint has
    assert live(cursor, 10, 12, now=0.4) == NOTHING  # held; the next checkpoint is not due
    assert live(cursor, 12, 14, now=1.0) == Step(fill=True)
    assert saved(cursor, 9) == Step(piece=piece(5, 14))
    # Closed: the next gap asks at once.
    assert live(cursor, 16, 18, now=1.1) == Step(fill=True)


def test_a_repeated_delta_past_a_gap_is_held_once():
    cursor = ReplyCursor()
    live(cursor, 0, 2)
    live(cursor, 4, 6)
    live(cursor, 4, 6)
    live(cursor, 5, 8)
    assert saved(cursor, 4) == Step(piece=piece(2, 8))


def test_after_a_second_gap_the_later_run_is_held():
    cursor = ReplyCursor()
    live(cursor, 0, 2)
    live(cursor, 4, 6)
    live(cursor, 8, 10)  # 6..8 dropped too
    assert saved(cursor, 9) == Step(piece=piece(2, 10))


def test_a_delta_that_continues_the_readers_text_is_taken_whole():
    cursor = ReplyCursor()
    assert cursor.takes_whole(start=0, seq=5)
    assert cursor.takes_whole(start=5, seq=9)
    assert cursor.position == 9
    assert live(cursor, 9, 12) == Step(piece=piece(9, 12))  # the same as `live` would send


def test_an_overlapping_repeated_or_gapped_delta_is_not_taken_whole_and_changes_nothing():
    cursor = ReplyCursor(position=5)
    assert not cursor.takes_whole(start=0, seq=9)  # overlaps: `live` trims it
    assert not cursor.takes_whole(start=0, seq=5)  # a repeat
    assert not cursor.takes_whole(start=7, seq=9)  # a gap: `live` holds it
    assert cursor.position == 5
    assert live(cursor, 7, 9) == Step(fill=True)
    # Text is held past the gap: a delta at the reader's position must release it with it.
    assert not cursor.takes_whole(start=5, seq=7)
    assert live(cursor, 5, 7) == Step(piece=piece(5, 9))


def test_nothing_is_taken_whole_after_the_final_frame():
    cursor = ReplyCursor()
    assert cursor.final(seq=0) == Step(end=True)
    assert not cursor.takes_whole(start=0, seq=3)


def test_a_saved_reply_behind_the_reader_sends_nothing():
    cursor = ReplyCursor()
    live(cursor, 0, 9)
    assert saved(cursor, 5) == NOTHING


def test_saved_text_shorter_than_its_seq_is_sent_only_as_far_as_it_goes():
    cursor = ReplyCursor()
    assert cursor.saved(content="Hel", seq=5, final=False) == Step(piece=Piece(0, 3, "Hel"))


def test_the_final_event_ends_a_reader_that_holds_everything():
    cursor = ReplyCursor()
    live(cursor, 0, 9)
    assert cursor.final(seq=9) == Step(end=True)
    assert cursor.finished


def test_the_final_event_takes_the_missing_text_from_the_held_text_when_it_can():
    cursor = ReplyCursor(position=5)
    live(cursor, 5, 7)
    live(cursor, 7, 9)
    assert cursor.final(seq=9) == Step(end=True)
    cursor = ReplyCursor(position=5)
    live(cursor, 6, 9)  # 5..6 dropped: nothing held continues the text
    assert cursor.final(seq=9) == Step(fill=True)
    assert saved(cursor, 9, final=True) == Step(piece=piece(5, 9), end=True)


def test_the_final_event_asks_for_the_saved_reply_when_text_is_missing():
    cursor = ReplyCursor()
    live(cursor, 0, 3)
    assert cursor.final(seq=9) == Step(fill=True)
    assert not cursor.finished
    assert saved(cursor, 9, final=True) == Step(piece=piece(3, 9), end=True)


def test_nothing_follows_the_final_frame():
    cursor = ReplyCursor()
    live(cursor, 0, 5)
    cursor.final(seq=5)
    assert live(cursor, 5, 9) == NOTHING  # e.g. a generator the reaper took the reply from
    assert cursor.final(seq=5) == NOTHING  # a late repeat: a reply ends once per reader
    assert saved(cursor, 5, final=True) == NOTHING


def test_a_resume_behind_what_was_sent_is_answered_from_what_was_sent():
    # The reader asks from 4 while 4..12 is on its way to it: the answer must not overlap it.
    cursor = ReplyCursor()
    live(cursor, 0, 4)
    live(cursor, 4, 12)
    cursor.resume(after_seq=4)
    assert saved(cursor, 10) == NOTHING
    assert saved(cursor, 15) == Step(piece=piece(12, 15))
    assert live(cursor, 12, 18) == Step(piece=piece(15, 18))


def test_a_resume_ahead_of_what_was_sent_is_answered_from_where_the_reader_is():
    # A reloaded page holds what it loaded (9), on a socket that has sent it nothing yet.
    cursor = ReplyCursor()
    cursor.resume(after_seq=9)
    assert saved(cursor, 12) == Step(piece=piece(9, 12))


def test_a_resume_of_a_final_reply_ends_it_again_with_only_the_missing_text():
    cursor = ReplyCursor()
    live(cursor, 0, 9)
    cursor.final(seq=9)
    cursor.resume(after_seq=9)
    assert saved(cursor, 9, final=True) == Step(end=True)
    cursor.resume(after_seq=3)
    assert saved(cursor, 9, final=True) == Step(end=True)


def test_a_reader_shown_more_than_was_kept_is_ended_at_what_was_kept():
    # The generator died after publishing 0..12 but the stored reply keeps 0..8: the final
    # frame's seq (8) tells the reader to trim; after it the reader holds 8.
    cursor = ReplyCursor()
    live(cursor, 0, 12)
    assert cursor.final(seq=8) == Step(end=True)
    assert cursor.position == 8
    cursor.resume(after_seq=8)
    assert saved(cursor, 8, final=True) == Step(end=True)


def test_held_text_past_the_final_seq_is_not_sent():
    cursor = ReplyCursor(position=4)
    live(cursor, 6, 12)
    assert saved(cursor, 8, final=True) == Step(piece=piece(4, 8), end=True)


# --- any interleaving --------------------------------------------------------------------


@dataclass
class World:
    """One reply as it travels: its deltas through an at-most-once layer, its checkpoints and
    final row in a database, one reader's cursor (the edge: chat/consumers.py), and the frames
    on the reader's connection in flight to a client that checks each one."""

    reply: str
    cuts: list[int]  # the deltas are reply[cuts[i]:cuts[i + 1]]
    checkpoints: set[int]  # positions the database saves at, once published that far
    kept: int  # the length of the final stored text
    cursor: ReplyCursor
    published: int = 0  # deltas published so far
    layer: deque[tuple[str, int, int]] = field(default_factory=deque)  # events on the way
    last_event: tuple[str, int, int] | None = None
    saved_seq: int = 0
    final: bool = False
    clock: float = 0.0
    wire: deque[Piece | int] = field(default_factory=deque)  # deltas and final frames (seq)
    held: str = ""  # the client's text
    ends: int = 0  # final frames the client received
    ended: bool = False

    # -- the generator and the database --

    def publish(self) -> None:
        if self.published + 1 < len(self.cuts):
            start, seq = self.cuts[self.published], self.cuts[self.published + 1]
            self.published += 1
            self.layer.append(("delta", start, seq))
            reached = [c for c in self.checkpoints if c <= min(seq, self.kept)]
            if not self.final and reached:
                self.saved_seq = max(self.saved_seq, *reached)

    def finish(self) -> None:
        if not self.final:
            self.final, self.saved_seq = True, self.kept
            self.layer.append(("final", self.kept, self.kept))  # after the row commits

    # -- the edge --

    def deliver(self, *, drop: bool = False) -> None:
        if self.layer:
            event = self.layer.popleft()
            if not drop:
                self.last_event = event
                self.handle(event)

    def duplicate(self) -> None:
        if self.last_event is not None:
            self.handle(self.last_event)

    def handle(self, event: tuple[str, int, int]) -> None:
        kind, start, seq = event
        if kind == "delta":
            text = self.reply[start:seq]
            # As the socket does: a delta taken whole goes as its producer's frame.
            if self.cursor.takes_whole(start=start, seq=seq):
                self.apply(Step(piece=Piece(start, seq, text)))
                return
            self.apply(self.cursor.live(start=start, seq=seq, text=text, now=self.clock))
        else:
            self.apply(self.cursor.final(seq=seq))

    def resume(self) -> None:
        self.ended = False
        self.cursor.resume(after_seq=len(self.held))
        self.apply(self.read())

    def read(self) -> Step:
        content = self.reply[: self.saved_seq]
        return self.cursor.saved(content=content, seq=self.saved_seq, final=self.final)

    def apply(self, step: Step) -> None:
        pieces = [step.piece]
        if step.fill:
            step = self.read()
            pieces.append(step.piece)
        for piece in pieces:
            if piece is not None:
                # Text the edge knows is past the end is not sent only to be trimmed.
                assert not step.end or piece.seq <= self.kept, f"{piece} past {self.kept}"
                self.wire.append(piece)
        if step.end:
            self.wire.append(self.kept)

    # -- the client --

    def arrive(self) -> None:
        if not self.wire:
            return
        frame = self.wire.popleft()
        if isinstance(frame, Piece):
            assert not self.ended, f"text after the final frame: {frame}"
            assert frame.start == len(self.held), f"{frame} while holding {len(self.held)}"
            assert frame.seq > frame.start and len(frame.text) == frame.seq - frame.start
            assert frame.text == self.reply[frame.start : frame.seq], frame
            self.held += frame.text
        else:
            assert isinstance(frame, int)
            assert len(self.held) >= frame, f"final at {frame} holding {len(self.held)}"
            self.held = self.held[:frame]  # trim to what was kept (docs/protocol.md)
            self.ends += 1
            self.ended = True


@st.composite
def worlds(draw: st.DrawFn) -> tuple[World, list[str]]:
    reply = draw(st.text(alphabet="ab é👋\n", max_size=40))
    inner = draw(st.sets(st.integers(1, max(1, len(reply) - 1)), max_size=12))
    cuts = [0, *sorted(c for c in inner if c < len(reply)), len(reply)] if reply else [0]
    # Checkpoints land where a delta ends; anywhere else too, so that overlaps get trimmed.
    checkpoints = draw(st.sets(st.sampled_from(cuts) | st.integers(0, len(reply))))
    # The stored text keeps all the text, or (a generator died before its save) the last
    # checkpoint only.
    kept = draw(st.sampled_from(sorted({len(reply), 0, *checkpoints})))
    fill_every = draw(st.sampled_from([0.0, 1.0]))
    world = World(reply, cuts, checkpoints, kept, ReplyCursor(fill_every=fill_every))
    if draw(st.booleans()):
        # A reloaded page: it holds the saved text it loaded, and resumes first.
        for _ in range(draw(st.integers(0, len(cuts)))):
            world.publish()
        world.layer.clear()
        world.held = reply[: world.saved_seq]
        world.resume()
    ops = draw(
        st.lists(
            st.sampled_from(
                ["publish", "deliver", "drop", "duplicate", "arrive", "resume", "finish", "tick"]
            ),
            max_size=80,
        )
    )
    return world, ops


@settings(max_examples=1500, deadline=None)
@given(worlds())
def test_any_interleaving_gives_the_reader_exactly_the_reply(case: tuple[World, list[str]]):
    """Whatever the layer drops or repeats, whenever checkpoints land and the reader resumes,
    the reader's text is always a prefix of the reply, with no gap and no overlap (checked per
    frame in World.arrive), and ends equal to the stored final text, ended at least once."""
    world, ops = case
    for op in ops:
        if op == "publish":
            world.publish()
        elif op == "deliver":
            world.deliver()
        elif op == "drop":
            world.deliver(drop=True)
        elif op == "duplicate":
            world.duplicate()
        elif op == "arrive":
            world.arrive()
        elif op == "resume":
            world.resume()
        elif op == "finish":
            world.finish()
        else:
            world.clock += 0.5
    # The generator ends, everything in flight arrives; a reader that heard no end resumes, as
    # the page does for a silent reply.
    while world.published + 1 < len(world.cuts):
        world.publish()
    world.finish()
    while world.layer:
        world.deliver()
    while world.wire:
        world.arrive()
    if not world.ends:
        world.resume()
        while world.wire:
            world.arrive()
    assert world.ends >= 1
    assert world.held == world.reply[: world.kept]
