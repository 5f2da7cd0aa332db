"""The update-header parser names an edit by (client id, clock) without applying it."""

from __future__ import annotations

from typing import Any

import pycrdt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt.document import RoomDoc
from crdt.origins import ClientOrigin
from loadtests.updates import update_header, update_ranges
from protocol.errors import MalformedMessage
from protocol.varint import decode_varuint


def own_clock(doc: pycrdt.Doc[Any]) -> int:
    """The doc's clock for its own client, read from its encoded state vector."""
    state: bytes = doc.get_state()
    count, pos = decode_varuint(state, 0)
    for _ in range(count):
        client, pos = decode_varuint(state, pos)
        clock, pos = decode_varuint(state, pos)
        if client == doc.client_id:
            return clock
    return 0


# An edit: insert (position fraction, text) or delete (position fraction, length).
edits = st.one_of(
    st.tuples(st.just("insert"), st.floats(0, 1), st.text(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), st.floats(0, 1), st.integers(1, 4)),
    st.tuples(st.just("remote"), st.floats(0, 1), st.text(min_size=1, max_size=8)),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(edits, min_size=1, max_size=25))
def test_header_names_the_writer_and_its_clock_before_the_edit(script: list[Any]) -> None:
    writer: pycrdt.Doc[Any] = pycrdt.Doc()
    other: pycrdt.Doc[Any] = pycrdt.Doc()
    server = RoomDoc()
    text = writer.get("content", type=pycrdt.Text)
    other_text = other.get("content", type=pycrdt.Text)
    updates: list[bytes] = []
    writer.observe(lambda event: updates.append(event.update))
    for kind, where, value in script:
        if kind == "remote":
            # Another client's edit arrives first: the writer's doc now holds foreign structs.
            other.apply_update(writer.get_update(other.get_state()))
            remote = str(other_text)
            other_text.insert(len(remote[: int(len(remote) * where)].encode()), value)
            writer.apply_update(other.get_update(writer.get_state()))
            updates.clear()
            continue
        length = len(str(text))
        if kind == "delete" and length == 0:
            continue
        before = own_clock(writer)
        # The server has everything the writer had before this edit.
        server.apply(writer.get_update(server.state_vector()), ClientOrigin(1))
        updates.clear()
        index = int(length * where)
        if kind == "insert":
            # pycrdt indexes text by UTF-8 bytes; insert on a character boundary.
            text.insert(len(str(text)[:index].encode()), value)
        else:
            start = len(str(text)[: min(index, length - 1)].encode())
            end = len(str(text)[: min(index + value, length)].encode())
            del text[start : max(end, start + 1)]
        (update,) = updates
        if kind == "insert":
            assert update_header(update) == (writer.client_id, before)
            # The server relays the effective update: it starts with the same struct.
            relayed = server.apply(update, ClientOrigin(1))
            assert relayed is not None
            assert update_header(relayed) == (writer.client_id, before)
        else:
            assert update_header(update) is None


def test_effective_update_of_a_fresh_insert_has_the_same_header() -> None:
    writer: pycrdt.Doc[Any] = pycrdt.Doc()
    server = RoomDoc()
    text = writer.get("content", type=pycrdt.Text)
    updates: list[bytes] = []
    writer.observe(lambda event: updates.append(event.update))
    for index in range(5):
        text.insert(index, "x")
        relayed = server.apply(updates[-1], ClientOrigin(1))
        assert relayed is not None
        assert update_header(relayed) == update_header(updates[-1]) == (writer.client_id, index)


@pytest.mark.parametrize("data", [b"", b"\x01", b"\x01\x01", b"\x01\x01\x85", b"\x01\x01\x05"])
def test_truncated_header_is_malformed(data: bytes) -> None:
    with pytest.raises(MalformedMessage):
        update_header(data)


def test_update_without_structs_has_no_header() -> None:
    assert update_header(b"\x00\x00") is None


def clock_set(ranges: list[tuple[int, int, int]]) -> set[tuple[int, int]]:
    return {(client, clock) for client, start, end in ranges for clock in range(start, end)}


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)
operations = st.tuples(
    st.integers(0, 2),
    st.sampled_from(["insert", "delete", "format", "embed", "map", "array", "nested", "sync"]),
    st.floats(0, 1),
    st.text(min_size=1, max_size=6),
    json_values,
)


@settings(max_examples=80, deadline=None)
@given(st.lists(operations, min_size=1, max_size=20), st.data())
def test_ranges_cover_exactly_the_clocks_of_every_struct_even_merged(
    script: list[Any], data: st.DataObject
) -> None:
    docs: list[pycrdt.Doc[Any]] = [pycrdt.Doc() for _ in range(3)]
    made: list[tuple[bytes, set[tuple[int, int]]]] = []
    for index, kind, where, text_value, value in script:
        doc = docs[index]
        if kind == "sync":
            for other in docs:
                other.apply_update(doc.get_update(other.get_state()))
            continue
        before = own_clock(doc)
        state = doc.get_state()
        text = doc.get("text", type=pycrdt.Text)
        content = str(text)
        offset = len(content[: int(len(content) * where)].encode())
        if kind == "insert":
            text.insert(offset, text_value)
        elif kind == "delete" and content:
            char = min(int(len(content) * where), len(content) - 1)
            start = len(content[:char].encode())
            del text[start : start + len(content[char].encode())]
        elif kind == "format" and content:
            text.format(0, len(content.encode()), {"bold": value})
        elif kind == "embed":
            # Embeds are not part of str(text): keep them out of the text we index into.
            doc.get("rich", type=pycrdt.Text).insert_embed(0, {"image": text_value})
        elif kind == "map":
            doc.get("map", type=pycrdt.Map)[text_value] = value
        elif kind == "array":
            doc.get("array", type=pycrdt.Array).append(value)
        elif kind == "nested":
            doc.get("array", type=pycrdt.Array).append(
                pycrdt.Map({"text": pycrdt.Text(text_value)})
            )
        update = doc.get_update(state)
        after = own_clock(doc)
        expected = {(doc.client_id, clock) for clock in range(before, after)}
        assert clock_set(update_ranges(update)) == expected
        made.append((update, expected))
    if made:
        chosen = data.draw(st.lists(st.sampled_from(made), min_size=1, max_size=len(made)))
        merged = pycrdt.merge_updates(*(update for update, _ in chosen))
        union = set().union(*(clocks for _, clocks in chosen))
        assert clock_set(update_ranges(merged)) == union


@pytest.mark.parametrize(
    "data",
    [b"\x01\x01\x05\x00", b"\x01\x01\x05\x00\x04\x01", b"\x01\x01\x05\x00\x1f", b"\x01"],
)
def test_ranges_of_truncated_or_unknown_structs_are_malformed(data: bytes) -> None:
    with pytest.raises(MalformedMessage):
        update_ranges(data)
