"""A reply's journal: each delta published for it, kept in the channel layer's Redis and
written in the same round trip as the publish, just before it (chat/layers.py, `Journal`).

A worker checkpoints a reply's text about once a second, but clients see each delta at once:
a worker that dies in between leaves clients holding more than was stored. The journal outlives
the worker, so the reaper first completes the stored text from it, then fails the reply
(`interrupted`): the stored partial text is never shorter than what any client was shown.

Pure: the key, the entry encoding, the write that goes with a publish, and the completion.
Reading a journal back is chat/layers.journal_read.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple


class Journal(NamedTuple):
    """A Redis list write that goes with a publish: `entry` appended (and, with `expire`, the
    list set to expire that many seconds later), or the list deleted when `entry` is None.
    A tuple: one is made per delta (a frozen dataclass cost about a microsecond more)."""

    key: str
    entry: bytes | None
    expire: int | None = None


def journal_key(message_id: int) -> str:
    return f"parley:reply:{message_id}:journal"


def journal_entry(*, start: int, text: str) -> bytes:
    """One delta: the text and the position it starts at."""
    return f"{start}:{text}".encode()


def journal_decode(entry: bytes) -> tuple[int, str]:
    start, _, text = entry.decode().partition(":")
    return int(start), text


def journal_complete(content: str, entries: Iterable[bytes]) -> str:
    """The stored text, lengthened by the journaled deltas (in publish order) that continue it.

    An entry past the end of the text so far is a hole (a publish lost with its journal write
    in a Redis outage) and is skipped: clients were not shown past a hole either, unless the
    stored text covered it, and then the entries after it continue the text.
    """
    text = content
    for entry in entries:
        start, piece = journal_decode(entry)
        if start <= len(text) < start + len(piece):
            text += piece[len(text) - start :]
    return text
