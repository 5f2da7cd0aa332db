"""The direct path's codec: client frames read back whatever the chunking, every framing rule
refused with its close code, close payloads, the opening handshake's accept key."""

from __future__ import annotations

import itertools
import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.realtime.direct import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameError,
    FrameReader,
    accept_key,
    binary_frame,
    close_payload,
    parse_close,
    problem_response,
    server_frame,
)

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover
    from websockets.utils import apply_mask


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True) -> bytes:
    """A client frame as RFC 6455 section 5.2 lays it out (masked unless told not to)."""
    size = len(payload)
    first = (0x80 if fin else 0) | opcode
    mask_bit = 0x80 if masked else 0
    if size < 126:
        header = struct.pack("!BB", first, mask_bit | size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", first, mask_bit | 126, size)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, size)
    if not masked:
        return header + payload
    mask = os.urandom(4)
    return header + mask + apply_mask(payload, mask)


def fragments(opcode: int, message: bytes, cuts: list[int]) -> bytes:
    """``message`` as a first frame and continuations, cut at ``cuts``."""
    bounds = [0, *sorted({c % (len(message) + 1) for c in cuts}), len(message)]
    pieces = [message[a:b] for a, b in itertools.pairwise(bounds)]
    out = b""
    for index, piece in enumerate(pieces):
        out += client_frame(
            opcode if index == 0 else OP_CONTINUATION, piece, fin=index == len(pieces) - 1
        )
    return out


def read_all(stream: bytes, chunks: list[int], max_size: int = 1 << 20) -> list[tuple[int, bytes]]:
    reader = FrameReader(max_size)
    out: list[tuple[int, bytes]] = []
    position = 0
    for size in chunks:
        out += reader.feed(stream[position : position + size])
        position += size
    out += reader.feed(stream[position:])
    return out


messages = st.lists(
    st.tuples(
        st.sampled_from([OP_BINARY, OP_TEXT]),
        st.binary(max_size=300),
        st.lists(st.integers(0, 400), max_size=3),
    ),
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(messages, st.lists(st.integers(1, 64), max_size=40), st.binary(max_size=20))
def test_messages_come_back_whole_however_the_bytes_arrive(
    sent: list[tuple[int, bytes, list[int]]], chunks: list[int], ping: bytes
) -> None:
    stream = client_frame(OP_PING, ping)
    for opcode, message, cuts in sent:
        stream += fragments(opcode, message, cuts)
    got = read_all(stream, chunks)
    assert got == [(OP_PING, ping)] + [(opcode, message) for opcode, message, _ in sent]


def test_control_frames_may_come_between_fragments() -> None:
    stream = (
        client_frame(OP_BINARY, b"ab", fin=False)
        + client_frame(OP_PING, b"p")
        + client_frame(OP_CONTINUATION, b"cd")
    )
    assert read_all(stream, []) == [(OP_PING, b"p"), (OP_BINARY, b"abcd")]


def test_lengths_of_16_and_64_bits_are_read() -> None:
    for size in (126, 65_535, 65_536, 70_000):
        payload = os.urandom(size)
        assert read_all(client_frame(OP_BINARY, payload), [7, 3]) == [(OP_BINARY, payload)]


@pytest.mark.parametrize(
    ("stream", "code", "words"),
    [
        (client_frame(OP_BINARY, b"x", masked=False), 1002, "masked"),
        (bytes([0x80 | 0x40 | OP_BINARY, 0x80]) + b"\0\0\0\0", 1002, "reserved"),
        (client_frame(0x3, b"x"), 1002, "opcode 3"),
        (client_frame(0xB, b"x"), 1002, "opcode 11"),
        (client_frame(OP_PING, b"x", fin=False), 1002, "fragmented control"),
        (client_frame(OP_PING, b"x" * 126), 1002, "125 bytes"),
        (client_frame(OP_CONTINUATION, b"x"), 1002, "without a message"),
        (
            client_frame(OP_BINARY, b"x", fin=False) + client_frame(OP_BINARY, b"y"),
            1002,
            "before the fragmented one ended",
        ),
        (client_frame(OP_BINARY, b"x" * 101), 1009, "larger than 100"),
        (
            client_frame(OP_BINARY, b"x" * 60, fin=False)
            + client_frame(OP_CONTINUATION, b"y" * 60),
            1009,
            "larger than 100",
        ),
    ],
)
def test_broken_framing_is_refused_with_its_close_code(
    stream: bytes, code: int, words: str
) -> None:
    with pytest.raises(FrameError) as refused:
        read_all(stream, [], max_size=100)
    assert refused.value.code == code
    assert words in refused.value.reason


def test_a_message_too_big_is_refused_from_its_header_alone() -> None:
    """The 1009 comes before the payload: a client cannot make the server buffer it."""
    header = client_frame(OP_BINARY, b"x" * 70_000)[:14]
    with pytest.raises(FrameError) as refused:
        FrameReader(1000).feed(header)
    assert refused.value.code == 1009


def test_close_payloads() -> None:
    assert parse_close(b"") == (1005, "")
    assert parse_close(close_payload(1000, "bye")) == (1000, "bye")
    assert parse_close(close_payload(4001, "private")) == (4001, "private")
    for bad, code in (
        (b"\x03", 1002),
        ((1005).to_bytes(2, "big"), 1002),
        ((999).to_bytes(2, "big"), 1002),
        ((5000).to_bytes(2, "big"), 1002),
        ((1000).to_bytes(2, "big") + b"\xff\xfe", 1007),
    ):
        with pytest.raises(FrameError) as refused:
            parse_close(bad)
        assert refused.value.code == code
    # A reason too long for a control frame is cut on a character boundary.
    long = close_payload(1011, "é" * 100)
    assert len(long) <= 125
    assert parse_close(long)[1] == "é" * 61


def test_server_frames_are_unmasked_and_sized() -> None:
    assert binary_frame(b"ab") == b"\x82\x02ab"
    assert server_frame(OP_PONG, b"") == b"\x8a\x00"
    assert server_frame(OP_CLOSE, b"x" * 200)[:4] == b"\x88\x7e\x00\xc8"
    assert server_frame(OP_BINARY, b"x" * 70_000)[:2] == b"\x82\x7f"


PLAIN = {
    "host": "example.com",
    "upgrade": "websocket",
    "connection": "keep-alive, Upgrade",
    "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
    "sec-websocket-version": "13",
}


def test_accept_key_of_the_rfc_example() -> None:
    assert accept_key(PLAIN) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    offered = {
        **PLAIN,
        "sec-websocket-extensions": "permessage-deflate",
        "sec-websocket-protocol": "x",
    }
    assert accept_key(offered) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # declined, not refused


@pytest.mark.parametrize(
    "change",
    [
        {"host": None},
        {"upgrade": "h2c"},
        {"connection": "keep-alive"},
        {"sec-websocket-version": "8"},
        {"sec-websocket-key": None},
        {"sec-websocket-key": "not base64!"},
        {"sec-websocket-key": "c2hvcnQ="},  # 5 bytes
        {"sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==, dGhlIHNhbXBsZSBub25jZQ=="},
    ],
)
def test_anything_but_a_plain_opening_request_is_left_to_uvicorn(
    change: dict[str, str | None],
) -> None:
    headers = {k: v for k, v in {**PLAIN, **change}.items() if v is not None}
    assert accept_key(headers) is None


def test_a_refusal_is_problem_json_with_retry_after_when_shed() -> None:
    response = problem_response(503, {"status": 503, "title": "overloaded", "retryAfter": 1.2})
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"Retry-After: 2" in head
    assert b"Connection: close" in head
    assert b"application/problem+json" in head
    assert body.startswith(b"{")
