"""The structural validator of Yjs v1 payloads: it accepts everything pycrdt writes, refuses
every count its bytes cannot hold, and raises nothing but MalformedUpdate, whatever the bytes.

Golden items are built by hand from the layout in the module docstring (Yjs ``encoding.js``,
yrs ``block.rs``); each one is also fed to pycrdt, so that the validator and the CRDT core are
seen to agree on where every element ends.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable
from typing import Any

import pycrdt
import pytest
from hypothesis import given, reject, settings
from hypothesis import strategies as st

from protocol import MalformedUpdate, SyncStep1, SyncUpdate, decode
from protocol.varint import encode_varbytes as vb
from protocol.varint import encode_varstring as vs
from protocol.varint import encode_varuint as v
from protocol.yupdate import (
    MAX_ANY_DEPTH,
    validate_delete_set,
    validate_state_vector,
    validate_update,
)

PROPERTIES = settings(max_examples=150, deadline=None, database=None)
FUZZ = settings(max_examples=400, deadline=None, database=None)

# -- the bombs of the issue, byte for byte -----------------------------------------------------

# Sync step 1 whose state vector claims 900 million entries.
STATE_VECTOR_BOMB_FRAME = bytes.fromhex("00000780d293ad030101")
# An update whose header claims 400 million clients.
UPDATE_HEADER_BOMB = v(400_000_000) + b"\x01\x01\x01"
# Empty structs, then a delete set claiming 400 million clients; and one claiming 400
# million ranges for one client.
DELETE_SET_CLIENTS_BOMB = b"\x00" + v(400_000_000) + b"\x01\x01"
DELETE_SET_RANGES_BOMB = b"\x00\x01\x07" + v(400_000_000) + b"\x01\x01"


def _item(ref: int, content: bytes, *, info: int = 0, parent: bytes | None = None) -> bytes:
    """An update of one item of client 5 at clock 0, in root type ``r``, empty delete set."""
    body = bytes((ref | info,)) + (b"\x01" + vs("r") if parent is None else parent) + content
    return b"\x01\x01" + v(5) + v(0) + body + b"\x00"


ANY_OF_EVERY_KIND = (
    b"\x7f"  # undefined
    + b"\x7e"  # null
    + b"\x7d\x81\x01"  # signed varint
    + b"\x7c"
    + struct.pack(">f", 1.5)
    + b"\x7b"
    + struct.pack(">d", 2.5)
    + b"\x7a"
    + struct.pack(">q", -3)
    + b"\x79\x78"  # false, true
    + b"\x77"
    + vs("s")
    + b"\x76\x01"
    + vs("k")
    + b"\x75\x01\x7e"  # {"k": [null]}
    + b"\x74"
    + vb(b"\x01")
)

GOLDEN: dict[str, bytes] = {
    "empty": b"\x00\x00",
    "gc": b"\x01\x01" + v(5) + v(0) + b"\x00\x04\x00",
    "gc then skip": b"\x01\x02" + v(5) + v(0) + b"\x00\x04\x0a\x02\x00",
    "deleted": _item(1, v(3)),
    # yrs reads one string more than the count says (Yjs reads the count).
    "json": _item(2, v(1) + vs("1") + vs('"a"')),
    "binary": _item(3, vb(b"\x00\x01")),
    "string": _item(4, vs("héllo 🎉")),
    "embed": _item(5, vs('{"x":1}')),
    "format": _item(6, vs("bold") + vs("true")),
    **{f"type {ref}": _item(7, v(ref)) for ref in (0, 1, 2, 4, 5, 6, 9, 15)},
    "type xml element": _item(7, v(3) + vs("p")),
    "any of every kind": _item(8, v(11) + ANY_OF_EVERY_KIND),
    "doc": _item(9, vs("guid") + b"\x76\x00"),
    "map entry": _item(8, v(1) + b"\x7e", info=0x20, parent=b"\x01" + vs("m") + vs("key")),
    "parent id": _item(4, vs("x"), parent=b"\x00" + v(5) + v(9)),
    "origins": b"\x01\x01" + v(5) + v(1) + b"\xc4" + v(5) + v(0) + v(6) + v(0) + vs("x") + b"\x00",
    "delete set": b"\x00\x02" + v(5) + b"\x02\x00\x01\x04\x02" + v(6) + b"\x01\x00\x09",
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_updates_pass_and_pycrdt_reads_them_too(name: str) -> None:
    update = GOLDEN[name]
    validate_update(update)
    pycrdt.Doc().apply_update(update)


REFUSED: dict[str, bytes] = {
    "json count without yrs's extra string": _item(2, v(2) + vs("1") + vs('"a"')),
    "move content (yrs feature)": _item(11, b"\x01" + v(5) + v(0)),
    "weak link type (yrs feature)": _item(7, v(7) + b"\x00" + v(5) + v(0)),
    "unknown type": _item(7, v(8)),
    "unknown any tag": _item(8, v(1) + b"\x10"),
    **{f"unknown content {ref}": _item(ref, v(1)) for ref in (12, 16, 24, 31)},
    "trailing bytes": b"\x00\x00\x00",
    "string longer than the update": _item(4, v(400_000_000) + b"x"),
    "binary longer than the update": _item(3, v(1 << 40)),
    "typed string longer than the update": b"\x01\x01"
    + v(5)
    + v(1)
    + b"\x84"
    + v(5)
    + v(0)
    + v(100)
    + b"x\x00",
    "typed string origin truncated": b"\x01\x01" + v(5) + v(1) + b"\xc4" + v(5) + b"\x80",
    "json count": _item(2, v(400_000_000) + vs("1")),
    "any count": _item(8, v(400_000_000) + b"\x7e"),
    "any object count": _item(8, v(1) + b"\x76" + v(400_000_000) + vs("k") + b"\x7e"),
    "any array count": _item(8, v(1) + b"\x75" + v(400_000_000) + b"\x7e"),
    "structs count": b"\x01" + v(400_000_000) + v(5) + v(0) + b"\x00\x01\x00",
    "update header clients": UPDATE_HEADER_BOMB,
    "delete set clients": DELETE_SET_CLIENTS_BOMB,
    "delete set ranges": DELETE_SET_RANGES_BOMB,
    "parent info over 32 bits": _item(4, vs("x"), parent=v(1 << 33) + v(5) + v(0)),
    "varint of eleven bytes": b"\x01\x01" + b"\xff" * 10 + b"\x01" + v(0) + b"\x00\x01\x00",
    "empty": b"",
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_malformed_or_lying_updates_are_refused(name: str) -> None:
    with pytest.raises(MalformedUpdate):
        validate_update(REFUSED[name])


def test_the_state_vector_bomb_of_the_issue_is_refused() -> None:
    message = decode(STATE_VECTOR_BOMB_FRAME)
    assert isinstance(message, SyncStep1)
    with pytest.raises(MalformedUpdate, match="900000000 state vector entries"):
        validate_state_vector(message.state_vector)


def test_the_update_header_bomb_is_refused() -> None:
    message = decode(b"\x00\x02" + vb(UPDATE_HEADER_BOMB))
    assert isinstance(message, SyncUpdate)
    with pytest.raises(MalformedUpdate, match="400000000 clients"):
        validate_update(message.update)


@pytest.mark.parametrize(
    "delete_set",
    [DELETE_SET_CLIENTS_BOMB[1:], DELETE_SET_RANGES_BOMB[1:], v(1 << 52) + b"\x01\x01"],
)
def test_delete_sets_claiming_huge_counts_are_refused(delete_set: bytes) -> None:
    with pytest.raises(MalformedUpdate, match="cannot fit"):
        validate_delete_set(delete_set)


def _nested(depth: int) -> bytes:
    return b"\x75\x01" * depth + b"\x7e"


def test_any_nesting_is_bounded() -> None:
    deepest = _item(8, v(1) + _nested(MAX_ANY_DEPTH))
    validate_update(deepest)
    pycrdt.Doc().apply_update(deepest)
    with pytest.raises(MalformedUpdate, match="nested deeper"):
        validate_update(_item(8, v(1) + _nested(MAX_ANY_DEPTH + 1)))
    with pytest.raises(MalformedUpdate):
        validate_update(_item(8, v(1) + _nested(100_000)))


# -- everything pycrdt writes passes ----------------------------------------------------------

JSON_LEAVES = st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=8)
JSON_VALUES = st.recursive(
    JSON_LEAVES | st.binary(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=10,
)
TEXT = st.text(max_size=12)  # any code point: pycrdt writes UTF-8 of astral planes too

Op = Callable[[pycrdt.Doc[Any]], None]


def _text_insert(text: str, bold: bool) -> Op:
    def op(doc: pycrdt.Doc[Any]) -> None:
        # Index 0 or the end: pycrdt's indexes into non-ASCII text are byte offsets.
        target = doc.get("t", type=pycrdt.Text)
        target.insert(0, text, {"bold": True} if bold else None)

    return op


def _text_delete(count: int) -> Op:
    def op(doc: pycrdt.Doc[Any]) -> None:
        target = doc.get("t", type=pycrdt.Text)
        if len(target):
            del target[0 : min(count, len(target))]

    return op


def _map_set(key: str, value: object) -> Op:
    def op(doc: pycrdt.Doc[Any]) -> None:
        doc.get("m", type=pycrdt.Map)[key] = value

    return op


def _map_delete(key: str) -> Op:
    def op(doc: pycrdt.Doc[Any]) -> None:
        target = doc.get("m", type=pycrdt.Map)
        if key in target:
            del target[key]

    return op


def _array_op(kind: int, value: object) -> Op:
    def op(doc: pycrdt.Doc[Any]) -> None:
        target = doc.get("a", type=pycrdt.Array)
        if kind == 0:
            target.append(value)
        elif kind == 1:
            target.append(pycrdt.Map({"nested": value}))
        elif kind == 2:
            target.append(pycrdt.Text("inner"))
        elif kind == 3:
            target.append(pycrdt.Doc())
        elif len(target):
            del target[0]

    return op


def _xml_op(tag: str, text: str) -> Op:
    def op(doc: pycrdt.Doc[Any]) -> None:
        fragment = doc.get("x", type=pycrdt.XmlFragment)
        fragment.children.append(pycrdt.XmlElement(tag, {"k": "v"}, [pycrdt.XmlText(text)]))

    return op


OPS = st.one_of(
    st.builds(_text_insert, TEXT.filter(bool), st.booleans()),
    st.builds(_text_delete, st.integers(1, 4)),
    st.builds(_map_set, st.sampled_from("xyz"), JSON_VALUES),
    st.builds(_map_delete, st.sampled_from("xyz")),
    st.builds(_array_op, st.integers(0, 4), JSON_VALUES),
    st.builds(_xml_op, st.sampled_from(["p", "h1"]), TEXT),
)


def _run(doc: pycrdt.Doc[Any], op: Op) -> None:
    try:
        op(doc)
    except BaseException as exc:
        if type(exc).__name__ == "PanicException":  # a pycrdt bug, not ours: skip the case
            reject()
        raise


@PROPERTIES
@given(st.lists(st.tuples(st.integers(0, 2), OPS), min_size=1, max_size=12), st.booleans())
def test_every_update_pycrdt_writes_passes(ops: list[tuple[int, Op]], sync_midway: bool) -> None:
    """Three replicas edit; every transaction's update, every diff against a state vector,
    every merge and every state vector they produce passes the validator."""
    replicas: list[pycrdt.Doc[Any]] = [pycrdt.Doc() for _ in range(3)]
    produced: list[bytes] = []
    for replica in replicas:
        replica.observe(lambda event: produced.append(event.update))
    for step, (who, op) in enumerate(ops):
        _run(replicas[who], op)
        if sync_midway and step == len(ops) // 2:
            for source in replicas:
                for target in replicas:
                    if source is not target:
                        target.apply_update(source.get_update(target.get_state()))
    for update in produced:
        validate_update(update)
    if produced:
        validate_update(pycrdt.merge_updates(*produced))
    for replica in replicas:
        validate_update(replica.get_update())
        validate_state_vector(replica.get_state())
        for other in replicas:
            validate_update(replica.get_update(other.get_state()))


# -- totality: nothing but MalformedUpdate, whatever the bytes ---------------------------------

VALIDATORS = (validate_update, validate_state_vector, validate_delete_set)


def _total(data: bytes) -> None:
    for validate in VALIDATORS:
        with contextlib.suppress(MalformedUpdate):
            validate(data)


def _sample_update(text: str, key: str, value: object) -> bytes:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.get("t", type=pycrdt.Text).insert(0, text)
    doc.get("m", type=pycrdt.Map)[key] = value
    del doc.get("t", type=pycrdt.Text)[0:1]
    return doc.get_update()


SAMPLES = st.builds(_sample_update, TEXT.filter(bool), st.text(max_size=3), JSON_VALUES)


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_raise_nothing_else(data: bytes) -> None:
    _total(data)


# Positions are drawn independently of the update: its length varies with pycrdt's random
# client ids, and hypothesis wants the same draws for the same example.
POSITIONS = st.integers(0, 10_000)


@FUZZ
@given(SAMPLES, POSITIONS)
def test_truncated_updates_raise_nothing_else(update: bytes, position: int) -> None:
    cut = position % len(update)
    with pytest.raises(MalformedUpdate):
        validate_update(update[:cut])
    _total(update[:cut])


@FUZZ
@given(SAMPLES, st.lists(st.tuples(POSITIONS, st.integers(0, 7)), min_size=1, max_size=4))
def test_bit_flipped_updates_raise_nothing_else(
    update: bytes, flips: list[tuple[int, int]]
) -> None:
    flipped = bytearray(update)
    for position, bit in flips:
        flipped[position % len(flipped)] ^= 1 << bit
    _total(bytes(flipped))


@FUZZ
@given(SAMPLES, st.integers(0, 2**52))
def test_a_lying_client_count_is_refused(update: bytes, extra: int) -> None:
    """Replace the update's client count by one its bytes cannot hold: always refused."""
    body = update[1:]  # pycrdt writes one client: its count is the single byte 0x01
    assert update[0] == 1
    lie = len(body) // 3 + 1 + extra
    with pytest.raises(MalformedUpdate):
        validate_update(v(lie) + body)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 2**53 - 1), st.integers(0, 2**32)), max_size=8))
def test_state_vectors_pass_and_a_lying_count_is_refused(
    entries: list[tuple[int, int]],
) -> None:
    body = b"".join(v(client) + v(clock) for client, clock in entries)
    validate_state_vector(v(len(entries)) + body)
    with pytest.raises(MalformedUpdate):
        validate_state_vector(v(len(body) // 2 + 1) + body)
