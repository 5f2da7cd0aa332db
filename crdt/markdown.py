"""The derived content of a business document: the `content` field of `business_documents`.

The CRDT docs are the source of truth; this module turns the outline's sections and their
markdown into the shape stored in MongoDB (cms-schema.md, section 1.1):

    content: {
      markdown: String,                                  // the whole document
      sections: [{id, title, content, order}],           // order: 0-based position
      metadata: {wordCount: Number, readingTime: Number} // readingTime in minutes
    }

Pure and deterministic: the same sections give the same bytes on every node, so snapshots
written by different replicas compare equal.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from crdt.outline import SectionInfo

WORDS_PER_MINUTE: Final = 200
HEADING_PREFIX: Final = "## "

# A letter or a digit in any script: `\w` minus the underscore.
_LETTER_OR_DIGIT: Final = re.compile(r"[^\W_]")
# Whole lines of whitespace at the very start; `[^\S\n]` is whitespace other than a newline.
_LEADING_BLANK_LINES: Final = re.compile(r"\A(?:[^\S\n]*\n)+")


def word_count(text: str) -> int:
    """Count the words of `text`.

    A word is a run of non-whitespace characters containing at least one letter or digit, so
    markdown punctuation standing alone (`##`, `-`, `*`, `>`, `---`) is not a word while
    `**bold**`, `e.g.` and `2024` are. Linear in the length of `text`.
    """
    return sum(1 for token in text.split() if _LETTER_OR_DIGIT.search(token))


def reading_time_minutes(words: int, words_per_minute: int = WORDS_PER_MINUTE) -> int:
    """Minutes needed to read `words` words, rounded up: 0 for 0 words, 1 for 1 to 200.

    Raises `ValueError` for a negative word count or a non-positive reading speed.
    """
    if words < 0:
        raise ValueError(f"negative word count: {words}")
    if words_per_minute <= 0:
        raise ValueError(f"non-positive reading speed: {words_per_minute}")
    return math.ceil(words / words_per_minute)


@dataclass(frozen=True, slots=True)
class ContentSection:
    """One entry of `content.sections`: a section's title and raw markdown at its position."""

    id: str
    title: str
    content: str
    order: int

    def to_dict(self) -> dict[str, str | int]:
        """The exact JSON object stored in `content.sections[]`."""
        return {"id": self.id, "title": self.title, "content": self.content, "order": self.order}


@dataclass(frozen=True, slots=True)
class ContentMetadata:
    """`content.metadata`: totals over every section's title and content."""

    word_count: int
    reading_time_minutes: int

    def to_dict(self) -> dict[str, int]:
        """The exact JSON object stored in `content.metadata`."""
        return {"wordCount": self.word_count, "readingTime": self.reading_time_minutes}


@dataclass(frozen=True, slots=True)
class BusinessContent:
    """The derived `content` of a business document."""

    markdown: str
    sections: tuple[ContentSection, ...]
    metadata: ContentMetadata

    def to_dict(self) -> dict[str, object]:
        """The exact JSON-able `content` object: `{markdown, sections: [...], metadata}`."""
        return {
            "markdown": self.markdown,
            "sections": [section.to_dict() for section in self.sections],
            "metadata": self.metadata.to_dict(),
        }


def render_business_content(sections: Iterable[tuple[SectionInfo, str]]) -> BusinessContent:
    """Derive the document's `content` from its sections and their markdown.

    Sections are placed by `(order, id)`, the outline's own order, whatever order they are
    given in; `content.sections[].order` is the 0-based position and `content` the raw text.
    The markdown renders each section as `## {title}`, a blank line and its content, with
    sections separated by one blank line; see `render_section`. No sections render to "".

    Raises `ValueError` if two sections share an id.
    """
    ordered = sorted(sections, key=lambda pair: (pair[0].order, pair[0].id))
    _check_unique_ids(info for info, _ in ordered)
    entries = tuple(
        ContentSection(info.id, info.title, text, position)
        for position, (info, text) in enumerate(ordered)
    )
    words = sum(word_count(entry.title) + word_count(entry.content) for entry in entries)
    return BusinessContent(
        markdown="\n\n".join(render_section(entry.title, entry.content) for entry in entries),
        sections=entries,
        metadata=ContentMetadata(words, reading_time_minutes(words)),
    )


def render_section(title: str, content: str) -> str:
    """One section as markdown: `## {title}\\n\\n{content}`, with no trailing newline.

    Line breaks (and runs of whitespace) in the title become single spaces, because a heading
    is one line and a newline would let a title inject markdown into the document. Blank lines
    around the content are trimmed so that sections are always separated by exactly one blank
    line; a section without content renders as its heading alone. Word counts are unchanged
    by the rendering.
    """
    heading = f"{HEADING_PREFIX}{' '.join(title.split())}".rstrip()
    body = _trim_blank_lines(content)
    return f"{heading}\n\n{body}" if body else heading


def _trim_blank_lines(text: str) -> str:
    """Drop leading whitespace-only lines and trailing whitespace; keep everything between.

    Regex-based rather than `splitlines()`, which would also rewrite `\r\n` and exotic line
    separators inside the content.
    """
    return _LEADING_BLANK_LINES.sub("", text).rstrip()


def _check_unique_ids(infos: Iterable[SectionInfo]) -> None:
    seen: set[str] = set()
    for info in infos:
        if info.id in seen:
            raise ValueError(f"duplicate section id: {info.id!r}")
        seen.add(info.id)
