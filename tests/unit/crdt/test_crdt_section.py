"""Unit tests of crdt.section: the `content` text of a section doc and its minimal edits."""

from __future__ import annotations

from typing import Any

import pytest
from pycrdt import Doc, Map, Text, TextEvent, XmlElement, XmlFragment

from crdt.section import CONTENT_ROOT, section_content, section_text, set_section_text


def new_section(text: str = "", client_id: int = 1) -> Doc[Any]:
    doc: Doc[Any] = Doc(client_id=client_id)
    set_section_text(doc, text)
    return doc


def replica_of(doc: Doc[Any], client_id: int) -> Doc[Any]:
    replica: Doc[Any] = Doc(client_id=client_id)
    replica.apply_update(doc.get_update())
    return replica


def exchange(a: Doc[Any], b: Doc[Any]) -> None:
    a_update = a.get_update(b.get_state())
    b_update = b.get_update(a.get_state())
    b.apply_update(a_update)
    a.apply_update(b_update)


def insert_at(doc: Doc[Any], index: int, value: str) -> None:
    """Insert at a code-point index, the way a remote editor would (pycrdt wants bytes)."""
    offset = len(section_text(doc)[:index].encode("utf-8"))
    section_content(doc).insert(offset, value)


def test_empty_section() -> None:
    doc: Doc[Any] = Doc()
    assert section_text(doc) == ""
    assert doc.get_update() == b"\x00\x00"


def test_content_root_is_text_named_content() -> None:
    doc = new_section("# Hi")
    root = doc.get(CONTENT_ROOT, type=Text)
    assert str(root) == "# Hi"
    assert str(section_content(doc)) == "# Hi"


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("", "hello"),
        ("hello", ""),
        ("hello", "hello world"),
        ("hello world", "world"),
        ("héllo wörld", "héllo, wörld!"),
        ("aa", "aaa"),
        ("aaa", "aa"),
        ("abc", "xyz"),
        ("😀 emoji 😀", "😀 emoji 🎉 😀"),
        ("日本語のテキスト", "日本語テキスト"),
        ("line\r\nbreaks\n", "line\r\nnew breaks\n"),
        ("zero\x00byte", "zero\x00\x00byte"),
        ("e\u0301 combining", "e\u0301\u0301 combining"),
    ],
)
def test_set_section_text(old: str, new: str) -> None:
    doc = new_section(old)
    assert set_section_text(doc, new) is (old != new)
    assert section_text(doc) == new
    assert section_text(replica_of(doc, 2)) == new


def test_unchanged_text_writes_nothing() -> None:
    doc = new_section("same")
    state = doc.get_state()
    assert set_section_text(doc, "same") is False
    assert doc.get_state() == state


def test_edit_touches_only_the_changed_span() -> None:
    doc = new_section("héllo wörld")
    deltas: list[list[dict[str, object]]] = []

    def record(event: TextEvent) -> None:
        # pycrdt declares `delta` only in `__slots__`, which type checkers cannot see.
        deltas.append(event.delta)  # type: ignore[attr-defined]

    # Keep the Text object alive: its subscription dies with it.
    content = section_content(doc)
    content.observe(record)
    set_section_text(doc, "héllo brave wörld")
    # pycrdt counts UTF-8 bytes: "héllo " is 7 of them.
    assert deltas == [[{"retain": 7}, {"insert": "brave "}]]


def test_concurrent_insert_survives_minimal_edit() -> None:
    editor = new_section("The market grows. Our share is small.")
    client = replica_of(editor, 2)
    # The server rewrites the second sentence while a client types in the first one.
    set_section_text(editor, "The market grows. Our share is rising.")
    insert_at(client, len("The market"), " quickly")
    exchange(editor, client)
    expected = "The market quickly grows. Our share is rising."
    assert section_text(editor) == section_text(client) == expected


def test_concurrent_inserts_on_both_sides_of_the_edit_survive() -> None:
    editor = new_section("alpha beta gamma")
    client = replica_of(editor, 2)
    set_section_text(editor, "alpha BETA gamma")
    insert_at(client, len("alpha beta gamma"), "!")
    insert_at(client, 0, ">> ")
    exchange(editor, client)
    assert section_text(editor) == section_text(client) == ">> alpha BETA gamma!"


def test_other_root_types_are_kept() -> None:
    doc = new_section("old")
    comments: Map[object] = doc.get("comments", type=Map)
    comments["c1"] = "looks good"
    fragment = doc.get("prosemirror", type=XmlFragment)
    fragment.children.append(XmlElement("p"))
    set_section_text(doc, "new")
    replica = replica_of(doc, 2)
    assert section_text(replica) == "new"
    assert replica.get("comments", type=Map).to_py() == {"c1": "looks good"}
    assert str(replica.get("prosemirror", type=XmlFragment)) == "<p></p>"


def test_lone_surrogate_is_rejected_before_writing() -> None:
    doc = new_section("ok")
    state = doc.get_state()
    with pytest.raises(UnicodeEncodeError):
        set_section_text(doc, "bad \ud800 text")
    assert doc.get_state() == state
    assert section_text(doc) == "ok"


def test_edit_joins_the_callers_transaction() -> None:
    doc = new_section("one")
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    with doc.transaction(origin="restore"):
        set_section_text(doc, "two")
        set_section_text(doc, "three")
    assert len(updates) == 1
    assert section_text(replica_of(doc, 2)) == "three"


def test_large_text_edit() -> None:
    body = "word " * 50_000
    doc = new_section(body)
    set_section_text(doc, body[:100_000] + "INSERTED " + body[100_000:])
    assert section_text(doc).count("INSERTED") == 1
    assert len(section_text(doc)) == len(body) + len("INSERTED ")
