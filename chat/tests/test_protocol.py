from __future__ import annotations

import pytest

from chat.errors import ChatError
from chat.protocol import (
    CancelFrame,
    PingFrame,
    ResumeFrame,
    SendFrame,
    SubscribeFrame,
    delta_trim,
    frame_parse,
)


def test_it_parses_every_frame_type():
    assert frame_parse(
        {"type": "send", "conversation": None, "text": "hi", "client_id": "a"}
    ) == SendFrame(None, "hi", "a")
    assert frame_parse(
        {"type": "send", "conversation": 3, "text": "hi", "client_id": "a"}
    ) == SendFrame(3, "hi", "a")
    assert frame_parse({"type": "cancel", "message": 9}) == CancelFrame(9)
    assert frame_parse({"type": "resume", "message": 9, "after_seq": 4}) == ResumeFrame(9, 4)
    assert frame_parse({"type": "subscribe", "conversation": 2}) == SubscribeFrame(2)
    assert frame_parse({"type": "ping"}) == PingFrame()


@pytest.mark.parametrize(
    "frame",
    [
        None,
        [],
        "send",
        {},
        {"type": "nope"},
        {"type": "send", "text": "hi"},
        {"type": "send", "text": "hi", "client_id": ""},
        {"type": "send", "text": "hi", "client_id": "x" * 65},
        {"type": "send", "text": ["hi"], "client_id": "a"},
        {"type": "send", "text": "hi", "client_id": "a", "conversation": "3"},
        {"type": "send", "text": "hi", "client_id": "a", "conversation": True},
        {"type": "cancel"},
        {"type": "cancel", "message": 0},
        {"type": "cancel", "message": -1},
        {"type": "resume", "message": 1, "after_seq": -1},
        {"type": "resume", "message": 1, "after_seq": 1.5},
        {"type": "subscribe", "conversation": None},
    ],
)
def test_it_refuses_malformed_frames_with_a_reason(frame):
    with pytest.raises(ChatError) as error:
        frame_parse(frame)
    assert error.value.code == "bad_frame" and error.value.detail


@pytest.mark.parametrize(
    ("held", "start", "seq", "text", "expected"),
    [
        (0, 0, 5, "Hello", "Hello"),  # in order
        (5, 0, 5, "Hello", None),  # duplicate
        (3, 0, 5, "Hello", "lo"),  # overlap trimmed
        (3, 5, 8, " yo", None),  # gap: needs a resume
        (5, 5, 6, "✓", "✓"),  # code points, not bytes
    ],
)
def test_delta_trim(held, start, seq, text, expected):
    assert delta_trim(held=held, start=start, seq=seq, text=text) == expected
