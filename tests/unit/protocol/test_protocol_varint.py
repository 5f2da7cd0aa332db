"""lib0 varuint / varbytes / varstring: golden bytes, rejection of bad framing, round trips.

lib0 (``encoding.writeVarUint``) writes seven bits at a time, least significant group first,
setting the high bit of every byte but the last. JavaScript numbers are exact up to 2**53 - 1.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import MalformedMessage, ProtocolError
from protocol.varint import (
    MAX_VARUINT,
    decode_varbytes,
    decode_varstring,
    decode_varuint,
    encode_varbytes,
    encode_varstring,
    encode_varuint,
)

FAST = settings(max_examples=300, deadline=None, database=None)

GOLDEN_VARUINTS = [
    (0, b"\x00"),
    (1, b"\x01"),
    (127, b"\x7f"),
    (128, b"\x80\x01"),
    (300, b"\xac\x02"),
    (16_383, b"\xff\x7f"),
    (16_384, b"\x80\x80\x01"),
    (2**32, b"\x80\x80\x80\x80\x10"),
    (2**53 - 1, b"\xff\xff\xff\xff\xff\xff\xff\x0f"),
]


def test_max_varuint_is_the_largest_exact_javascript_integer() -> None:
    assert MAX_VARUINT == 2**53 - 1


@pytest.mark.parametrize(("value", "golden"), GOLDEN_VARUINTS)
def test_encode_varuint_golden(value: int, golden: bytes) -> None:
    assert encode_varuint(value) == golden


@pytest.mark.parametrize(("value", "golden"), GOLDEN_VARUINTS)
def test_decode_varuint_golden(value: int, golden: bytes) -> None:
    assert decode_varuint(golden, 0) == (value, len(golden))


def test_decode_varuint_reads_from_the_given_position() -> None:
    assert decode_varuint(b"\xff\xac\x02\x07", 1) == (300, 3)


@pytest.mark.parametrize("value", [-1, 2**53, 2**64])
def test_encode_varuint_rejects_out_of_range(value: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        encode_varuint(value)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x80\x80\x80\x80\x80\x80\x80\x10", id="2**53"),
        pytest.param(b"\xff\xff\xff\xff\xff\xff\xff\x7f", id="2**56-1"),
        pytest.param(b"\x80" * 8 + b"\x00", id="nine-bytes"),
        pytest.param(b"\xff" * 8 + b"\x01", id="nine-bytes-2**63"),
        pytest.param(b"\x80" * 20 + b"\x01", id="twenty-one-bytes"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\x80", id="truncated-1"),
        pytest.param(b"\xac", id="truncated-300"),
        pytest.param(b"\xff\xff\xff\xff\xff\xff\xff", id="truncated-7-bytes"),
    ],
)
def test_decode_varuint_rejects(data: bytes) -> None:
    with pytest.raises(MalformedMessage):
        decode_varuint(data, 0)


def test_decode_varuint_rejects_a_position_past_the_end() -> None:
    with pytest.raises(MalformedMessage):
        decode_varuint(b"\x01", 1)


def test_varbytes_and_varstring_golden() -> None:
    assert encode_varbytes(b"") == b"\x00"
    assert encode_varbytes(b"abc") == b"\x03abc"
    assert encode_varbytes(b"x" * 200) == b"\xc8\x01" + b"x" * 200
    # lib0 writeVarString prefixes the UTF-8 byte length, not the number of code points.
    assert encode_varstring("é") == b"\x02\xc3\xa9"
    assert encode_varstring("😀") == b"\x04\xf0\x9f\x98\x80"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x03ab", id="shorter-than-declared"),
        pytest.param(b"\x80", id="truncated-length"),
        pytest.param(b"\xff\xff\xff\xff\xff\xff\xff\x0f", id="length-2**53-1"),
    ],
)
def test_decode_varbytes_rejects(data: bytes) -> None:
    with pytest.raises(MalformedMessage):
        decode_varbytes(data, 0, len(data))


def test_decode_varbytes_rejects_a_length_over_max_bytes() -> None:
    with pytest.raises(MalformedMessage):
        decode_varbytes(b"\x03abc", 0, 2)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x01\xff", id="invalid-start-byte"),
        pytest.param(b"\x01\xc3", id="truncated-sequence"),
        pytest.param(b"\x03\xed\xa0\x80", id="encoded-surrogate"),
        pytest.param(b"\x02\xc0\x80", id="overlong-nul"),
    ],
)
def test_decode_varstring_rejects_invalid_utf8(data: bytes) -> None:
    with pytest.raises(MalformedMessage, match="UTF-8"):
        decode_varstring(data, 0, len(data))


@FAST
@given(st.integers(min_value=0, max_value=MAX_VARUINT), st.binary(max_size=8))
def test_varuint_round_trip(value: int, suffix: bytes) -> None:
    encoded = encode_varuint(value)
    assert len(encoded) <= 8
    assert decode_varuint(encoded + suffix, 0) == (value, len(encoded))


@FAST
@given(st.binary(max_size=300), st.binary(max_size=8))
def test_varbytes_round_trip(payload: bytes, suffix: bytes) -> None:
    encoded = encode_varbytes(payload)
    data = encoded + suffix
    assert decode_varbytes(data, 0, len(data)) == (payload, len(encoded))


@FAST
@given(st.text(max_size=100))
def test_varstring_round_trip(text: str) -> None:
    encoded = encode_varstring(text)
    assert decode_varstring(encoded, 0, len(encoded)) == (text, len(encoded))


@FAST
@given(st.binary(max_size=12), st.integers(min_value=0, max_value=12))
def test_varint_decoders_are_total(data: bytes, pos: int) -> None:
    for decoder in (
        lambda: decode_varuint(data, pos),
        lambda: decode_varbytes(data, pos, len(data)),
        lambda: decode_varstring(data, pos, len(data)),
    ):
        try:
            _, next_pos = decoder()
        except ProtocolError:
            continue
        assert pos < next_pos <= len(data)
