"""The section doc: one room `D/S` whose root text `content` holds the section's markdown.

Editors bind their own root types next to `content` (a rich-text binding may keep an XML
fragment, a comment plugin a map); the helpers here touch `content` only and keep the rest.

pycrdt addresses `Text` by UTF-8 byte offsets, not by code points (Yjs clients count UTF-16
units, but positions never cross the wire: updates name items by id). The helpers translate
Python string indices to byte offsets so that callers can think in `str` and never split a
character.
"""

from __future__ import annotations

from typing import Any, Final

from pycrdt import Doc, Text

CONTENT_ROOT: Final = "content"


def section_content(doc: Doc[Any]) -> Text:
    """The `content` root text of a section doc, created locally (no update) if missing."""
    text: Text = doc.get(CONTENT_ROOT, type=Text)
    return text


def section_text(doc: Doc[Any]) -> str:
    """The section's markdown: the current string value of the `content` root text."""
    return str(section_content(doc))


def set_section_text(doc: Doc[Any], text: str) -> bool:
    """Make the `content` root text equal to `text` with a minimal edit; return if it changed.

    Only the span between the longest common prefix and the longest common suffix of the old
    and new strings is deleted and re-inserted, in one transaction (joining the caller's, if
    any). A whole-text replace would make every concurrent edit of another client land next to
    a deleted copy, so that client's view would show the text twice or lose its edit; with a
    minimal edit, concurrent edits outside the changed span survive untouched.

    Raises `UnicodeEncodeError` (a `ValueError`) before writing anything if `text` contains
    lone surrogates, which UTF-8 and so Yjs cannot hold. Writes nothing when the text is
    already equal.
    """
    text.encode("utf-8")  # fail on lone surrogates before the doc is touched
    content = section_content(doc)
    with doc.transaction():
        old = str(content)
        if old == text:
            return False
        start, old_end, new_end = _changed_span(old, text)
        start_offset = _utf8_len(old[:start])
        removed_bytes = _utf8_len(old[start:old_end])
        if removed_bytes:
            del content[start_offset : start_offset + removed_bytes]
        if new_end > start:
            content.insert(start_offset, text[start:new_end])
    return True


def _changed_span(old: str, new: str) -> tuple[int, int, int]:
    """`(start, old_end, new_end)` such that only `old[start:old_end]` became
    `new[start:new_end]`; the common prefix and suffix never overlap."""
    prefix = _common_prefix_len(old, new)
    # The suffix is searched in what the prefix left over, so that "aa" -> "aaa" yields a
    # one-character insert instead of overlapping spans.
    suffix = _common_prefix_len(old[prefix:][::-1], new[prefix:][::-1])
    return prefix, len(old) - suffix, len(new) - suffix


def _common_prefix_len(a: str, b: str) -> int:
    """Length of the longest common prefix, by bisection on slice equality.

    Slice comparisons run in C, so this costs O(n log n) machine work but only O(log n)
    Python steps, which beats a per-character loop on sections of hundreds of kilobytes.
    """
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))
