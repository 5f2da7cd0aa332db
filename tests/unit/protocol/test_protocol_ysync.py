"""y-protocols frames: golden bytes, round trips, limits, trailing bytes and totality.

The golden frames are derived by hand from y-websocket / y-protocols: ``writeVarUint(type)``
followed by the message body (sync.js ``writeSyncStep1`` / ``writeSyncStep2`` /
``writeUpdate``, auth.js ``writePermissionDenied``, awareness as ``writeVarUint8Array``).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import (
    AppEventMessage,
    AuthPermissionDenied,
    AwarenessMessage,
    Limits,
    MalformedMessage,
    Message,
    MessageTooLarge,
    ProtocolError,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    decode,
    encode,
)
from protocol.ysync import DEFAULT_LIMITS, encode_update

FAST = settings(max_examples=200, deadline=None, database=None)
FUZZ = settings(max_examples=500, deadline=None, database=None)

MESSAGE_TYPES = (
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    AwarenessMessage,
    AuthPermissionDenied,
    QueryAwareness,
    AppEventMessage,
)

GOLDEN_FRAMES: list[tuple[Message, bytes]] = [
    (SyncStep1(b"\x00"), b"\x00\x00\x01\x00"),
    (SyncStep1(b""), b"\x00\x00\x00"),
    (SyncStep2(b"\x00\x00"), b"\x00\x01\x02\x00\x00"),
    (SyncUpdate(b"abc"), b"\x00\x02\x03abc"),
    (SyncUpdate(b"u" * 200), b"\x00\x02\xc8\x01" + b"u" * 200),
    (AwarenessMessage(b"\x00"), b"\x01\x01\x00"),
    (
        AwarenessMessage(b"\x01\x07\x03\x04null"),
        b"\x01\x08\x01\x07\x03\x04null",
    ),
    (AuthPermissionDenied("no"), b"\x02\x00\x02no"),
    (AuthPermissionDenied(""), b"\x02\x00\x00"),
    (AuthPermissionDenied("é"), b"\x02\x00\x02\xc3\xa9"),
    (QueryAwareness(), b"\x03"),
    # 100 < 128, so our own message type still fits a single varuint byte.
    (AppEventMessage(b"\x80"), b"\x64\x01\x80"),
    (AppEventMessage(b"e" * 128), b"\x64\x80\x01" + b"e" * 128),
]
GOLDEN_IDS = [f"{type(m).__name__}-{len(frame)}" for m, frame in GOLDEN_FRAMES]


def decode_or_none(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Message | None:
    """Decode, mapping the codec's own errors to None; anything else escapes and fails."""
    try:
        message = decode(data, limits)
    except ProtocolError:
        return None
    assert isinstance(message, MESSAGE_TYPES)
    return message


messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(SyncStep1, st.binary(max_size=300)),
    st.builds(SyncStep2, st.binary(max_size=300)),
    st.builds(SyncUpdate, st.binary(max_size=300)),
    st.builds(AwarenessMessage, st.binary(max_size=300)),
    st.builds(AuthPermissionDenied, st.text(max_size=80)),
    st.just(QueryAwareness()),
    st.builds(AppEventMessage, st.binary(max_size=300)),
)


def test_error_tree() -> None:
    assert issubclass(MalformedMessage, ProtocolError)
    assert issubclass(MessageTooLarge, ProtocolError)
    assert not issubclass(MalformedMessage, MessageTooLarge)


@pytest.mark.parametrize(("message", "frame"), GOLDEN_FRAMES, ids=GOLDEN_IDS)
def test_encode_golden(message: Message, frame: bytes) -> None:
    assert encode(message) == frame


@pytest.mark.parametrize(("message", "frame"), GOLDEN_FRAMES, ids=GOLDEN_IDS)
def test_decode_golden(message: Message, frame: bytes) -> None:
    assert decode(frame) == message


@pytest.mark.parametrize("update", [b"", b"abc", b"u" * 200])
def test_encode_update_shortcut_matches_encode(update: bytes) -> None:
    assert encode_update(update) == encode(SyncUpdate(update))


@pytest.mark.parametrize(("message", "frame"), GOLDEN_FRAMES, ids=GOLDEN_IDS)
@pytest.mark.parametrize("extra", [b"\x00", b"\x03", b"trailing"])
def test_trailing_bytes_are_malformed(message: Message, frame: bytes, extra: bytes) -> None:
    with pytest.raises(MalformedMessage, match="trailing"):
        decode(frame + extra)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x04", id="type-4"),
        pytest.param(b"\x63\x00", id="type-99"),
        pytest.param(b"\x65\x00", id="type-101"),
        pytest.param(b"\x80", id="truncated-type"),
        pytest.param(b"\x00", id="sync-without-sync-type"),
        pytest.param(b"\x00\x03\x00", id="sync-type-3"),
        pytest.param(b"\x00\x00", id="sync-without-payload"),
        pytest.param(b"\x00\x02\x05ab", id="sync-payload-shorter-than-declared"),
        pytest.param(b"\x00\x02\xff\xff\xff\xff\xff\xff\xff\x0f", id="sync-length-2**53-1"),
        pytest.param(b"\x00\x02\x80\x80\x80\x80\x80\x80\x80\x10", id="sync-length-2**53"),
        pytest.param(b"\x00\x02" + b"\x80" * 8 + b"\x00", id="sync-length-nine-bytes"),
        pytest.param(b"\x01", id="awareness-without-payload"),
        pytest.param(b"\x01\x02\x00", id="awareness-truncated"),
        pytest.param(b"\x02", id="auth-without-auth-type"),
        pytest.param(b"\x02\x01\x00", id="auth-type-1"),
        pytest.param(b"\x02\x00", id="auth-without-reason"),
        pytest.param(b"\x02\x00\x01\xff", id="auth-reason-invalid-utf8"),
        pytest.param(b"\x02\x00\x03\xed\xa0\x80", id="auth-reason-utf8-surrogate"),
        pytest.param(b"\x64", id="app-event-without-payload"),
        pytest.param(b"\x64\x05\x80", id="app-event-truncated"),
    ],
)
def test_malformed_frames(data: bytes) -> None:
    with pytest.raises(MalformedMessage):
        decode(data)


def test_default_limit_is_8_mib() -> None:
    assert Limits().max_message_bytes == 8 * 1024 * 1024


def test_message_at_the_limit_decodes() -> None:
    frame = encode(SyncUpdate(b"u" * 7))
    assert len(frame) == 10
    assert decode(frame, Limits(max_message_bytes=10)) == SyncUpdate(b"u" * 7)


def test_message_over_the_limit_is_too_large() -> None:
    frame = encode(SyncUpdate(b"u" * 8))
    with pytest.raises(MessageTooLarge):
        decode(frame, Limits(max_message_bytes=10))


def test_message_too_large_is_raised_before_parsing() -> None:
    # Garbage that would be malformed (unknown type, bad varint) is still reported as too
    # large: the size check comes first, so an oversized frame costs no parsing.
    with pytest.raises(MessageTooLarge):
        decode(b"\xff" * 11, Limits(max_message_bytes=10))
    with pytest.raises(MessageTooLarge):
        decode(b"\x03" * 2, Limits(max_message_bytes=1))


def test_default_limit_applies() -> None:
    over = DEFAULT_LIMITS.max_message_bytes + 1
    with pytest.raises(MessageTooLarge):
        decode(b"\x00\x02" + b"\x00" * (over - 2))


@FAST
@given(messages)
def test_round_trip(message: Message) -> None:
    assert decode(encode(message)) == message


@FAST
@given(st.binary(max_size=300))
def test_encode_update_round_trip(update: bytes) -> None:
    assert decode(encode_update(update)) == SyncUpdate(update)


@FAST
@given(messages, st.integers(min_value=0, max_value=400))
def test_limits_are_exact(message: Message, limit: int) -> None:
    frame = encode(message)
    if len(frame) <= limit:
        assert decode(frame, Limits(max_message_bytes=limit)) == message
    else:
        with pytest.raises(MessageTooLarge):
            decode(frame, Limits(max_message_bytes=limit))


# --- totality ------------------------------------------------------------------------------


def test_every_one_and_two_byte_input_is_handled() -> None:
    for first in range(256):
        decode_or_none(bytes((first,)))
        for second in range(256):
            decode_or_none(bytes((first, second)))


@FUZZ
@given(st.binary(max_size=64))
def test_random_bytes(data: bytes) -> None:
    decode_or_none(data)


@FUZZ
@given(st.binary(max_size=64), st.integers(min_value=0, max_value=80))
def test_random_bytes_under_small_limits(data: bytes, limit: int) -> None:
    decode_or_none(data, Limits(max_message_bytes=limit))


@FUZZ
@given(
    st.sampled_from(
        [b"\x00\x00", b"\x00\x01", b"\x00\x02", b"\x01", b"\x02\x00", b"\x03", b"\x64"]
    ),
    st.binary(max_size=64),
)
def test_random_bytes_after_a_valid_header(header: bytes, body: bytes) -> None:
    decode_or_none(header + body)


@FAST
@given(messages)
def test_every_strict_prefix_is_malformed(message: Message) -> None:
    # Every frame ends with a length-prefixed field (or is the single type byte), so no
    # strict prefix of a valid frame is itself a frame.
    frame = encode(message)
    for end in range(len(frame)):
        with pytest.raises(MalformedMessage):
            decode(frame[:end])


@FUZZ
@given(messages, st.data())
def test_single_bit_flips(message: Message, data: st.DataObject) -> None:
    frame = bytearray(encode(message))
    bit = data.draw(st.integers(min_value=0, max_value=len(frame) * 8 - 1), label="bit")
    frame[bit // 8] ^= 1 << (bit % 8)
    decode_or_none(bytes(frame))


@pytest.mark.parametrize(("message", "frame"), GOLDEN_FRAMES, ids=GOLDEN_IDS)
def test_every_single_bit_flip_of_golden_frames(message: Message, frame: bytes) -> None:
    for bit in range(len(frame) * 8):
        flipped = bytearray(frame)
        flipped[bit // 8] ^= 1 << (bit % 8)
        decode_or_none(bytes(flipped))
