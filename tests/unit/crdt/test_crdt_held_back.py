"""Updates that wait for a missing dependency: kept by the document until they integrate,
in its stored state meanwhile, so that no compaction drops them."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Text

from crdt.document import MAX_HELD_BACK, RoomDoc
from crdt.errors import InvalidUpdate
from crdt.origins import StoreOrigin
from crdt.section import section_text

PROPERTY_SETTINGS = settings(database=None, deadline=None, max_examples=150)


def edits(*chunks: str, deletes: tuple[int, ...] = ()) -> list[bytes]:
    """One author's updates: each chunk typed at the end, then deletes of the first char."""
    doc: Doc[Any] = Doc()
    text = doc.get("content", type=Text)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    for chunk in chunks:
        text += chunk
    for _ in deletes:
        del text[0:1]
    return updates


def apply(doc: RoomDoc, update: bytes) -> bytes | None:
    return doc.apply(update, StoreOrigin())


def test_an_update_after_a_missing_one_is_held_back_and_stored() -> None:
    first, second = edits("AAA", "BBB")
    doc = RoomDoc()
    assert apply(doc, second) is None
    assert doc.held_back
    assert doc.held_back_count == 1
    assert section_text(doc.doc) == ""
    reloaded = RoomDoc()
    reloaded.load([doc.full_state()])
    assert reloaded.held_back_count == 1
    effective = apply(reloaded, first)
    assert effective is not None
    assert not reloaded.held_back
    assert reloaded.held_back_count == 0
    assert section_text(reloaded.doc) == "AAABBB"


def test_a_duplicate_is_not_held_back() -> None:
    (first,) = edits("AAA")
    doc = RoomDoc()
    assert apply(doc, first) == first
    assert apply(doc, first) is None
    assert not doc.held_back
    assert doc.held_back_count == 0


def test_a_delete_of_unknown_items_is_held_back_until_they_arrive() -> None:
    insert, delete = edits("AB", deletes=(0,))
    doc = RoomDoc()
    assert apply(doc, delete) is None
    assert doc.held_back
    assert apply(doc, insert) is not None
    assert doc.held_back_count == 0
    assert section_text(doc.doc) == "B"


def test_too_many_held_back_updates_are_refused() -> None:
    doc = RoomDoc()
    for _ in range(MAX_HELD_BACK):
        _, second = edits("A", "B")
        apply(doc, second)
    _, second = edits("A", "B")
    with pytest.raises(InvalidUpdate, match="never arrived"):
        apply(doc, second)


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[bytes], list[int], list[bool], str]:
    """Three authors' edits on one text, delivered in any order with duplicates; where the
    server compacts (reloads from its full state) along the way; the converged text."""
    reference: Doc[Any] = Doc()
    reference_text = reference.get("content", type=Text)
    authors: list[Doc[Any]] = [Doc(client_id=client_id) for client_id in (1, 2, 3)]
    updates: list[bytes] = []
    for _ in range(draw(st.integers(1, 12))):
        index = draw(st.integers(0, 2))
        author = authors[index]
        text = author.get("content", type=Text)
        before = author.get_state()
        if len(text) and draw(st.booleans()):
            start = draw(st.integers(0, len(text) - 1))
            del text[start : start + 1]
        else:
            text.insert(draw(st.integers(0, len(text))), draw(st.sampled_from("xyz")))
        updates.append(author.get_update(before))
        # Sometimes an author learns what the others wrote before it types on.
        if draw(st.booleans()):
            for other in authors:
                if other is not author:
                    author.apply_update(other.get_update())
    for update in updates:
        reference.apply_update(update)
    order = draw(st.lists(st.integers(0, len(updates) - 1), min_size=len(updates)))
    order = order + list(range(len(updates)))  # every update arrives at least once
    compactions = draw(st.lists(st.booleans(), min_size=len(order), max_size=len(order)))
    return updates, order, compactions, str(reference_text)


@PROPERTY_SETTINGS
@given(deliveries())
def test_any_delivery_order_with_compactions_converges(
    case: tuple[list[bytes], list[int], list[bool], str],
) -> None:
    updates, order, compactions, expected = case
    doc = RoomDoc()
    for index, compact in zip(order, compactions, strict=True):
        apply(doc, updates[index])
        if compact:
            reloaded = RoomDoc()
            reloaded.load([doc.full_state()])
            doc = reloaded
    assert section_text(doc.doc) == expected
    assert doc.held_back_count == 0
