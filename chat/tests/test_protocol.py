from __future__ import annotations

import pytest

from chat.errors import ChatError
from chat.protocol import (
    CancelFrame,
    PingFrame,
    ResumeFrame,
    SendFrame,
    SubscribeFrame,
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
        {"type": "resume", "message": 1},
        {"type": "resume", "message": 1, "after_seq": None},
        {"type": "resume", "message": 1, "after_seq": "3"},
        {"type": "resume", "message": 1, "after_seq": True},
        {"type": "subscribe", "conversation": None},
    ],
)
def test_it_refuses_malformed_frames_with_a_reason(frame):
    with pytest.raises(ChatError) as error:
        frame_parse(frame)
    assert error.value.code == "bad_frame" and error.value.detail
