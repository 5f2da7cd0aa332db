"""ContentStore.search, run against every adapter (``docs/search.md``).

The embedded adapter searches with SQLite FTS5; the Mongo adapter with ``$text``, here over
mongomock through the shim's emulation of ``$text`` (``mongomock_async.TextSearch``: the
adapter's plumbing, not MongoDB's stemmer) and against a real MongoDB when
``COLLAB_TEST_MONGO_URL`` is set. Where the engines' semantics differ (every word on
SQLite, any word on MongoDB), the test says so.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from persistence.content.ports import ContentStore
from persistence.content.search import (
    MARK_CLOSE,
    MARK_OPEN,
    SearchPage,
    SearchQuery,
    SearchScope,
)
from persistence.content.sqlite import SqliteContentStore
from tests.contract.test_contract_content_store import ADAPTERS, DOCS, T0, _open, business_doc

EVERYWHERE = (
    SearchScope(DOCS),
    SearchScope("projects"),
    SearchScope("knowledge_articles"),
    SearchScope("strategic_plans"),
    SearchScope("market_research"),
    SearchScope("sales_opportunities"),
)


@pytest.fixture(params=ADAPTERS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ContentStore]:
    async for opened in _open(request.param, tmp_path):
        yield opened


def doc(doc_id: str, title: str, markdown: str = "", **fields: Any) -> dict[str, Any]:
    return business_doc(
        doc_id, title=title, content={"markdown": markdown, "sections": []}, **fields
    )


async def search(store: ContentStore, text: str, *scopes: SearchScope, **kw: Any) -> SearchPage:
    return await store.search(SearchQuery(text, scopes or (SearchScope(DOCS),), **kw))


def found(page: SearchPage) -> list[str]:
    return [hit.id for hit in page.items]


async def test_a_record_about_the_word_ranks_above_one_that_mentions_it(
    store: ContentStore,
) -> None:
    await store.insert(DOCS, doc("once", "Quarterly notes", "we might look at pricing later"))
    await store.insert(
        DOCS,
        doc("about", "Notes", "pricing pricing tiers; pricing for schools; pricing review"),
    )
    await store.insert(DOCS, doc("none", "Hiring plan", "nothing about money here"))
    page = await search(store, "pricing")
    assert found(page) == ["about", "once"]
    assert page.total == 2
    assert page.items[0].score > page.items[1].score


async def test_a_title_match_weighs_more_than_a_body_match(store: ContentStore) -> None:
    await store.insert(DOCS, doc("body", "Quarterly notes", "see the roadmap appendix"))
    await store.insert(DOCS, doc("title", "Roadmap", "quarterly notes and appendix"))
    assert found(await search(store, "roadmap")) == ["title", "body"]


async def test_the_hit_carries_title_snippet_and_date(store: ContentStore) -> None:
    text = "Intro. " + "filler words " * 40 + "our expansion into Brazil is planned. " * 2
    await store.insert(DOCS, doc("d1", "Growth", text, updatedAt=T0))
    (hit,) = (await search(store, "brazil")).items
    assert (hit.collection, hit.id, hit.title, hit.updated_at) == (DOCS, "d1", "Growth", T0)
    assert f"{MARK_OPEN}Brazil{MARK_CLOSE}" in hit.snippet
    assert len(hit.snippet) < len(text)


async def test_plural_and_singular_find_each_other(store: ContentStore) -> None:
    await store.insert(DOCS, doc("d1", "Notes", "two product launches this year"))
    assert found(await search(store, "launch")) == ["d1"]
    assert found(await search(store, "launches")) == ["d1"]


async def test_words_of_a_spaceless_script_are_found_inside_longer_runs(
    store: ContentStore,
) -> None:
    await store.insert(DOCS, doc("zh", "报告", "我们的市场分析报告显示增长"))
    await store.insert(DOCS, doc("other", "Notes", "市政厅"))
    page = await search(store, "市场")
    assert found(page) == ["zh"]
    assert f"{MARK_OPEN}市" in page.items[0].snippet or "市场" in page.items[0].snippet


async def test_every_collection_is_searched_with_its_own_fields(store: ContentStore) -> None:
    await store.insert(DOCS, doc("d1", "Atlas document"))
    await store.insert(
        "projects",
        {"projectId": "p1", "name": "Atlas rollout", "owner": "alice", "status": "active"},
    )
    await store.insert(
        "strategic_plans",
        {
            "planId": "s1",
            "title": "Growth plan",
            "owner": "alice",
            "status": "draft",
            "keyObjectives": [{"id": "o1", "title": "Win", "description": "ship atlas"}],
        },
    )
    await store.insert(
        "knowledge_articles",
        {"articleId": "k1", "title": "Guide", "author": "alice", "content": "atlas howto"},
    )
    page = await search(store, "atlas", *EVERYWHERE)
    assert sorted((hit.collection, hit.id) for hit in page.items) == [
        (DOCS, "d1"),
        ("knowledge_articles", "k1"),
        ("projects", "p1"),
        ("strategic_plans", "s1"),
    ]
    assert page.total == 4
    titles = {hit.id: hit.title for hit in page.items}
    assert titles["p1"] == "Atlas rollout"


async def test_rights_are_applied_inside_the_query_so_totals_and_pages_are_right(
    store: ContentStore,
) -> None:
    for i in range(6):
        owner = "alice" if i % 2 == 0 else "bob"
        await store.insert(DOCS, doc(f"d{i}", f"Budget {i}", "budget", owner=owner))
    await store.insert(
        DOCS,
        doc(
            "shared",
            "Budget shared",
            owner="bob",
            permissions={"view": ["alice"], "edit": [], "comment": []},
        ),
    )
    await store.insert(DOCS, doc("granted", "Budget granted", owner="bob"))
    alice = SearchScope(DOCS, accessible_to="alice", accessible_ids=("granted",))
    first = await search(store, "budget", alice, limit=2)
    assert first.total == 5  # d0, d2, d4, shared, granted
    rest = await search(store, "budget", alice, limit=10, offset=2)
    seen = found(first) + found(rest)
    assert sorted(seen) == ["d0", "d2", "d4", "granted", "shared"]
    everyone = await search(store, "budget")
    assert everyone.total == 8


async def test_filters_status_owner_tag_and_dates(store: ContentStore) -> None:
    await store.insert(DOCS, doc("a", "Plan", "pipeline", status="draft", tags=["q3"]))
    await store.insert(
        DOCS,
        doc(
            "b",
            "Plan",
            "pipeline",
            status="published",
            owner="bob",
            updatedAt=T0 + timedelta(days=3),
        ),
    )
    await store.insert(
        "projects", {"projectId": "p", "name": "Pipeline", "owner": "bob", "status": "active"}
    )
    assert found(await search(store, "pipeline", status="published")) == ["b"]
    assert sorted(
        found(
            await search(store, "pipeline", SearchScope(DOCS), SearchScope("projects"), owner="bob")
        )
    ) == ["b", "p"]
    tagged = await search(store, "pipeline", SearchScope(DOCS), SearchScope("projects"), tag="q3")
    assert found(tagged) == ["a"]  # projects have no tags: a tag filter excludes them
    later = await search(store, "pipeline", updated_from=T0 + timedelta(days=1))
    assert found(later) == ["b"]
    earlier = await search(store, "pipeline", updated_to=T0 + timedelta(days=1))
    assert found(earlier) == ["a"]


async def test_paging_is_stable(store: ContentStore) -> None:
    for i in range(7):
        await store.insert(DOCS, doc(f"d{i}", "Same title", "same words"))
    pages = [found(await search(store, "same", limit=3, offset=o)) for o in (0, 3, 6)]
    flat = [doc_id for page in pages for doc_id in page]
    assert sorted(flat) == [f"d{i}" for i in range(7)]
    assert len(set(flat)) == 7


async def test_writes_are_searchable_at_once_and_deletes_gone(store: ContentStore) -> None:
    await store.insert(DOCS, doc("d1", "Draft", "first words"))
    assert found(await search(store, "first")) == ["d1"]
    await store.update(DOCS, "d1", {"content": {"markdown": "second thoughts", "sections": []}})
    assert found(await search(store, "first")) == []
    assert found(await search(store, "second")) == ["d1"]
    await store.delete(DOCS, "d1")
    assert (await search(store, "second")).total == 0


@pytest.mark.parametrize(
    "text",
    [
        'pricing" OR "x',
        "pricing*",
        "NEAR(pricing tiers)",
        "title:pricing",
        "'; DROP TABLE business_documents; --",
        '{"$gt": ""} pricing',
        "-pricing",
        "pricing AND NOT tiers",
    ],
)
async def test_query_syntax_is_text_never_an_error(store: ContentStore, text: str) -> None:
    await store.insert(DOCS, doc("d1", "Pricing", "pricing tiers and more"))
    page = await search(store, text)
    assert page.total in (0, 1)  # the words decide, never an operator
    assert (await search(store, "pricing")).total == 1  # nothing was dropped


async def test_sqlite_indexes_records_written_before_search_existed(tmp_path: Path) -> None:
    path = tmp_path / "content.sqlite3"
    async with await SqliteContentStore.open(path) as store:
        await store.insert(DOCS, doc("old", "Legacy memo", "archived strategy"))
    with sqlite3.connect(path) as conn:  # the store as an older version left it
        for name in ("insert", "update", "delete"):
            conn.execute(f'DROP TRIGGER "business_documents__search_{name}"')
        conn.execute('DROP TABLE "business_documents__search"')
        conn.execute('DROP TABLE "business_documents__search_keys"')
    async with await SqliteContentStore.open(path) as store:
        assert found(await search(store, "legacy")) == ["old"]
        await store.insert(DOCS, doc("new", "Legacy too"))
        assert sorted(found(await search(store, "legacy"))) == ["new", "old"]


async def test_a_snippet_shows_markup_as_text(store: ContentStore) -> None:
    await store.insert(DOCS, doc("x", "Memo", "<img src=x onerror=alert(1)> pricing & more"))
    (hit,) = (await search(store, "pricing")).items
    assert "<img" not in hit.snippet
    assert "&lt;img" in hit.snippet
    assert f"{MARK_OPEN}pricing{MARK_CLOSE}" in hit.snippet


async def test_a_scope_keeps_to_its_ids_filters_and_tags(store: ContentStore) -> None:
    await store.insert(DOCS, doc("a", "Plan", "offsite", type="custom", tags=["x", "y"]))
    await store.insert(DOCS, doc("b", "Plan", "offsite", type="case_study", tags=["x"]))
    await store.insert(DOCS, doc("c", "Plan", "offsite", type="custom"))
    assert sorted(found(await search(store, "offsite", SearchScope(DOCS, ids=("a", "b"))))) == [
        "a",
        "b",
    ]
    assert found(await search(store, "offsite", SearchScope(DOCS, ids=()))) == []
    custom = SearchScope(DOCS, filters={"type": "custom"}, tags_all=("x", "y"))
    assert found(await search(store, "offsite", custom)) == ["a"]
    with pytest.raises(ValueError, match="cannot be filtered"):
        await search(store, "offsite", SearchScope(DOCS, filters={"colour": "red"}))


async def test_rights_follow_nested_lists_and_changes_of_the_record(store: ContentStore) -> None:
    await store.insert(
        "projects",
        {
            "projectId": "p1",
            "name": "Offsite",
            "owner": "olga",
            "stakeholders": [{"userId": "kim", "role": "Lead"}],
        },
    )
    await store.insert("projects", {"projectId": "p2", "name": "Offsite", "owner": "olga"})
    kim = SearchScope("projects", accessible_to="kim")
    assert found(await search(store, "offsite", kim)) == ["p1"]
    await store.update("projects", "p1", {"stakeholders": []})
    assert found(await search(store, "offsite", kim)) == []
    await store.update("projects", "p2", {"owner": "kim"})
    assert found(await search(store, "offsite", kim)) == ["p2"]
