"""Application events: msgpack maps with a string ``type`` and an integer ``v``.

``decode_event`` is total: it returns an AppEvent or raises MalformedMessage / MessageTooLarge,
whatever the bytes, including msgpack bombs (huge declared lengths, deep nesting, ext types,
non-string keys).
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import AppEventMessage, MalformedMessage, MessageTooLarge, ProtocolError
from protocol import decode as decode_frame
from protocol import encode as encode_frame
from protocol.events import (
    EVENT_VERSION,
    MAX_EVENT_BYTES,
    AppEvent,
    decode_event,
    encode_event,
)

FAST = settings(max_examples=100, deadline=None, database=None)
FUZZ = settings(max_examples=400, deadline=None, database=None)

GOLDEN_EVENT = AppEvent("x", {"a": 1})
GOLDEN_PAYLOAD = b"\x83\xa4type\xa1x\xa1v\x01\xa1a\x01"
# A valid event head (type "x", v 1) followed by a fixstr key "f" and its value.
EVENT_HEAD = b"\x83\xa4type\xa1x\xa1v\x01\xa1f"


def decode_or_none(payload: bytes, max_bytes: int = MAX_EVENT_BYTES) -> AppEvent | None:
    """Decode, mapping the codec's own errors to None; anything else escapes and fails."""
    try:
        event = decode_event(payload, max_bytes)
    except ProtocolError:
        return None
    assert isinstance(event, AppEvent)
    assert isinstance(event.type, str)
    assert event.type
    assert isinstance(event.version, int)
    assert not isinstance(event.version, bool)
    assert isinstance(event.fields, dict)
    assert "type" not in event.fields
    assert "v" not in event.fields
    return event


# The integers msgpack can pack (int64 and uint64).
msgpack_ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
# Values that survive a msgpack round trip unchanged (lists, not tuples; no NaN).
msgpack_scalars = st.one_of(
    st.none(),
    st.booleans(),
    msgpack_ints,
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=20),
)
msgpack_values = st.recursive(
    msgpack_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=8), children, max_size=4),
    ),
    max_leaves=12,
)
field_dicts = st.dictionaries(
    st.text(max_size=12).filter(lambda key: key not in ("type", "v")),
    msgpack_values,
    max_size=6,
)
events = st.builds(
    AppEvent,
    type=st.text(min_size=1, max_size=20),
    fields=field_dicts,
    version=msgpack_ints,
)

# Anything msgpack can pack, including keys that are not strings.
any_keys = st.one_of(
    st.text(max_size=6), st.binary(max_size=6), msgpack_ints, st.none(), st.booleans()
)
any_objects = st.recursive(
    msgpack_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(any_keys, children, max_size=4),
    ),
    max_leaves=12,
)
head_values = st.one_of(
    st.text(max_size=4), msgpack_ints, st.none(), st.booleans(), st.binary(max_size=4)
)


def test_event_defaults() -> None:
    event = AppEvent("ping")
    assert event.version == EVENT_VERSION == 1
    assert event.fields == {}
    assert AppEvent("x", {"a": 1}).get("a") == 1
    assert AppEvent("x").get("missing", "default") == "default"


def test_encode_golden() -> None:
    assert encode_event(GOLDEN_EVENT) == GOLDEN_PAYLOAD


def test_encode_uses_the_bin_type_for_bytes() -> None:
    payload = encode_event(AppEvent("blob", {"data": b"\x00"}, version=2))
    assert payload == b"\x83\xa4type\xa4blob\xa1v\x02\xa4data\xc4\x01\x00"


def test_encode_raises_type_error_for_unpackable_values() -> None:
    with pytest.raises(TypeError):
        encode_event(AppEvent("x", {"a": object()}))


def test_app_event_frame_golden() -> None:
    frame = encode_frame(AppEventMessage(GOLDEN_PAYLOAD))
    assert frame == b"\x64\x0e" + GOLDEN_PAYLOAD
    assert decode_frame(frame) == AppEventMessage(GOLDEN_PAYLOAD)


def test_decode_golden() -> None:
    assert decode_event(GOLDEN_PAYLOAD) == GOLDEN_EVENT


def test_decode_accepts_any_key_order_and_version() -> None:
    payload = msgpack.packb({"n": [1, "two"], "v": 7, "type": "t"}, use_bin_type=True)
    assert decode_event(payload) == AppEvent("t", {"n": [1, "two"]}, version=7)


@settings(FAST)
@given(events)
def test_round_trip(event: AppEvent) -> None:
    assert decode_event(encode_event(event)) == event


def test_event_at_max_bytes_decodes() -> None:
    event = AppEvent("x", {"pad": "p" * 100})
    payload = encode_event(event)
    assert decode_event(payload, max_bytes=len(payload)) == event


def test_event_over_max_bytes_is_too_large() -> None:
    payload = encode_event(AppEvent("x", {"pad": "p" * 100}))
    with pytest.raises(MessageTooLarge):
        decode_event(payload, max_bytes=len(payload) - 1)


def test_size_is_checked_before_unpacking() -> None:
    with pytest.raises(MessageTooLarge):
        decode_event(b"\xc1" * 11, max_bytes=10)
    with pytest.raises(MessageTooLarge):
        decode_event(b"\x91" * (MAX_EVENT_BYTES + 1))


def test_default_max_bytes_is_64_kib() -> None:
    assert MAX_EVENT_BYTES == 64 * 1024


@FAST
@given(events, st.integers(min_value=0, max_value=300))
def test_over_any_max_bytes_is_too_large(event: AppEvent, max_bytes: int) -> None:
    payload = encode_event(event)
    if len(payload) > max_bytes:
        with pytest.raises(MessageTooLarge):
            decode_event(payload, max_bytes)
    else:
        decode_or_none(payload, max_bytes)


def _packed(obj: Any) -> bytes:
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


@pytest.mark.parametrize(
    "payload",
    [
        # Empty, reserved, truncated, trailing.
        pytest.param(b"", id="empty"),
        pytest.param(b"\xc1", id="reserved-byte"),
        pytest.param(b"\x82\xa4type", id="truncated-map"),
        pytest.param(GOLDEN_PAYLOAD + b"\x00", id="trailing-byte"),
        pytest.param(GOLDEN_PAYLOAD + GOLDEN_PAYLOAD, id="two-events"),
        # Declared sizes far beyond the bytes present or the limits.
        pytest.param(b"\xdf\xff\xff\xff\xff", id="map32-2**32-1-entries"),
        pytest.param(b"\xde\x04\x01", id="map16-1025-entries"),
        pytest.param(b"\xdd\xff\xff\xff\xff", id="array32-2**32-1-items"),
        pytest.param(EVENT_HEAD + b"\xdd\x00\x00\x10\x01", id="field-array-4097-items"),
        pytest.param(b"\xdb\xff\xff\xff\xff", id="str32-4-GiB"),
        pytest.param(b"\xc6\xff\xff\xff\xff", id="bin32-4-GiB"),
        pytest.param(EVENT_HEAD + b"\xdb\xff\xff\xff\xff", id="field-str32-4-GiB"),
        # Deep nesting.
        pytest.param(b"\x91" * 5000 + b"\xc0", id="nested-arrays"),
        pytest.param(b"\x81\xa1k" * 3000 + b"\xc0", id="nested-maps"),
        pytest.param(EVENT_HEAD + b"\x91" * 20_000 + b"\xc0", id="field-nested-arrays"),
        # Not a map.
        pytest.param(b"\x90", id="array"),
        pytest.param(b"\x01", id="int"),
        pytest.param(b"\xa1x", id="str"),
        pytest.param(b"\xc0", id="nil"),
        pytest.param(b"\xc3", id="true"),
        pytest.param(b"\xc4\x00", id="bin"),
        pytest.param(_packed([{"type": "x", "v": 1}]), id="event-in-array"),
        # Keys that are neither str nor bytes.
        pytest.param(b"\x83\xa4type\xa1x\xa1v\x01\x01\x01", id="int-key"),
        pytest.param(b"\x83\xa4type\xa1x\xa1v\x01\xc0\x01", id="nil-key"),
        pytest.param(b"\x83\xa4type\xa1x\xa1v\x01\xc3\x01", id="bool-key"),
        pytest.param(b"\x83\xa4type\xa1x\xa1v\x01\xcb" + b"\x00" * 8 + b"\x01", id="float-key"),
        pytest.param(b"\x83\xa4type\xa1x\xa1v\x01\x90\x01", id="array-key"),
        pytest.param(b"\x83\xa4type\xa1x\xa1v\x01\x80\x01", id="map-key"),
        pytest.param(EVENT_HEAD + b"\x81\x01\x01", id="nested-int-key"),
        # Invalid UTF-8.
        pytest.param(b"\x82\xa4type\xa1\xff\xa1v\x01", id="type-invalid-utf8"),
        pytest.param(b"\x83\xa4type\xa1x\xa1v\x01\xa1\xff\x01", id="key-invalid-utf8"),
        # Missing or invalid type / v.
        pytest.param(_packed({}), id="empty-map"),
        pytest.param(_packed({"v": 1}), id="no-type"),
        pytest.param(_packed({"type": "", "v": 1}), id="empty-type"),
        pytest.param(_packed({"type": 1, "v": 1}), id="int-type"),
        pytest.param(_packed({"type": b"x", "v": 1}), id="bytes-type"),
        pytest.param(_packed({"type": None, "v": 1}), id="nil-type"),
        pytest.param(_packed({"type": ["x"], "v": 1}), id="array-type"),
        pytest.param(_packed({"type": "x"}), id="no-v"),
        pytest.param(_packed({"type": "x", "v": True}), id="bool-v"),
        pytest.param(_packed({"type": "x", "v": 1.0}), id="float-v"),
        pytest.param(_packed({"type": "x", "v": "1"}), id="str-v"),
        pytest.param(_packed({"type": "x", "v": None}), id="nil-v"),
        # Ext types carrying data (max_ext_len=0), including the msgpack timestamp (-1).
        pytest.param(b"\xd4\x05\x00", id="fixext1"),
        pytest.param(EVENT_HEAD + b"\xd4\x05\x00", id="field-fixext1"),
        pytest.param(EVENT_HEAD + b"\xc7\x03\x05abc", id="field-ext8"),
        pytest.param(EVENT_HEAD + b"\xc9\xff\xff\xff\xff\x05", id="field-ext32-4-GiB"),
        pytest.param(EVENT_HEAD + b"\xd6\xff\x00\x00\x00\x00", id="field-timestamp32"),
        pytest.param(EVENT_HEAD + b"\xd7\xff" + b"\x00" * 8, id="field-timestamp64"),
        pytest.param(b"\x82\xa4type\xd4\x05\x00\xa1v\x01", id="ext-type"),
    ],
)
def test_malformed_events(payload: bytes) -> None:
    with pytest.raises(MalformedMessage):
        decode_event(payload)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"\x83\xa4type\xa1x\xa1v\x01\xc4\x01k\x01", id="bytes-key"),
        pytest.param(EVENT_HEAD + b"\x81\xc4\x01k\x01", id="nested-bytes-key"),
    ],
)
def test_bytes_keys_are_malformed(payload: bytes) -> None:
    # msgpack's strict_map_key still lets bytes keys through; the events module promises a
    # peer cannot build maps with non-string keys, and AppEvent.fields is dict[str, Any].
    with pytest.raises(MalformedMessage):
        decode_event(payload)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(EVENT_HEAD + b"\xc7\x00\x05", id="field-ext8-empty"),
        pytest.param(EVENT_HEAD + b"\xc7\x00\xff", id="field-timestamp-empty"),
        pytest.param(b"\x83\xa4type\xa1x\xa1v\x01\xc7\x00\x05\x01", id="ext-key"),
    ],
)
def test_empty_ext_types_are_handled(payload: bytes) -> None:
    decode_or_none(payload)


# --- totality ------------------------------------------------------------------------------


def test_every_one_and_two_byte_input_is_handled() -> None:
    for first in range(256):
        decode_or_none(bytes((first,)))
        for second in range(256):
            decode_or_none(bytes((first, second)))


@FUZZ
@given(st.binary(max_size=64), st.integers(min_value=0, max_value=80))
def test_random_bytes(payload: bytes, max_bytes: int) -> None:
    decode_or_none(payload, max_bytes)


@FUZZ
@given(st.sampled_from([b"\x81", b"\x83\xa4type", EVENT_HEAD, b"\xde", b"\xdf"]), st.binary())
def test_random_bytes_after_a_map_header(header: bytes, body: bytes) -> None:
    decode_or_none(header + body)


@FUZZ
@given(any_objects)
def test_arbitrary_msgpack_objects(obj: Any) -> None:
    decode_or_none(_packed(obj))


@FUZZ
@given(
    st.dictionaries(st.sampled_from(["type", "v"]), head_values),
    st.dictionaries(any_keys, any_objects, max_size=4),
)
def test_arbitrary_maps_with_type_and_v(head: dict[str, Any], rest: dict[Any, Any]) -> None:
    decode_or_none(_packed({**rest, **head}))


@FAST
@given(events)
def test_every_strict_prefix_is_malformed(event: AppEvent) -> None:
    # msgpack is self-delimiting: no strict prefix of an object is a complete object.
    payload = encode_event(event)
    for end in range(len(payload)):
        with pytest.raises(MalformedMessage):
            decode_event(payload[:end])


@FUZZ
@given(events, st.data())
def test_single_bit_flips(event: AppEvent, data: st.DataObject) -> None:
    payload = bytearray(encode_event(event))
    bit = data.draw(st.integers(min_value=0, max_value=len(payload) * 8 - 1), label="bit")
    payload[bit // 8] ^= 1 << (bit % 8)
    decode_or_none(bytes(payload))


def test_every_single_bit_flip_of_the_golden_payload() -> None:
    for bit in range(len(GOLDEN_PAYLOAD) * 8):
        flipped = bytearray(GOLDEN_PAYLOAD)
        flipped[bit // 8] ^= 1 << (bit % 8)
        decode_or_none(bytes(flipped))
