"""Unit tests of crdt.markdown: the derived `content` of `business_documents`."""

from __future__ import annotations

import json

import pytest

from crdt.markdown import (
    BusinessContent,
    ContentMetadata,
    ContentSection,
    reading_time_minutes,
    render_business_content,
    render_section,
    word_count,
)
from crdt.outline import SectionInfo

GOLDEN_SECTIONS = [
    (
        SectionInfo("market", "Market analysis", 2.0),
        "The **EMEA** market grows 12% a year.\n\n- SMB segment\n- Mid-market\n",
    ),
    (SectionInfo("intro", "Executive summary", 1.0), "We expand into Europe in Q3."),
    (SectionInfo("risks", "Risks", 3.5), ""),
]

GOLDEN_MARKDOWN = (
    "## Executive summary\n"
    "\n"
    "We expand into Europe in Q3.\n"
    "\n"
    "## Market analysis\n"
    "\n"
    "The **EMEA** market grows 12% a year.\n"
    "\n"
    "- SMB segment\n"
    "- Mid-market\n"
    "\n"
    "## Risks"
)


def test_golden_rendering() -> None:
    content = render_business_content(GOLDEN_SECTIONS)
    assert content.markdown == GOLDEN_MARKDOWN
    # Titles 2 + 2 + 1; contents 6 + (7 + 2 + 1) + 0, a lone "-" being no word.
    assert content.metadata == ContentMetadata(word_count=21, reading_time_minutes=1)
    assert content.to_dict() == {
        "markdown": GOLDEN_MARKDOWN,
        "sections": [
            {
                "id": "intro",
                "title": "Executive summary",
                "content": "We expand into Europe in Q3.",
                "order": 0,
            },
            {
                "id": "market",
                "title": "Market analysis",
                "content": "The **EMEA** market grows 12% a year.\n\n- SMB segment\n- Mid-market\n",
                "order": 1,
            },
            {"id": "risks", "title": "Risks", "content": "", "order": 2},
        ],
        "metadata": {"wordCount": 21, "readingTime": 1},
    }


def test_to_dict_is_json() -> None:
    content = render_business_content(GOLDEN_SECTIONS)
    assert json.loads(json.dumps(content.to_dict())) == content.to_dict()


def test_no_sections() -> None:
    content = render_business_content([])
    assert content == BusinessContent("", (), ContentMetadata(0, 0))
    assert content.to_dict() == {
        "markdown": "",
        "sections": [],
        "metadata": {"wordCount": 0, "readingTime": 0},
    }


def test_sections_are_placed_by_order_then_id() -> None:
    content = render_business_content(
        [
            (SectionInfo("b", "B", 1.0), "b"),
            (SectionInfo("c", "C", 0.5), "c"),
            (SectionInfo("a", "A", 1.0), "a"),
        ]
    )
    assert [(s.id, s.order) for s in content.sections] == [("c", 0), ("a", 1), ("b", 2)]
    assert content.markdown == "## C\n\nc\n\n## A\n\na\n\n## B\n\nb"


def test_duplicate_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="duplicate section id"):
        render_business_content(
            [(SectionInfo("a", "A", 1.0), ""), (SectionInfo("a", "Again", 2.0), "")]
        )


def test_content_section_keeps_raw_text() -> None:
    raw = "\n\n  indented code\n\n\n"
    content = render_business_content([(SectionInfo("a", "A", 1.0), raw)])
    assert content.sections == (ContentSection("a", "A", raw, 0),)
    assert content.markdown == "## A\n\n  indented code"


@pytest.mark.parametrize(
    ("title", "content", "expected"),
    [
        ("Title", "Body", "## Title\n\nBody"),
        ("Title", "", "## Title"),
        ("Title", "  \n\t\n", "## Title"),
        ("", "Body", "##\n\nBody"),
        ("Multi\nline\r\ntitle", "x", "## Multi line title\n\nx"),
        ("  padded   title  ", "x", "## padded title\n\nx"),
        ("T", "\n\n\nBody\n\n\n", "## T\n\nBody"),
        ("T", "a\r\nb\n", "## T\n\na\r\nb"),
        ("T", "a\u2028b", "## T\n\na\u2028b"),
        ("T", "    code\n", "## T\n\n    code"),
    ],
)
def test_render_section(title: str, content: str, expected: str) -> None:
    assert render_section(title, content) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("   \n\t ", 0),
        ("one", 1),
        ("one two  three\nfour", 4),
        ("## Heading", 1),
        ("# ## ### ####", 0),
        ("- item\n- other item", 3),
        ("* * *", 0),
        ("---", 0),
        ("> quoted text", 2),
        ("**bold** and _em_", 3),
        ("`code()`", 1),
        ("[link](https://example.com)", 1),
        ("e.g. 2024 12% $5", 4),
        ("a-b well-known", 2),
        ("_ __ ___", 0),
        ("\u2014 \u2013 \u2026 \u00b7 \u2022", 0),  # dashes, ellipsis, dots
        ("| a | b |\n|---|---|", 2),
        ("日本語 テキスト", 2),
        ("café naïve Ελληνικά", 3),
        ("٣ ½", 2),
        ("emoji 😀 🎉", 1),
    ],
)
def test_word_count(text: str, expected: int) -> None:
    assert word_count(text) == expected


@pytest.mark.parametrize(
    ("words", "expected"), [(0, 0), (1, 1), (199, 1), (200, 1), (201, 2), (400, 2), (401, 3)]
)
def test_reading_time(words: int, expected: int) -> None:
    assert reading_time_minutes(words) == expected


def test_reading_time_custom_speed() -> None:
    assert reading_time_minutes(250, words_per_minute=250) == 1
    assert reading_time_minutes(251, words_per_minute=250) == 2


@pytest.mark.parametrize(("words", "speed"), [(-1, 200), (10, 0), (10, -5)])
def test_reading_time_rejects_bad_input(words: int, speed: int) -> None:
    with pytest.raises(ValueError, match=r"negative|non-positive"):
        reading_time_minutes(words, words_per_minute=speed)


def test_reading_time_in_metadata() -> None:
    body = " ".join(["word"] * 399)
    content = render_business_content([(SectionInfo("a", "Title", 1.0), body)])
    assert content.metadata.to_dict() == {"wordCount": 400, "readingTime": 2}


def test_business_content_is_frozen() -> None:
    content = render_business_content(GOLDEN_SECTIONS)
    with pytest.raises(AttributeError):
        content.markdown = ""  # type: ignore[misc]
