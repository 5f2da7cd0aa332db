"""crdt.anchors: comment ranges on sticky indexes, in code points, under concurrent edits."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Map, StickyIndex, Text

from crdt.anchors import (
    Anchor,
    InvalidAnchor,
    Orphaned,
    Resolved,
    create_anchor,
    resolve_anchor,
    resolve_anchors,
)
from crdt.section import section_content

MIXED = "Ré 世界 😀 ok ß 🚀!"


def section(text: str = "", client_id: int = 1) -> tuple[Doc[Any], Text]:
    doc: Doc[Any] = Doc(client_id=client_id)
    content = section_content(doc)
    content.insert(0, text)
    return doc, content


def insert_at(text: Text, index: int, value: str) -> None:
    """Insert at a code-point offset (pycrdt takes UTF-8 byte offsets)."""
    text.insert(len(str(text)[:index].encode()), value)


def delete_range(text: Text, start: int, end: int) -> None:
    current = str(text)
    del text[len(current[:start].encode()) : len(current[:end].encode())]


def resolved(text: Text, anchor: Anchor) -> Resolved:
    result = resolve_anchor(text, anchor)
    assert isinstance(result, Resolved), result
    return result


def piecewise_section() -> tuple[Doc[Any], Text]:
    """MIXED built from many items and two clients, non-ASCII inside items: the layout where
    pycrdt's own sticky-index offsets are wrong."""
    doc, text = section("世界 😀 ok", client_id=7)
    other: Doc[Any] = Doc(client_id=8)
    other.apply_update(doc.get_update())
    insert_at(section_content(other), 0, "Ré ")
    doc.apply_update(other.get_update(doc.get_state()))
    insert_at(text, len(str(text)), " ß 🚀!")
    assert str(text) == MIXED
    return doc, text


# -- creating and resolving ------------------------------------------------------------------


@pytest.mark.parametrize("build", [lambda: section(MIXED), piecewise_section])
def test_every_range_resolves_to_itself_in_code_points(build: Any) -> None:
    _, text = build()
    for start in range(len(MIXED)):
        for end in range(start + 1, len(MIXED) + 1):
            anchor = create_anchor(text, start, end)
            assert anchor.quote == MIXED[start:end]
            assert resolve_anchor(text, anchor) == Resolved(start, end, MIXED[start:end])


def test_anchor_follows_edits_before_it_with_multibyte_text() -> None:
    _, text = piecewise_section()
    anchor = create_anchor(text, 3, 5)  # "世界"
    insert_at(text, 0, "🎉é")
    assert resolve_anchor(text, anchor) == Resolved(5, 7, "世界")
    delete_range(text, 0, 4)  # "🎉éRé"
    assert resolve_anchor(text, anchor) == Resolved(1, 3, "世界")


def test_text_typed_at_the_edges_stays_outside_and_inside_stays_inside() -> None:
    _, text = section("say hello world")
    anchor = create_anchor(text, 4, 9)  # "hello"
    insert_at(text, 9, "!!")  # right after the range
    insert_at(text, 4, "«")  # right before it
    assert str(text) == "say «hello!! world"
    assert resolve_anchor(text, anchor) == Resolved(5, 10, "hello")
    insert_at(text, 7, "—")  # strictly inside
    assert resolve_anchor(text, anchor) == Resolved(5, 11, "he—llo")


def test_deleting_part_of_the_range_shrinks_it() -> None:
    _, text = section("one two three four")
    anchor = create_anchor(text, 4, 13)  # "two three"
    delete_range(text, 4, 8)  # "two " (the first edge)
    assert resolve_anchor(text, anchor) == Resolved(4, 9, "three")
    _, text = section("one two three four")
    anchor = create_anchor(text, 4, 13)
    delete_range(text, 10, 13)  # "ree" (the last edge)
    insert_at(text, 10, "x")  # where the last edge was: after it, so outside
    assert resolve_anchor(text, anchor) == Resolved(4, 10, "two th")


def test_deleting_the_anchored_text_orphans_the_anchor() -> None:
    _, text = section("keep 世界😀 keep")
    anchor = create_anchor(text, 5, 8)
    delete_range(text, 5, 8)
    assert resolve_anchor(text, anchor) == Orphaned("世界😀")
    insert_at(text, 5, "new words")  # typed where it was: not the commented text
    assert resolve_anchor(text, anchor) == Orphaned("世界😀")


def test_both_edges_deleted_orphans_even_if_the_middle_survives() -> None:
    _, text = section("abcde")
    anchor = create_anchor(text, 1, 4)  # "bcd"
    delete_range(text, 3, 4)  # "d"
    delete_range(text, 1, 2)  # "b"
    assert str(text) == "ace"
    assert resolve_anchor(text, anchor) == Orphaned("bcd")


def test_concurrent_insert_inside_a_range_deleted_elsewhere_is_orphaned() -> None:
    doc_a, text_a = section("xx abc yy", client_id=1)
    doc_b: Doc[Any] = Doc(client_id=2)
    doc_b.apply_update(doc_a.get_update())
    text_b = section_content(doc_b)
    anchor = create_anchor(text_a, 3, 6)
    delete_range(text_a, 3, 6)
    insert_at(text_b, 4, "Z")  # concurrently, between "a" and "b"
    doc_a.apply_update(doc_b.get_update(doc_a.get_state()))
    doc_b.apply_update(doc_a.get_update(doc_b.get_state()))
    assert str(text_a) == str(text_b) == "xx Z yy"
    assert resolve_anchor(text_a, anchor) == resolve_anchor(text_b, anchor) == Orphaned("abc")


def test_single_character_and_whole_text_ranges() -> None:
    _, text = section("😀")
    assert resolved(text, create_anchor(text, 0, 1)).content == "😀"
    _, text = section("a")
    anchor = create_anchor(text, 0, 1)
    insert_at(text, 0, "<")
    insert_at(text, 2, ">")
    assert resolve_anchor(text, anchor) == Resolved(1, 2, "a")


def test_edges_are_yjs_relative_positions_on_whole_characters() -> None:
    _, text = section("a😀b")  # one item: UTF-16 units a=0, 😀=1..2, b=3
    anchor = create_anchor(text, 1, 2)
    start = StickyIndex.decode(anchor.start).to_json()
    end = StickyIndex.decode(anchor.end).to_json()
    assert (start["item"]["clock"], start["assoc"]) == (1, 0)  # before the emoji
    assert (end["item"]["clock"], end["assoc"]) == (2, -1)  # after its last unit
    assert resolve_anchor(text, anchor) == Resolved(1, 2, "😀")


def test_anchor_resolves_on_a_replica_and_creation_writes_nothing() -> None:
    doc, text = piecewise_section()
    state, update = doc.get_state(), doc.get_update()
    events: list[Any] = []
    subscription = doc.observe(events.append)
    anchor = create_anchor(text, 6, 12)
    resolve_anchor(text, anchor)
    doc.unobserve(subscription)
    assert (doc.get_state(), doc.get_update(), events) == (state, update, [])
    replica: Doc[Any] = Doc(client_id=99)
    replica.apply_update(doc.get_update())
    assert resolve_anchor(section_content(replica), anchor) == Resolved(6, 12, MIXED[6:12])


def test_resolve_anchors_matches_one_by_one() -> None:
    _, text = piecewise_section()
    anchors = [create_anchor(text, s, e) for s, e in [(0, 2), (3, 5), (6, 7), (10, 15)]]
    delete_range(text, 3, 4)
    assert resolve_anchors(text, anchors) == [resolve_anchor(text, a) for a in anchors]
    assert resolve_anchors(text, []) == []


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end"),
    [(-1, 2), (2, 2), (3, 2), (0, len(MIXED) + 1), (0, 0), (True, 2), (0.0, 2), (0, "3")],
)
def test_invalid_ranges_raise_value_error(start: Any, end: Any) -> None:
    _, text = section(MIXED)
    with pytest.raises(ValueError, match="anchor"):
        create_anchor(text, start, end)


def test_an_empty_text_has_nothing_to_anchor() -> None:
    _, text = section("")
    with pytest.raises(ValueError, match=r"0 <= start < end <= 0"):
        create_anchor(text, 0, 1)


def test_nested_texts_are_refused() -> None:
    doc: Doc[Any] = Doc()
    holder: Map[Any] = Map()
    doc["m"] = holder
    holder["t"] = nested = Text("nested")
    with pytest.raises(ValueError, match="root text"):
        create_anchor(nested, 0, 2)


GARBAGE = [
    b"",
    b"\x00",
    b"\xff" * 12,
    b"garbage",
    b"\x01\x07contentA",  # scoped to a type, not a character
    b"\x02\x01\x01\x00",
    b"\x00\x01\x01",  # no association
    b"\x00\x01\x01\x00\x00",  # trailing byte
    b"\x00" + b"\xff" * 11,  # overlong client
]


@pytest.mark.parametrize("junk", GARBAGE)
def test_garbage_raises_invalid_anchor(junk: bytes) -> None:
    _, text = section("some text")
    good = create_anchor(text, 0, 4)
    for anchor in (Anchor(junk, good.end, "x"), Anchor(good.start, junk, "x")):
        with pytest.raises(InvalidAnchor):
            resolve_anchor(text, anchor)
    assert issubclass(InvalidAnchor, ValueError)


def test_swapped_associations_are_refused() -> None:
    _, text = section("some text")
    good = create_anchor(text, 0, 4)
    with pytest.raises(InvalidAnchor, match="association"):
        resolve_anchor(text, Anchor(good.end, good.start, "x"))


def test_anchor_of_another_document_or_type_is_refused() -> None:
    doc, text = section("some text")
    anchor = create_anchor(text, 1, 3)
    _, stranger = section("some text", client_id=2)
    with pytest.raises(InvalidAnchor, match="does not hold"):
        resolve_anchor(stranger, anchor)
    other = doc.get("other", type=Text)
    other.insert(0, "elsewhere in the doc")
    foreign = create_anchor(other, 2, 6)
    with pytest.raises(InvalidAnchor, match="another shared type"):
        resolve_anchor(text, foreign)


def test_anchor_fields_are_typed() -> None:
    with pytest.raises(TypeError):
        Anchor("start", b"", "")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Anchor(b"", b"", None)  # type: ignore[arg-type]


# -- convergence property --------------------------------------------------------------------

# Every character of the initial text is unique and none can be typed later, so the final
# text tells exactly which anchored characters survived.
ORIGINALS = "abcdefghijklmnopéàüß世界中文字😀🚀🌍"
TYPED = "0123456789Ωж日🎉"


@dataclass(frozen=True)
class Insert:
    replica: int
    at: int  # scaled to the replica's text length when applied
    value: str


@dataclass(frozen=True)
class Delete:
    replica: int
    at: int
    length: int


@dataclass(frozen=True)
class Deliver:
    """A sync from one replica to another: what the target misses, or (``full``) the
    source's whole state again, duplicates included."""

    source: int
    target: int
    full: bool


REPLICAS = st.integers(0, 2)
steps = st.one_of(
    st.builds(Insert, REPLICAS, st.integers(0, 1000), st.text(st.sampled_from(TYPED), max_size=3)),
    st.builds(Delete, REPLICAS, st.integers(0, 1000), st.integers(1, 4)),
    st.builds(Deliver, REPLICAS, REPLICAS, st.booleans()),
)


def sync(source: Doc[Any], target: Doc[Any], *, full: bool = False) -> None:
    # Self-contained updates only (a diff against the target's state, or everything): pycrdt
    # 0.14.13 can lose an update when two updates wait on the same missing one.
    target.apply_update(source.get_update(None if full else target.get_state()))


def apply_step(step: Insert | Delete | Deliver, docs: list[Doc[Any]]) -> None:
    if isinstance(step, Deliver):
        sync(docs[step.source], docs[step.target], full=step.full)
        return
    text = section_content(docs[step.replica])
    length = len(str(text))
    if isinstance(step, Insert) and step.value:
        insert_at(text, step.at % (length + 1), step.value)
    elif isinstance(step, Delete) and length:
        start = step.at % length
        delete_range(text, start, min(length, start + step.length))


def only_originals(value: str) -> str:
    return "".join(char for char in value if char in ORIGINALS)


@settings(max_examples=150, deadline=None, database=None)
@given(
    initial=st.lists(st.sampled_from(ORIGINALS), min_size=1, max_size=16, unique=True),
    bounds=st.tuples(st.integers(0, 1000), st.integers(0, 1000)),
    creator=REPLICAS,
    script=st.lists(steps, max_size=30),
    shuffler=st.randoms(use_true_random=False),
)
def test_anchor_converges_under_concurrent_edits(
    initial: list[str],
    bounds: tuple[int, int],
    creator: int,
    script: list[Insert | Delete | Deliver],
    shuffler: random.Random,
) -> None:
    seed_text = "".join(initial)
    docs: list[Doc[Any]] = [Doc(client_id=client) for client in (11, 12, 13)]
    texts = [section_content(doc) for doc in docs]
    texts[0].insert(0, seed_text)
    for doc in docs[1:]:
        doc.apply_update(docs[0].get_update())
    start = bounds[0] % len(seed_text)
    end = start + 1 + bounds[1] % (len(seed_text) - start)
    anchor = create_anchor(texts[creator], start, end)
    assert anchor.quote == seed_text[start:end]

    for step in script:
        apply_step(step, docs)
    pairs = [(source, target) for source in docs for target in docs if source is not target]
    for _ in range(2):  # then every replica syncs with every other, in a random order
        shuffler.shuffle(pairs)
        for source, target in pairs:
            sync(source, target)

    final = str(texts[0])
    assert all(str(text) == final for text in texts)
    results = [resolve_anchor(text, anchor) for text in texts]
    assert results[1] == results[0] == results[2]
    result = results[0]

    quote = anchor.quote
    alive = [char for char in quote if char in final]
    if len(alive) == len(quote):
        # Nothing anchored was deleted: the quote, plus whatever was typed strictly inside.
        assert isinstance(result, Resolved)
        assert only_originals(result.content) == quote
    if not alive or (quote[0] not in final and quote[-1] not in final):
        assert result == Orphaned(quote)
    if isinstance(result, Resolved):
        assert final[result.start : result.end] == result.content
        # Exactly the surviving anchored characters, in order, and no other original one.
        assert only_originals(result.content) == "".join(alive)
        if quote[0] in final:  # a live edge is the range's edge: typing there stays out
            assert result.content[0] == quote[0]
        if quote[-1] in final:
            assert result.content[-1] == quote[-1]
