"""Unit and property tests of crdt.ids: id rules and room-name parsing."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt.errors import CrdtError
from crdt.ids import (
    MAX_ID_LENGTH,
    InvalidIdError,
    InvalidRoomName,
    RoomName,
    check_document_id,
    check_section_id,
    is_valid_document_id,
    is_valid_section_id,
    parse_room_name,
)

ID_ALPHABET = "abcXYZ019_-"
valid_ids = st.text(alphabet=ID_ALPHABET, min_size=1, max_size=MAX_ID_LENGTH)


@pytest.mark.parametrize(
    ("name", "document_id", "section_id"),
    [
        ("D", "D", None),
        ("D/S", "D", "S"),
        ("plan-2025_Q1", "plan-2025_Q1", None),
        ("plan-2025_Q1/intro_1", "plan-2025_Q1", "intro_1"),
        ("-/_", "-", "_"),
        ("a" * 64, "a" * 64, None),
        (f"{'a' * 64}/{'b' * 64}", "a" * 64, "b" * 64),
    ],
)
def test_parse_room_name_accepts(name: str, document_id: str, section_id: str | None) -> None:
    room = parse_room_name(name)
    assert room == RoomName(document_id, section_id)
    assert str(room) == name
    assert room.is_outline is (section_id is None)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "/",
        "D/",
        "/S",
        "D//S",
        "D/S/T",
        "D/S/",
        "a" * 65,
        f"D/{'b' * 65}",
        "D S",
        "D/S ",
        " D",
        "D\n",
        "D/S\n",
        "D.S",
        "D\\S",
        "doc%2Fsec",
        "café",
        "D/séction",
        "D/٣",  # an Arabic-Indic digit: a digit, but not ASCII
        "D\x00",
        "../etc",
    ],
)
def test_parse_room_name_rejects(name: str) -> None:
    with pytest.raises(InvalidRoomName):
        parse_room_name(name)


def test_error_family() -> None:
    assert issubclass(InvalidRoomName, InvalidIdError)
    assert issubclass(InvalidIdError, ValueError)
    assert issubclass(InvalidIdError, CrdtError)


def test_error_message_echo_is_bounded() -> None:
    with pytest.raises(InvalidRoomName) as info:
        parse_room_name("x" * 10_000)
    assert len(str(info.value)) < 200


def test_room_name_constructor_validates() -> None:
    with pytest.raises(InvalidRoomName):
        RoomName("bad id")
    with pytest.raises(InvalidRoomName):
        RoomName("D", "")
    with pytest.raises(InvalidRoomName):
        RoomName("D", "S/T")


def test_room_name_outline() -> None:
    section_room = RoomName("D", "S")
    assert section_room.outline() == RoomName("D")
    assert str(section_room.outline()) == "D"
    outline_room = RoomName("D")
    assert outline_room.outline() is outline_room


def test_room_name_is_frozen_and_hashable() -> None:
    room = RoomName("D", "S")
    with pytest.raises(AttributeError):
        room.document_id = "E"  # type: ignore[misc]
    assert {room, RoomName("D", "S")} == {room}


@pytest.mark.parametrize("check", [is_valid_document_id, is_valid_section_id])
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a", True),
        ("A-z_0-9", True),
        ("a" * 64, True),
        ("a" * 65, False),
        ("", False),
        ("a/b", False),
        ("a b", False),
        ("é", False),
        ("a\n", False),
        (None, False),
        (42, False),
        (b"abc", False),
        (["a"], False),
    ],
)
def test_is_valid_id(check: Callable[[object], bool], value: object, expected: bool) -> None:
    assert check(value) is expected


@pytest.mark.parametrize("check", [check_document_id, check_section_id])
def test_check_id(check: Callable[[object], str]) -> None:
    assert check("ok_1") == "ok_1"
    with pytest.raises(InvalidIdError):
        check("not ok")
    with pytest.raises(InvalidIdError):
        check(7)


# Ids a client may use in a room name: valid and not reserved (``__`` is the server's).
open_ids = valid_ids.filter(lambda value: not value.startswith("__"))


@settings(database=None)
@given(document_id=open_ids, section_id=st.none() | open_ids)
def test_valid_room_names_round_trip(document_id: str, section_id: str | None) -> None:
    room = RoomName(document_id, section_id)
    assert parse_room_name(str(room)) == room


@pytest.mark.parametrize("name", ["__users", "doc/__snapshot", "__", "__x/y"])
def test_reserved_ids_are_refused_in_room_names(name: str) -> None:
    with pytest.raises(InvalidRoomName, match="reserved"):
        parse_room_name(name)
    assert RoomName("a__b", "c__").section_id == "c__"  # only a leading __ is reserved


@settings(database=None)
@given(name=st.text(max_size=140))
def test_parse_room_name_is_total(name: str) -> None:
    # Whatever arrives from the network: either a round-tripping RoomName or InvalidRoomName.
    try:
        room = parse_room_name(name)
    except InvalidRoomName:
        return
    assert str(room) == name
