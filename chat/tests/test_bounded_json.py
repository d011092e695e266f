"""chat/bounded_json.py: what every input path refuses before any service sees it."""

from __future__ import annotations

import pytest

from chat.bounded_json import MAX_DEPTH, JSONRefused, json_parse


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_it_parses_ordinary_json():
    assert json_parse('{"a": [1, "b", {"c": null}]}', max_size=100) == {"a": [1, "b", {"c": None}]}
    assert json_parse(b'{"emoji": "\\ud83d\\ude00"}', max_size=100) == {"emoji": "\U0001f600"}


def test_nesting_up_to_the_limit_is_accepted_and_beyond_it_refused():
    assert json_parse(nested(MAX_DEPTH), max_size=10_000) is not None
    with pytest.raises(JSONRefused, match="nested deeper"):
        json_parse(nested(MAX_DEPTH + 1), max_size=10_000)


def test_nesting_past_the_parsers_recursion_limit_is_refused_not_raised():
    with pytest.raises(JSONRefused, match="nested deeper"):
        json_parse(nested(100_000), max_size=1_000_000)


@pytest.mark.parametrize(
    "raw",
    [
        '{"text": "a\\u0000b"}',
        '{"a\\u0000": 1}',
        '["\\ud800"]',
        '{"client_id": "\\udfff"}',
        '{"deep": [[["\\ud83d"]]]}',
    ],
)
def test_nul_and_lone_surrogates_are_refused_anywhere(raw):
    with pytest.raises(JSONRefused, match=r"NUL|surrogate"):
        json_parse(raw, max_size=1000)


@pytest.mark.parametrize("raw", ["NaN", '{"a": Infinity}', "{", "", "1" * 5000, b"\xff\xfe\x00"])
def test_what_is_not_json_is_refused(raw):
    with pytest.raises(JSONRefused):
        json_parse(raw, max_size=10_000)


def test_a_body_over_the_size_limit_is_refused_as_too_large():
    with pytest.raises(JSONRefused) as refused:
        json_parse('"' + "x" * 100 + '"', max_size=50)
    assert refused.value.too_large
