"""Revision summaries, per-section diffs, and restoring an outline."""

from __future__ import annotations

from typing import Any

import pycrdt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt.markdown import ContentSection
from crdt.outline import Outline
from crdt.revisions import (
    diff_sections,
    restore_outline,
    sections_from_dicts,
    summarize_changes,
)


def _s(sid: str, content: str, title: str | None = None, order: int = 0) -> ContentSection:
    return ContentSection(sid, sid if title is None else title, content, order)


def test_first_revision_summary() -> None:
    assert summarize_changes(None, [_s("a", "one two")]) == "first revision: 1 sections, 3 words"


def test_summary_names_added_removed_edited_and_word_counts() -> None:
    before = [_s("a", "grow the core"), _s("b", "old risks here")]
    after = [_s("a", "grow the core fast"), _s("c", "new section")]
    summary = summarize_changes(before, after)
    assert "added: c" in summary
    assert "removed: b" in summary
    assert "edited: a" in summary
    # +fast, +c title, +new, +section; -b title, -old, -risks, -here
    assert "+4 / -4 words" in summary


def test_unchanged_content_summary() -> None:
    same = [_s("a", "text")]
    assert summarize_changes(same, same) == "+0 / -0 words"


def test_diff_per_section() -> None:
    before = [_s("a", "line one\nline two\n"), _s("gone", "bye\n")]
    after = [_s("a", "line one\nline 2\n"), _s("new", "hi\n"), _s("same", "")]
    before.append(_s("same", "", title="old title"))
    diffs = {d.section_id: d for d in diff_sections(before, after, ("v1", "v2"))}
    assert diffs["a"].status == "edited"
    assert "-line two" in diffs["a"].unified_diff
    assert "+line 2" in diffs["a"].unified_diff
    assert "--- v1/a" in diffs["a"].unified_diff
    assert diffs["new"].status == "added"
    assert diffs["gone"].status == "removed"
    assert diffs["same"].status == "renamed"


def test_sections_from_dicts_orders_and_validates() -> None:
    items = [
        {"id": "b", "title": "B", "content": "2", "order": 1},
        {"id": "a", "title": "A", "content": "1", "order": 0},
    ]
    assert [s.id for s in sections_from_dicts(items)] == ["a", "b"]
    with pytest.raises(ValueError, match="malformed"):
        sections_from_dicts([{"id": "a", "title": 3, "content": ""}])


IDS = st.sampled_from(["a", "b", "c", "d", "e"])


@settings(max_examples=80, deadline=None, database=None)
@given(
    current=st.lists(st.tuples(IDS, st.text("xyz", max_size=3)), unique_by=lambda t: t[0]),
    target=st.lists(st.tuples(IDS, st.text("xyz", max_size=3)), unique_by=lambda t: t[0]),
)
def test_restore_outline_reaches_the_target(
    current: list[tuple[str, str]], target: list[tuple[str, str]]
) -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    outline = Outline(doc)
    for sid, title in current:
        outline.add_section(sid, title)
    wanted = [_s(sid, "", title, position) for position, (sid, title) in enumerate(target)]
    with doc.transaction():
        restore_outline(outline, wanted)
    assert [(i.id, i.title) for i in outline.sections()] == target
