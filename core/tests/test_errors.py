"""The one error vocabulary says what docs/protocol.md promises, for every code it lists."""

from __future__ import annotations

import re
from pathlib import Path

from core.errors import CODES, ParleyError, error_code

PROTOCOL = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def _documented_codes() -> dict[str, bool]:
    """code → retryable, from the Errors table of docs/protocol.md."""
    errors = PROTOCOL.read_text().split("## Errors", 1)[1]
    rows = re.findall(r"^\| `(\w+)` \| (yes|no) \|", errors, flags=re.MULTILINE)
    return {code: answer == "yes" for code, answer in rows}


def test_every_documented_code_is_retryable_as_the_protocol_says():
    documented = _documented_codes()
    assert len(documented) >= 9
    for code, retryable in documented.items():
        assert code in CODES, code
        assert CODES[code].retryable is retryable, code


def test_an_error_is_retryable_as_its_code_says():
    assert ParleyError("interrupted", "Cut short.").retryable is True
    assert ParleyError("bad_frame", "No.").retryable is False


def test_an_unknown_code_is_an_internal_error_that_keeps_its_name():
    entry = error_code("from_an_older_release")
    assert (entry.retryable, entry.http_status, entry.api_code) == (False, 500, "internal")
    assert (entry.openai_status, entry.openai_type) == (500, "server_error")
    assert entry.openai_code == "from_an_older_release"
