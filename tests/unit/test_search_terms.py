"""The words of a search (persistence.content.search): total over any text, literal."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from persistence.content.search import (
    MARK_CLOSE,
    MARK_OPEN,
    MAX_QUERY_CHARS,
    SearchQuery,
    SearchScope,
    search_terms,
    snippet_around,
    spaced,
    unspaced,
)


@given(st.text(max_size=MAX_QUERY_CHARS))
def test_any_text_gives_plain_words_or_a_clear_refusal(text: str) -> None:
    try:
        terms = search_terms(text)
    except ValueError:
        return  # a clear refusal (the cases below check the messages)
    assert terms
    for term in terms:
        assert re.fullmatch(r"[^\W_]+( [^\W_])*", term), term
        assert term == term.lower()


@pytest.mark.parametrize(
    ("text", "terms"),
    [
        ("Market  analysis", ["market", "analysis"]),
        ('"pricing" OR tiers*', ["pricing", "or", "tiers"]),
        ("'; DROP TABLE x; --", ["drop", "table", "x"]),
        ('{"$gt": ""}', ["gt"]),
        ("plan plan PLAN", ["plan"]),
        ("市场分析", ["市 场 分 析"]),
        ("Q3市场", ["q3", "市 场"]),
        ("naïve café", ["naïve", "café"]),
    ],
)
def test_terms_are_the_words_as_typed(text: str, terms: list[str]) -> None:
    assert search_terms(text) == terms


@pytest.mark.parametrize("text", ["", "   ", "***", '"" -- ;', "a" * (MAX_QUERY_CHARS + 1), "x\0"])
def test_no_word_or_bad_text_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="search text"):
        search_terms(text)


def test_a_query_needs_a_scope_and_checks_its_ranges() -> None:
    with pytest.raises(ValueError, match="no collection"):
        SearchQuery("plan", ())
    with pytest.raises(ValueError, match="limit"):
        SearchQuery("plan", (SearchScope("projects"),), limit=0)
    with pytest.raises(ValueError, match="not searchable"):
        SearchScope("users")
    with pytest.raises(ValueError, match="needs accessible_to"):
        SearchScope("projects", accessible_ids=("p1",))


def test_spaceless_text_round_trips_through_the_index_spacing() -> None:
    text = "我们的市场 report 分析"
    assert unspaced(spaced(text).strip()).replace("  ", " ") == text
    marked = f"我 们 的 {MARK_OPEN}市{MARK_CLOSE} {MARK_OPEN}场{MARK_CLOSE} 分"
    assert unspaced(marked) == f"我们的{MARK_OPEN}市{MARK_CLOSE}{MARK_OPEN}场{MARK_CLOSE}分"


def test_snippet_marks_the_words_around_the_first_match() -> None:
    text = "start " + "padding " * 60 + "the Pricing model and pricing tiers " + "end " * 80
    snippet = snippet_around(text, ("pricing",))
    assert snippet.startswith("…")
    assert snippet.endswith("…")
    assert f"{MARK_OPEN}Pricing{MARK_CLOSE}" in snippet
    assert f"{MARK_OPEN}pricing{MARK_CLOSE}" in snippet
    assert snippet_around("no match here", ("zzz",)) == "no match here"


def test_snippets_are_escaped_but_the_marks_are_not() -> None:
    text = "before <script>alert(1)</script> & the pricing <mark>model</mark>"
    snippet = snippet_around(text, ("pricing",))
    assert "<script>" not in snippet
    assert "&lt;script&gt;" in snippet
    assert "&amp;" in snippet
    assert f"{MARK_OPEN}pricing{MARK_CLOSE}" in snippet
    assert "<mark>model" not in snippet  # a record's own marks are not ours
