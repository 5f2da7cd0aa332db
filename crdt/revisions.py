"""Revisions, purely: what changed between two contents, a per-section diff, and the outline
edits that bring a document back to a revision.

A revision keeps the document's derived content (:class:`crdt.markdown.BusinessContent`): the
whole markdown plus each section's id, title, order and text. Restoring never replaces a
document wholesale: the outline gets the section additions, removals, renames and moves that
lead to the revision, and each section text gets a minimal edit
(:func:`crdt.section.set_section_text`), so clients that were offline during the restore
merge their own edits into it instead of seeing text duplicated.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from crdt.markdown import ContentSection, word_count
from crdt.outline import Outline


@dataclass(frozen=True, slots=True)
class SectionDiff:
    """How one section differs between two revisions."""

    section_id: str
    status: str  # "added" | "removed" | "edited" | "renamed" | "unchanged"
    title_before: str | None
    title_after: str | None
    unified_diff: str


def sections_from_dicts(items: Iterable[Mapping[str, Any]]) -> tuple[ContentSection, ...]:
    """Read ``content.sections[]`` (as stored) back into sections, by their ``order``.

    Raises ValueError for an entry without a string id, title or content.
    """
    sections = []
    for item in items:
        section_id, title, text = item.get("id"), item.get("title"), item.get("content")
        if not (isinstance(section_id, str) and isinstance(title, str) and isinstance(text, str)):
            raise ValueError(f"malformed section entry: {dict(item)!r}")
        order = item.get("order")
        sections.append(ContentSection(section_id, title, text, int(order or 0)))
    return tuple(sorted(sections, key=lambda section: (section.order, section.id)))


def summarize_changes(
    before: Sequence[ContentSection] | None, after: Sequence[ContentSection]
) -> str:
    """A human-readable summary: sections added/removed/edited, words added/removed.

    Words are counted per section with a word-level diff, so moving text within a section
    counts as words removed and added only where the words themselves changed.
    """
    if before is None:
        words = sum(word_count(s.title) + word_count(s.content) for s in after)
        return f"first revision: {len(after)} sections, {words} words"
    old = {section.id: section for section in before}
    new = {section.id: section for section in after}
    added = [sid for sid in new if sid not in old]
    removed = [sid for sid in old if sid not in new]
    edited = [
        sid
        for sid in new
        if sid in old and (old[sid].content, old[sid].title) != (new[sid].content, new[sid].title)
    ]
    words_added = words_removed = 0
    for sid in set(old) | set(new):
        plus, minus = _word_delta(_words_of(old.get(sid)), _words_of(new.get(sid)))
        words_added += plus
        words_removed += minus
    parts = [
        f"{label}: {', '.join(ids)}"
        for label, ids in (("added", added), ("removed", removed), ("edited", edited))
        if ids
    ]
    parts.append(f"+{words_added} / -{words_removed} words")
    return "sections " + "; ".join(parts) if len(parts) > 1 else parts[0]


def _words_of(section: ContentSection | None) -> list[str]:
    if section is None:
        return []
    return (section.title + "\n" + section.content).split()


def _word_delta(before: list[str], after: list[str]) -> tuple[int, int]:
    matcher = difflib.SequenceMatcher(a=before, b=after, autojunk=False)
    added = removed = 0
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag in ("replace", "delete"):
            removed += i2 - i1
        if tag in ("replace", "insert"):
            added += j2 - j1
    return added, removed


def diff_sections(
    before: Sequence[ContentSection],
    after: Sequence[ContentSection],
    labels: tuple[str, str] = ("before", "after"),
) -> list[SectionDiff]:
    """Per-section unified text diffs, in the ``after`` order, removed sections last."""
    old = {section.id: section for section in before}
    result = []
    for section in after:
        previous = old.get(section.id)
        result.append(_section_diff(section.id, previous, section, labels))
    new_ids = {section.id for section in after}
    for section in before:
        if section.id not in new_ids:
            result.append(_section_diff(section.id, section, None, labels))
    return result


def _section_diff(
    section_id: str,
    before: ContentSection | None,
    after: ContentSection | None,
    labels: tuple[str, str],
) -> SectionDiff:
    old_text = before.content if before is not None else ""
    new_text = after.content if after is not None else ""
    lines = difflib.unified_diff(
        old_text.splitlines(keepends=True),
        new_text.splitlines(keepends=True),
        fromfile=f"{labels[0]}/{section_id}",
        tofile=f"{labels[1]}/{section_id}",
    )
    if before is None:
        status = "added"
    elif after is None:
        status = "removed"
    elif old_text != new_text:
        status = "edited"
    elif before.title != after.title:
        status = "renamed"
    else:
        status = "unchanged"
    return SectionDiff(
        section_id,
        status,
        before.title if before is not None else None,
        after.title if after is not None else None,
        "".join(lines),
    )


def restore_outline(outline: Outline, target: Sequence[ContentSection]) -> None:
    """Edit ``outline`` (inside the caller's transaction) to list exactly ``target``'s
    sections, with their titles, in their order. Sections not in the target are removed;
    their rooms are left for the caller to empty."""
    wanted = [section.id for section in target]
    for info in outline.sections():
        if info.id not in wanted:
            outline.remove_section(info.id)
    previous: str | None = None
    for section in target:
        if section.id in outline:
            outline.rename_section(section.id, section.title)
            if previous is None:
                first = outline.sections()[0].id
                if first != section.id:
                    outline.move_section(section.id, before=first)
            else:
                outline.move_section(section.id, after=previous)
        elif previous is None:
            listed = outline.sections()
            if listed:
                outline.add_section(section.id, section.title, before=listed[0].id)
            else:
                outline.add_section(section.id, section.title)
        else:
            outline.add_section(section.id, section.title, after=previous)
        previous = section.id
