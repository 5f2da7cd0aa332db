"""Awareness update payloads (y-protocols awareness.js ``encodeAwarenessUpdate``).

Layout: varuint count, then per entry varuint clientID, varuint clock, varstring JSON state,
where ``JSON.stringify(null) == "null"`` marks a client that went away.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import AwarenessMessage, MalformedMessage, MessageTooLarge, ProtocolError
from protocol import decode as decode_frame
from protocol import encode as encode_frame
from protocol.awareness import REMOVED_STATE, AwarenessEntry, AwarenessUpdate, decode, encode
from protocol.varint import MAX_VARUINT

FAST = settings(max_examples=200, deadline=None, database=None)
FUZZ = settings(max_examples=500, deadline=None, database=None)

ALICE = AwarenessEntry(client_id=1, clock=2, state='{"user":"a"}')
GONE = AwarenessEntry(client_id=300, clock=5, state="null")
GOLDEN_UPDATE = AwarenessUpdate((ALICE, GONE))
GOLDEN_PAYLOAD = (
    b"\x02"  # two entries
    + b"\x01\x02\x0c"  # clientID 1, clock 2, 12-byte state
    + b'{"user":"a"}'
    + b"\xac\x02\x05\x04"  # clientID 300, clock 5, 4-byte state
    + b"null"
)


def decode_or_none(payload: bytes, max_entries: int = 1024) -> AwarenessUpdate | None:
    """Decode, mapping the codec's own errors to None; anything else escapes and fails."""
    try:
        update = decode(payload, max_entries)
    except ProtocolError:
        return None
    assert isinstance(update, AwarenessUpdate)
    assert len(update.entries) <= max_entries
    return update


json_states = st.one_of(
    st.just(REMOVED_STATE),
    st.just("{}"),
    st.text(max_size=40),
    st.builds(lambda name: f'{{"user":{{"name":"{name}"}}}}', st.text(max_size=20)),
)
entries = st.builds(
    AwarenessEntry,
    client_id=st.integers(min_value=0, max_value=MAX_VARUINT),
    clock=st.integers(min_value=0, max_value=MAX_VARUINT),
    state=json_states,
)
updates = st.builds(AwarenessUpdate, st.lists(entries, max_size=8).map(tuple))


def test_removed_state_is_json_null() -> None:
    assert REMOVED_STATE == "null"
    assert GONE.removed
    assert not ALICE.removed
    assert not AwarenessEntry(1, 0, "{}").removed


def test_encode_golden() -> None:
    assert encode(GOLDEN_UPDATE) == GOLDEN_PAYLOAD


def test_decode_golden() -> None:
    assert decode(GOLDEN_PAYLOAD) == GOLDEN_UPDATE


def test_golden_inside_a_frame() -> None:
    frame = b"\x01\x18" + GOLDEN_PAYLOAD
    assert len(GOLDEN_PAYLOAD) == 0x18
    assert encode_frame(AwarenessMessage(GOLDEN_PAYLOAD)) == frame
    message = decode_frame(frame)
    assert isinstance(message, AwarenessMessage)
    assert decode(message.payload) == GOLDEN_UPDATE


def test_empty_update() -> None:
    assert encode(AwarenessUpdate(())) == b"\x00"
    assert decode(b"\x00") == AwarenessUpdate(())


def test_state_length_is_in_utf8_bytes() -> None:
    update = AwarenessUpdate((AwarenessEntry(7, 0, '"é"'),))
    assert encode(update) == b'\x01\x07\x00\x04"\xc3\xa9"'
    assert decode(b'\x01\x07\x00\x04"\xc3\xa9"') == update


def test_state_is_kept_as_opaque_text() -> None:
    # The server never parses the JSON: any text round-trips unchanged.
    update = AwarenessUpdate((AwarenessEntry(1, 1, "not json {"),))
    assert decode(encode(update)) == update


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x80", id="truncated-count"),
        pytest.param(b"\x01", id="missing-entry"),
        pytest.param(b"\x01\x01", id="missing-clock"),
        pytest.param(b"\x01\x01\x02", id="missing-state"),
        pytest.param(b"\x01\x01\x02\x04nul", id="truncated-state"),
        pytest.param(b"\x01\x01\x02\x01\xff", id="state-invalid-utf8"),
        pytest.param(b"\x02\x01\x02\x04null", id="fewer-entries-than-declared"),
        pytest.param(b"\x01\x80\x80\x80\x80\x80\x80\x80\x10\x00\x00", id="client-id-2**53"),
        pytest.param(b"\x01\x01" + b"\x80" * 8 + b"\x00\x00", id="clock-nine-bytes"),
    ],
)
def test_malformed_payloads(payload: bytes) -> None:
    with pytest.raises(MalformedMessage):
        decode(payload)


@pytest.mark.parametrize("extra", [b"\x00", b"\x01\x02\x00", b"junk"])
def test_trailing_bytes_are_malformed(extra: bytes) -> None:
    with pytest.raises(MalformedMessage, match="trailing"):
        decode(GOLDEN_PAYLOAD + extra)


def test_entries_up_to_max_entries_decode() -> None:
    assert decode(GOLDEN_PAYLOAD, max_entries=2) == GOLDEN_UPDATE


def test_more_than_max_entries_is_too_large() -> None:
    with pytest.raises(MessageTooLarge):
        decode(GOLDEN_PAYLOAD, max_entries=1)


def test_entry_count_is_checked_before_parsing_entries() -> None:
    # Declares 2**53 - 1 entries and carries none: too large, not truncated.
    with pytest.raises(MessageTooLarge):
        decode(b"\xff\xff\xff\xff\xff\xff\xff\x0f")
    with pytest.raises(MessageTooLarge):
        decode(b"\x03", max_entries=2)


def test_default_max_entries_is_1024() -> None:
    entry = b"\x01\x00\x02{}"
    assert len(decode(b"\x80\x08" + entry * 1024).entries) == 1024
    with pytest.raises(MessageTooLarge):
        decode(b"\x81\x08" + entry * 1025)


@FAST
@given(updates)
def test_round_trip(update: AwarenessUpdate) -> None:
    assert decode(encode(update)) == update


@FAST
@given(updates, st.integers(min_value=0, max_value=10))
def test_max_entries_is_exact(update: AwarenessUpdate, max_entries: int) -> None:
    payload = encode(update)
    if len(update.entries) <= max_entries:
        assert decode(payload, max_entries) == update
    else:
        with pytest.raises(MessageTooLarge):
            decode(payload, max_entries)


# --- totality ------------------------------------------------------------------------------


def test_every_one_and_two_byte_input_is_handled() -> None:
    for first in range(256):
        decode_or_none(bytes((first,)))
        for second in range(256):
            decode_or_none(bytes((first, second)))


@FUZZ
@given(st.binary(max_size=64), st.integers(min_value=0, max_value=8))
def test_random_bytes(payload: bytes, max_entries: int) -> None:
    decode_or_none(payload, max_entries)


@FUZZ
@given(st.integers(min_value=1, max_value=4), st.binary(max_size=64))
def test_random_bytes_after_a_valid_count(count: int, body: bytes) -> None:
    decode_or_none(bytes((count,)) + body)


@FAST
@given(updates)
def test_every_strict_prefix_is_malformed(update: AwarenessUpdate) -> None:
    payload = encode(update)
    for end in range(len(payload)):
        with pytest.raises(MalformedMessage):
            decode(payload[:end])


@FUZZ
@given(updates.filter(lambda u: len(u.entries) > 0), st.data())
def test_single_bit_flips(update: AwarenessUpdate, data: st.DataObject) -> None:
    payload = bytearray(encode(update))
    bit = data.draw(st.integers(min_value=0, max_value=len(payload) * 8 - 1), label="bit")
    payload[bit // 8] ^= 1 << (bit % 8)
    decode_or_none(bytes(payload))


def test_every_single_bit_flip_of_the_golden_payload() -> None:
    for bit in range(len(GOLDEN_PAYLOAD) * 8):
        flipped = bytearray(GOLDEN_PAYLOAD)
        flipped[bit // 8] ^= 1 << (bit % 8)
        decode_or_none(bytes(flipped))
