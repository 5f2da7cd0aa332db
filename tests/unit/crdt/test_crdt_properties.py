"""Hypothesis properties of the document model: convergence under any delivery order,
exact and minimal text edits, and consistent derived content."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Doc

from crdt.markdown import render_business_content, word_count
from crdt.outline import Outline, SectionExistsError, SectionInfo, SectionNotFoundError
from crdt.section import section_content, section_text, set_section_text

# No example database: these tests must not write into the repository.
PROPERTY_SETTINGS = settings(database=None, deadline=None, max_examples=200)

SECTION_IDS = ("a", "b", "c", "d", "e", "f", "g", "h")
# Every scenario starts from a synced outline with these, so that moves, renames and removes
# have something to work on from the first operation.
SEED_SECTION_IDS = ("a", "b", "c")
META_KEYS = ("title", "status")


@dataclass(frozen=True)
class Add:
    replica: int
    section_id: str
    title: str
    after: str | None
    before: str | None


@dataclass(frozen=True)
class Rename:
    replica: int
    section_id: str
    title: str


@dataclass(frozen=True)
class Move:
    replica: int
    section_id: str
    after: str | None
    before: str | None


@dataclass(frozen=True)
class Remove:
    replica: int
    section_id: str


@dataclass(frozen=True)
class SetMeta:
    replica: int
    key: str
    value: str


@dataclass(frozen=True)
class Deliver:
    """Deliver one logged update (chosen modulo the log length) to one replica, possibly
    again, possibly before the updates it depends on."""

    pick: int
    replica: int


Op = Add | Rename | Move | Remove | SetMeta | Deliver

replicas = st.integers(min_value=0, max_value=2)
section_ids = st.sampled_from(SECTION_IDS)
titles = st.text(max_size=8)
anchors = st.one_of(
    st.tuples(st.none(), st.none()),
    st.tuples(section_ids, st.none()),
    st.tuples(st.none(), section_ids),
)
adds = st.builds(lambda r, s, t, a: Add(r, s, t, *a), replicas, section_ids, titles, anchors)
operations: st.SearchStrategy[Op] = st.one_of(
    adds,
    adds,  # listed twice: twice as likely, so outlines grow despite removes
    st.builds(Rename, replicas, section_ids, titles),
    st.builds(lambda r, s, a: Move(r, s, *a), replicas, section_ids, anchors),
    st.builds(Remove, replicas, section_ids),
    st.builds(SetMeta, replicas, st.sampled_from(META_KEYS), titles),
    st.builds(Deliver, st.integers(min_value=0, max_value=1000), replicas),
)


def apply_local(outline: Outline, op: Op) -> None:
    """Run one user operation; refusals (unknown id, duplicate...) are legitimate outcomes."""
    with contextlib.suppress(SectionNotFoundError, SectionExistsError, ValueError):
        if isinstance(op, Add):
            outline.add_section(op.section_id, op.title, op.after, before=op.before)
        elif isinstance(op, Rename):
            outline.rename_section(op.section_id, op.title)
        elif isinstance(op, Move):
            outline.move_section(op.section_id, after=op.after, before=op.before)
        elif isinstance(op, Remove):
            outline.remove_section(op.section_id)
        elif isinstance(op, SetMeta):
            outline.set_meta(op.key, op.value)


class Network:
    """Replicas of one outline and the log of every update they produced.

    Each logged update remembers which log entries its replica had received when it was made:
    those are the updates it may depend on, which a causal delivery order sends first.
    """

    def __init__(self, replica_count: int) -> None:
        self.outlines = [Outline(Doc(client_id=index + 1)) for index in range(replica_count)]
        self.received: list[set[int]] = [set() for _ in range(replica_count)]
        self.log: list[tuple[bytes, frozenset[int]]] = []

    def run_local(self, replica: int, op: Op) -> None:
        doc = self.outlines[replica].doc
        before = doc.get_state()
        apply_local(self.outlines[replica], op)
        self.log.append((doc.get_update(before), frozenset(self.received[replica])))
        self.received[replica].add(len(self.log) - 1)

    def deliver(self, index: int, replica: int) -> None:
        self.outlines[replica].doc.apply_update(self.log[index][0])
        self.received[replica].add(index)

    def deliver_all_causally(self, replica: int, data: st.DataObject) -> None:
        """Send every logged update again, in a random order that respects dependencies,
        with random duplicates in between (as after a reconnect or a journal replay)."""
        delivered: set[int] = set()
        remaining = list(range(len(self.log)))
        while remaining:
            ready = [index for index in remaining if self.log[index][1] <= delivered]
            index = data.draw(st.sampled_from(ready))
            self.deliver(index, replica)
            delivered.add(index)
            remaining.remove(index)
            if data.draw(st.booleans()):
                self.deliver(data.draw(st.sampled_from(sorted(delivered))), replica)

    def sync_all(self) -> None:
        """Pairwise y-protocols sync (step 1 sends a state vector, step 2 the missing part)."""
        for left in self.outlines:
            for right in self.outlines:
                if left is not right:
                    right.doc.apply_update(left.doc.get_update(right.doc.get_state()))


@PROPERTY_SETTINGS
@given(
    replica_count=st.integers(min_value=2, max_value=3),
    ops=st.lists(operations, min_size=5, max_size=60),
    final_delivery=st.sampled_from(["causal", "sync"]),
    data=st.data(),
)
def test_outline_replicas_converge(
    replica_count: int, ops: list[Op], final_delivery: str, data: st.DataObject
) -> None:
    # While the replicas edit, updates reach them in any order, duplicated or ahead of their
    # dependencies. At the end, every replica gets everything either as a causally ordered
    # stream with duplicates (the journal and the relay) or by state-vector sync (a reconnect).
    network = Network(replica_count)
    for section_id in SEED_SECTION_IDS:
        network.run_local(0, Add(0, section_id, section_id.upper(), None, None))
    for op in ops:
        replica = op.replica % replica_count
        if isinstance(op, Deliver):
            network.deliver(op.pick % len(network.log), replica)
        else:
            network.run_local(replica, op)

    if final_delivery == "sync":
        network.sync_all()
    else:
        for replica in range(replica_count):
            network.deliver_all_causally(replica, data)

    reference = Outline(Doc(client_id=99))
    for update, _ in network.log:
        reference.doc.apply_update(update)
    for outline in network.outlines:
        assert outline.sections() == reference.sections()
        assert outline.meta() == reference.meta()


@PROPERTY_SETTINGS
@given(old=st.text(), new=st.text())
def test_set_section_text_is_exact(old: str, new: str) -> None:
    doc: Doc[Any] = Doc(client_id=1)
    set_section_text(doc, old)
    state = doc.get_state()
    assert set_section_text(doc, new) is (old != new)
    assert section_text(doc) == new
    replica: Doc[Any] = Doc(client_id=2)
    replica.apply_update(doc.get_update())
    assert section_text(replica) == new
    if old == new:
        assert doc.get_state() == state


def common_prefix_len(a: str, b: str) -> int:
    """Reference implementation, deliberately naive: one character at a time."""
    length = 0
    for left, right in zip(a, b, strict=False):
        if left != right:
            break
        length += 1
    return length


@PROPERTY_SETTINGS
@given(
    old=st.text(min_size=1), new=st.text(), marker=st.text(min_size=1, max_size=3), data=st.data()
)
def test_set_section_text_keeps_concurrent_edits_in_unchanged_text(
    old: str, new: str, marker: str, data: st.DataObject
) -> None:
    # A whole-text replace would strand a concurrent insert among deleted characters; a minimal
    # edit keeps every character of the common prefix and suffix, so an insert between two of
    # them must land exactly there.
    prefix = common_prefix_len(old, new)
    suffix = common_prefix_len(old[prefix:][::-1], new[prefix:][::-1])
    keep_positions = [*range(prefix), *range(len(old) - suffix + 1, len(old) + 1)]
    if not keep_positions:
        return
    position = data.draw(st.sampled_from(keep_positions))
    expected_position = position if position < prefix else position + len(new) - len(old)

    editor: Doc[Any] = Doc(client_id=1)
    set_section_text(editor, old)
    client: Doc[Any] = Doc(client_id=2)
    client.apply_update(editor.get_update())
    set_section_text(editor, new)
    section_content(client).insert(len(old[:position].encode("utf-8")), marker)

    editor_update = editor.get_update(client.get_state())
    client.apply_update(editor_update)
    editor.apply_update(client.get_update(editor.get_state()))
    expected = new[:expected_position] + marker + new[expected_position:]
    assert section_text(editor) == section_text(client) == expected


@PROPERTY_SETTINGS
@given(base=st.text(), left=st.text(), right=st.text())
def test_concurrent_set_section_text_converges(base: str, left: str, right: str) -> None:
    one: Doc[Any] = Doc(client_id=1)
    set_section_text(one, base)
    two: Doc[Any] = Doc(client_id=2)
    two.apply_update(one.get_update())
    set_section_text(one, left)
    set_section_text(two, right)
    one_update = one.get_update(two.get_state())
    two_update = two.get_update(one.get_state())
    two.apply_update(one_update)
    one.apply_update(two_update)
    assert section_text(one) == section_text(two)


sections_with_text = st.lists(
    st.tuples(
        st.builds(
            SectionInfo,
            id=st.text(alphabet="abcdef0123", min_size=1, max_size=6),
            title=st.text(max_size=20),
            order=st.floats(allow_nan=False, allow_infinity=False),
        ),
        st.text(max_size=80),
    ),
    max_size=6,
    unique_by=lambda pair: pair[0].id,
)


@PROPERTY_SETTINGS
@given(sections=sections_with_text)
def test_markdown_word_count_matches_metadata(sections: list[tuple[SectionInfo, str]]) -> None:
    # The rendering adds only "##" and whitespace, neither of which is a word.
    content = render_business_content(sections)
    assert word_count(content.markdown) == content.metadata.word_count
    assert [entry.order for entry in content.sections] == list(range(len(sections)))
    assert (content.markdown == "") is (not sections)
