"""Bounded JSON: the depth check never recurses, counts only structure, and parse_json is
total over text (a value or one of the named errors, never RecursionError)."""

from __future__ import annotations

import contextlib
import json

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import MalformedMessage, MessageTooLarge, ProtocolError
from protocol.events import MAX_EVENT_DEPTH, decode_event
from protocol.jsontext import JsonTooDeep, MalformedJson, check_depth, parse_json

FAST = settings(max_examples=200, deadline=None, database=None)


def nested(levels: int) -> str:
    return '{"a":' * levels + "1" + "}" * levels


@pytest.mark.parametrize("data", [nested(32), "[" * 32 + "]" * 32, "1", '"x"', "[]"])
def test_depth_up_to_the_limit_parses(data: str) -> None:
    assert parse_json(data, max_depth=32) == json.loads(data)
    assert parse_json(data.encode(), max_depth=32) == json.loads(data)


@pytest.mark.parametrize("levels", [33, 1000, 100_000])
def test_deeper_raises_json_too_deep(levels: int) -> None:
    for data in (nested(levels), "[" * levels + "]" * levels):
        with pytest.raises(JsonTooDeep):
            parse_json(data, max_depth=32)
        with pytest.raises(JsonTooDeep):
            parse_json(data.encode(), max_depth=32)


def test_brackets_inside_strings_are_not_structure() -> None:
    text = json.dumps({"a": "[[[[{{{{" * 100, "b": ['\\"]]]]', "{"]})
    assert parse_json(text, max_depth=2) == json.loads(text)


def test_wide_is_not_deep() -> None:
    text = json.dumps([[1, [2]], {"a": [3]}] * 10_000)
    assert parse_json(text, max_depth=3) == json.loads(text)
    with pytest.raises(JsonTooDeep):
        check_depth(text, 2)


@pytest.mark.parametrize("data", ["{", "[1,", "NaN", "[Infinity]", "", '{"a" 1}', b"\xff"])
def test_not_json_is_malformed(data: str | bytes) -> None:
    with pytest.raises(MalformedJson):
        parse_json(data)


def test_too_large() -> None:
    with pytest.raises(MessageTooLarge):
        parse_json("[" + "1," * 100 + "1]", max_bytes=100)


@FAST
@given(st.text(alphabet='[]{}",:\\ a1', max_size=300))
def test_total_over_text(text: str) -> None:
    with contextlib.suppress(ProtocolError):
        parse_json(text, max_depth=8)


@FAST
@given(
    st.recursive(
        st.none() | st.integers() | st.text(),
        lambda kids: st.lists(kids) | st.dictionaries(st.text(), kids),
        max_leaves=30,
    )
)
def test_agrees_with_json_within_the_limit(value: object) -> None:
    text = json.dumps(value)
    assert parse_json(text, max_depth=64) == value


def test_events_nested_deeper_than_the_limit_are_malformed() -> None:
    deep: object = 1
    for _ in range(MAX_EVENT_DEPTH + 1):
        deep = [deep]
    payload = msgpack.packb({"type": "ping", "v": 1, "x": deep})
    with pytest.raises(MalformedMessage, match="nested"):
        decode_event(payload)
    shallow: object = 1
    for _ in range(MAX_EVENT_DEPTH - 2):
        shallow = {"k": shallow}
    assert decode_event(msgpack.packb({"type": "ping", "v": 1, "x": shallow})).type == "ping"
