"""RoomDoc: effective updates, idempotence, error mapping, convergence through a relay."""

from __future__ import annotations

import contextlib
import random
from typing import Any

import pycrdt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt.document import RoomDoc
from crdt.errors import InvalidUpdate
from crdt.origins import ClientOrigin, StoreOrigin

FAST = settings(max_examples=60, deadline=None, database=None)


def _client_edit(text: str) -> bytes:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.get("content", type=pycrdt.Text).insert(0, text)
    return doc.get_update()


def _text(doc: pycrdt.Doc[Any]) -> str:
    return str(doc.get("content", type=pycrdt.Text))


def test_apply_returns_effective_update_then_none_for_duplicate() -> None:
    room = RoomDoc()
    update = _client_edit("hello")
    effective = room.apply(update, ClientOrigin(1))
    assert effective is not None
    replica: pycrdt.Doc[Any] = pycrdt.Doc()
    replica.apply_update(effective)
    assert _text(replica) == "hello"
    assert room.apply(update, ClientOrigin(2)) is None


def test_diff_gives_what_a_peer_misses() -> None:
    room = RoomDoc()
    room.apply(_client_edit("abc"), ClientOrigin(1))
    peer: pycrdt.Doc[Any] = pycrdt.Doc()
    peer.apply_update(room.diff(peer.get_state()))
    assert _text(peer) == "abc"
    assert room.diff(room.state_vector()) == b"\x00\x00"


@pytest.mark.parametrize("junk", [b"", b"\x00", b"\xff" * 12, b"\x01\x02garbage"])
def test_junk_update_raises_invalid_update_and_changes_nothing(junk: bytes) -> None:
    room = RoomDoc()
    room.apply(_client_edit("keep"), ClientOrigin(1))
    before = room.state_vector()
    with pytest.raises(InvalidUpdate):
        room.apply(junk, ClientOrigin(2))
    assert room.state_vector() == before
    assert not room.tainted


def test_invalid_state_vector_raises_invalid_update() -> None:
    with pytest.raises(InvalidUpdate):
        RoomDoc().diff(b"\xff\xff")


def test_load_replays_snapshot_and_journal_idempotently() -> None:
    first = _client_edit("one")
    room = RoomDoc()
    room.load([first, first])
    assert _text(room.doc) == "one"
    assert room.local_changes() is None


def test_local_changes_collects_server_edits() -> None:
    room = RoomDoc()
    with room.doc.transaction(origin=StoreOrigin()):
        room.doc.get("content", type=pycrdt.Text).insert(0, "server")
    change = room.local_changes()
    assert change is not None
    replica: pycrdt.Doc[Any] = pycrdt.Doc()
    replica.apply_update(change)
    assert _text(replica) == "server"


@FAST
@given(st.binary(max_size=200))
def test_apply_is_total(data: bytes) -> None:
    room = RoomDoc()
    with contextlib.suppress(InvalidUpdate):
        room.apply(data, ClientOrigin(1))


@FAST
@given(
    edits=st.lists(
        # ASCII: pycrdt's Text indexes are UTF-8 byte offsets (see crdt/section.py).
        st.tuples(
            st.integers(0, 2),
            st.text(alphabet="abcxyz", min_size=1, max_size=3),
            st.booleans(),
        ),
        min_size=1,
        max_size=30,
    ),
    seed=st.integers(0, 2**32 - 1),
)
def test_clients_converge_through_the_relay(edits: list[tuple[int, str, bool]], seed: int) -> None:
    """Three clients edit; their updates reach the room shuffled and duplicated; each client
    gets the room's effective updates (never its own back, in room order), then one final
    state-vector sync, as y-websocket does on reconnect. Everyone ends equal."""
    rng = random.Random(seed)
    clients: list[pycrdt.Doc[Any]] = [pycrdt.Doc() for _ in range(3)]
    outgoing: list[tuple[int, bytes]] = []
    for index, doc in enumerate(clients):
        doc.observe(lambda event, i=index: outgoing.append((i, event.update)))
    room = RoomDoc()
    relayed: list[tuple[int, bytes]] = []
    for who, chunk, delete in edits:
        text = clients[who].get("content", type=pycrdt.Text)
        if delete and len(str(text)) > 0:
            del text[0:1]
        else:
            text.insert(0, chunk)
        batch, outgoing[:] = list(outgoing), []
        rng.shuffle(batch)
        for sender, update in batch + batch[: rng.randint(0, len(batch))]:
            effective = room.apply(update, ClientOrigin(sender))
            if effective is not None:
                relayed.append((sender, effective))
    for index, doc in enumerate(clients):
        for sender, update in relayed:
            if sender != index:
                doc.apply_update(update)
        doc.apply_update(room.diff(doc.get_state()))
    texts = {_text(doc) for doc in clients}
    assert texts == {_text(room.doc)}


class PanicException(BaseException):
    """Stands in for ``pyo3_runtime.PanicException``, which cannot be imported by name."""


def test_rust_panic_becomes_invalid_update(monkeypatch: pytest.MonkeyPatch) -> None:
    def panic(self: object, update: bytes) -> None:
        raise PanicException("attempt to divide by zero")

    room = RoomDoc()
    monkeypatch.setattr(pycrdt.Doc, "apply_update", panic)
    with pytest.raises(InvalidUpdate, match="divide by zero"):
        room.apply(b"\x00\x00", ClientOrigin(1))


def test_other_base_exceptions_are_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(self: object, update: bytes) -> None:
        raise KeyboardInterrupt

    room = RoomDoc()
    monkeypatch.setattr(pycrdt.Doc, "apply_update", interrupted)
    with pytest.raises(KeyboardInterrupt):
        room.apply(b"\x00\x00", ClientOrigin(1))


# Payloads whose counts cannot fit in their bytes (the frame bombs of the hardening issue):
# pycrdt would size its buffers from them, about a gigabyte and seconds of work each.
STATE_VECTOR_BOMB = bytes.fromhex("80d293ad030101")  # 900 million entries
UPDATE_BOMBS = {
    "update header claiming 400 million clients": bytes.fromhex("8088debe01010101"),
    "delete set claiming 400 million clients": bytes.fromhex("008088debe010101"),
    "delete set claiming 400 million ranges": bytes.fromhex("0001078088debe010101"),
}


def _untouchable(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("pycrdt must not see a payload the validator refuses")

    monkeypatch.setattr(pycrdt.Doc, "apply_update", refuse)
    monkeypatch.setattr(pycrdt.Doc, "get_update", refuse)


@pytest.mark.parametrize("name", sorted(UPDATE_BOMBS))
def test_update_bombs_are_refused_before_pycrdt_sees_them(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    room = RoomDoc()
    room.apply(_client_edit("keep"), ClientOrigin(1))
    before = room.state_vector()
    _untouchable(monkeypatch)
    with pytest.raises(InvalidUpdate, match="malformed update"):
        room.apply(UPDATE_BOMBS[name], ClientOrigin(2))
    monkeypatch.undo()
    assert room.state_vector() == before
    assert not room.tainted


def test_state_vector_bomb_is_refused_before_pycrdt_sees_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    room = RoomDoc()
    _untouchable(monkeypatch)
    with pytest.raises(InvalidUpdate, match="malformed state vector"):
        room.diff(STATE_VECTOR_BOMB)
