"""The CmsQueries contract (and the ``ranges`` / ``holds`` conditions of ``Query``), run
against the embedded SQLite adapter, the Mongo adapter over mongomock, and a real MongoDB
when ``COLLAB_TEST_MONGO_URL`` is set."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from persistence.content.cms_ports import CmsQueries, PipelineGroup
from persistence.content.mongo import MongoContentStore
from persistence.content.mongo_cms import MongoCmsQueries
from persistence.content.ports import ContentStore, Query
from persistence.content.sqlite import SqliteContentStore
from persistence.content.sqlite_cms import SqliteCmsQueries
from tests.contract.test_contract_content_store import ADAPTERS, _open

T0 = datetime(2026, 3, 1, tzinfo=UTC)
SALES = "sales_opportunities"
PROJECTS = "projects"
DOCS = "business_documents"


class Pair:
    def __init__(self, store: ContentStore, kind: str) -> None:
        self.store = store
        self.kind = kind
        self.queries: CmsQueries
        if isinstance(store, SqliteContentStore):
            self.queries = SqliteCmsQueries(store)
        else:
            assert isinstance(store, MongoContentStore)
            self.queries = MongoCmsQueries(store)


@pytest.fixture(params=ADAPTERS)
async def pair(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Pair]:
    async for opened in _open(request.param, tmp_path):
        yield Pair(opened, request.param)


def opportunity(oid: str, **fields: Any) -> dict[str, Any]:
    return {"opportunityId": oid, "title": oid, **fields}


async def test_lookup_joins_linked_documents_in_link_order(pair: Pair) -> None:
    for doc_id in ("d1", "d2", "d3"):
        await pair.store.insert(
            DOCS, {"documentId": doc_id, "title": doc_id.upper(), "content": {"markdown": "x"}}
        )
    await pair.store.insert(
        PROJECTS, {"projectId": "p", "name": "P", "linkedDocuments": ["d3", "gone", "d1", "d3"]}
    )
    found = await pair.queries.lookup(
        PROJECTS, "p", "linkedDocuments", DOCS, exclude=("content", "revisions")
    )
    assert found is not None
    record, joined = found
    assert record["projectId"] == "p"
    assert record["linkedDocuments"] == ["d3", "gone", "d1", "d3"]
    assert [d["documentId"] for d in joined] == ["d3", "d1"]
    assert all("content" not in d and "_id" not in d for d in joined)
    assert joined[0]["title"] == "D3"
    full = await pair.queries.lookup(PROJECTS, "p", "linkedDocuments", DOCS)
    assert full is not None
    assert full[1][0]["content"] == {"markdown": "x"}


async def test_lookup_of_a_missing_record_or_an_empty_list(pair: Pair) -> None:
    assert await pair.queries.lookup(PROJECTS, "nope", "linkedDocuments", DOCS) is None
    await pair.store.insert(PROJECTS, {"projectId": "empty", "name": "E"})
    assert await pair.queries.lookup(PROJECTS, "empty", "linkedDocuments", DOCS) == (
        {"projectId": "empty", "name": "E"},
        [],
    )


async def test_lookup_refuses_fields_that_are_not_id_arrays(pair: Pair) -> None:
    with pytest.raises(ValueError, match="not an array"):
        await pair.queries.lookup(PROJECTS, "p", "name", DOCS)
    with pytest.raises(ValueError, match="unknown collection"):
        await pair.queries.lookup(PROJECTS, "p", "linkedDocuments", "nope")
    with pytest.raises(ValueError, match="field name"):
        await pair.queries.lookup(PROJECTS, "p", "linkedDocuments", DOCS, exclude=("a.b",))


async def test_sales_pipeline_groups_by_stage_and_currency(pair: Pair) -> None:
    rows = [
        opportunity("a", stage="proposal", currency="USD", value=1000, probability=50),
        opportunity("b", stage="proposal", currency="USD", value=500.5, probability=100),
        opportunity("c", stage="proposal", currency="EUR", value=200, probability=10),
        opportunity("d", stage="won", currency="USD", value=300),
        opportunity("e", stage="won", owner="u2", currency="USD", value=7, probability=100),
        opportunity("f", stage="lost"),
    ]
    for row in rows:
        await pair.store.insert(SALES, row)
    groups = await pair.queries.sales_pipeline(Query())
    assert groups == [
        PipelineGroup("lost", None, 1, 0.0, 0.0),
        PipelineGroup("proposal", "EUR", 1, 200.0, 20.0),
        PipelineGroup("proposal", "USD", 2, 1500.5, 1000.5),
        PipelineGroup("won", "USD", 2, 307.0, 7.0),
    ]
    mine = await pair.queries.sales_pipeline(Query(filters={"owner": "u2"}))
    assert mine == [PipelineGroup("won", "USD", 1, 7.0, 7.0)]
    # Access conditions apply as in find().
    visible = await pair.queries.sales_pipeline(Query(accessible_to="u2"))
    assert visible == [PipelineGroup("won", "USD", 1, 7.0, 7.0)]


async def test_increment_adds_to_counters(pair: Pair) -> None:
    await pair.store.insert("knowledge_articles", {"articleId": "k", "title": "K", "views": 2})
    assert await pair.queries.increment("knowledge_articles", "k", {"views": 5, "shares": 1})
    stored = await pair.store.get("knowledge_articles", "k")
    assert stored is not None
    assert (stored["views"], stored["shares"]) == (7, 1)
    assert not await pair.queries.increment("knowledge_articles", "nope", {"views": 1})
    with pytest.raises(ValueError, match="counter"):
        await pair.queries.increment("knowledge_articles", "k", {"a.b": 1})
    with pytest.raises(ValueError, match="business id"):
        await pair.queries.increment("knowledge_articles", "k", {"articleId": 1})


async def test_members_count_once(pair: Pair) -> None:
    articles = "knowledge_articles"
    await pair.store.insert(articles, {"articleId": "k", "title": "K", "likes": 0})
    assert await pair.queries.add_member(articles, "k", "likedBy", "u1", "likes")
    assert not await pair.queries.add_member(articles, "k", "likedBy", "u1", "likes")
    assert await pair.queries.add_member(articles, "k", "likedBy", "u2", "likes")
    stored = await pair.store.get(articles, "k")
    assert stored is not None
    assert (stored["likes"], sorted(stored["likedBy"])) == (2, ["u1", "u2"])
    assert await pair.queries.remove_member(articles, "k", "likedBy", "u1", "likes")
    assert not await pair.queries.remove_member(articles, "k", "likedBy", "u1", "likes")
    stored = await pair.store.get(articles, "k")
    assert stored is not None
    assert (stored["likes"], stored["likedBy"]) == (1, ["u2"])
    assert not await pair.queries.add_member(articles, "nope", "likedBy", "u1", "likes")


async def test_ranges_bound_dates_and_numbers(pair: Pair) -> None:
    for n in range(5):
        await pair.store.insert(
            SALES,
            opportunity(f"o{n}", expectedCloseDate=T0 + timedelta(days=10 * n), value=100 * n),
        )
    await pair.store.insert(SALES, opportunity("text-date", expectedCloseDate="2026-03-15"))
    window = Query(
        ranges={"expectedCloseDate": (T0 + timedelta(days=10), T0 + timedelta(days=30))},
        sort="expectedCloseDate",
    )
    page = await pair.store.find(SALES, window)
    assert [item["opportunityId"] for item in page.items] == ["o1", "o2", "o3"]
    assert page.total == 3
    open_ended = await pair.store.find(SALES, Query(ranges={"value": (250, None)}))
    assert [item["opportunityId"] for item in open_ended.items] == ["o3", "o4"]
    with pytest.raises(ValueError, match="range"):
        Query(ranges={"value": (T0, 5)})
    with pytest.raises(ValueError, match="low is above high"):
        Query(ranges={"value": (5, 1)})
    with pytest.raises(ValueError, match="no range or array field"):
        await pair.store.find(SALES, Query(ranges={"title": (1, 2)}))


async def test_holds_finds_records_linking_a_value(pair: Pair) -> None:
    await pair.store.insert(PROJECTS, {"projectId": "p1", "name": "A", "linkedDocuments": ["d"]})
    await pair.store.insert(PROJECTS, {"projectId": "p2", "name": "B", "linkedDocuments": ["e"]})
    await pair.store.insert(PROJECTS, {"projectId": "p3", "name": "C", "linkedDocuments": "d"})
    page = await pair.store.find(PROJECTS, Query(holds={"linkedDocuments": "d"}))
    ids = [item["projectId"] for item in page.items]
    assert "p1" in ids
    assert "p2" not in ids
    # An injection string is a literal value.
    none = await pair.store.find(PROJECTS, Query(holds={"linkedDocuments": "' OR 1=1 --"}))
    assert none.total == 0


async def test_explain_shows_the_index_serving_a_filtered_list(pair: Pair) -> None:
    if pair.kind == "mongomock":
        pytest.skip("mongomock has no query planner")
    query = Query(filters={"stage": "won"}, sort="updatedAt", descending=True)
    plan = await pair.queries.explain(SALES, query)
    if pair.kind == "sqlite":
        assert "USING INDEX" in plan, plan
        assert "sales_opportunities_stage" in plan or "updatedAt_sort" in plan, plan
    else:
        assert "IXSCAN" in plan, plan


async def test_scalar_access_fields_match_by_equality(pair: Pair) -> None:
    await pair.store.insert(SALES, opportunity("mine", owner="u1", stage="won", value=5))
    await pair.store.insert(SALES, opportunity("managed", accountManager="u1"))
    await pair.store.insert(SALES, opportunity("other", owner="u2"))
    page = await pair.store.find(SALES, Query(accessible_to="u1"))
    assert sorted(item["opportunityId"] for item in page.items) == ["managed", "mine"]
    granted = await pair.store.find(SALES, Query(accessible_to="u1", accessible_ids=("other",)))
    assert granted.total == 3


async def test_a_file_from_before_the_pipeline_columns_gets_them(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite3"
    old = sqlite3.connect(path)
    old.execute(
        'CREATE TABLE "sales_opportunities" (id TEXT PRIMARY KEY, slug TEXT, doc TEXT NOT NULL)'
    )
    old.execute(
        'INSERT INTO "sales_opportunities" VALUES (?, NULL, ?)',
        ("old", '{"opportunityId": "old", "stage": "won", "currency": "USD", "value": 9}'),
    )
    old.commit()
    old.close()
    for _ in range(2):  # opening twice is idempotent
        async with await SqliteContentStore.open(path) as store:
            groups = await SqliteCmsQueries(store).sales_pipeline(Query())
            assert groups == [PipelineGroup("won", "USD", 1, 9.0, 0.0)]
            plan = await SqliteCmsQueries(store).explain(SALES, Query(filters={"stage": "won"}))
            assert "USING INDEX" in plan


async def test_array_conditions_follow_updates_and_deletes(pair: Pair) -> None:
    user = "u-stakeholder"
    await pair.store.insert(
        PROJECTS,
        {"projectId": "p", "name": "P", "stakeholders": [{"userId": user}], "linkedDocuments": []},
    )
    assert (await pair.store.find(PROJECTS, Query(accessible_to=user))).total == 1
    await pair.store.update(PROJECTS, "p", {"stakeholders": [], "linkedDocuments": ["d1", "d2"]})
    assert (await pair.store.find(PROJECTS, Query(accessible_to=user))).total == 0
    assert (await pair.store.find(PROJECTS, Query(holds={"linkedDocuments": "d2"}))).total == 1
    await pair.store.insert("knowledge_articles", {"articleId": "k", "title": "K", "tags": ["a"]})
    await pair.queries.increment("knowledge_articles", "k", {"views": 1})
    tagged = await pair.store.find("knowledge_articles", Query(tags_all=("a",)))
    assert [item["articleId"] for item in tagged.items] == ["k"]
    await pair.store.delete(PROJECTS, "p")
    assert (await pair.store.find(PROJECTS, Query(holds={"linkedDocuments": "d2"}))).total == 0


async def test_records_written_before_the_key_tables_are_found(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite3"
    old = sqlite3.connect(path)
    old.execute('CREATE TABLE "projects" (id TEXT PRIMARY KEY, slug TEXT, doc TEXT NOT NULL)')
    old.execute(
        'INSERT INTO "projects" VALUES (?, NULL, ?)',
        ("old", '{"projectId": "old", "name": "Old", "linkedDocuments": ["d"]}'),
    )
    old.commit()
    old.close()
    async with await SqliteContentStore.open(path) as store:
        page = await store.find(PROJECTS, Query(holds={"linkedDocuments": "d"}))
        assert [item["projectId"] for item in page.items] == ["old"]


LIST_QUERIES = [
    ("projects", Query(filters={"status": "active"}, sort="updatedAt", descending=True)),
    ("projects", Query(accessible_to="u1", sort="updatedAt")),
    ("market_research", Query(filters={"status": "published", "type": "market_analysis"})),
    ("strategic_plans", Query(filters={"fiscalYear": 2026}, accessible_to="u1")),
    ("sales_opportunities", Query(accessible_to="u1", sort="expectedCloseDate")),
    ("knowledge_articles", Query(filters={"status": "published"}, tags_all=("pricing",))),
    ("knowledge_articles", Query(accessible_to="u1", sort="createdAt")),
]


@pytest.mark.parametrize(("collection", "query"), LIST_QUERIES)
async def test_the_cms_lists_are_served_by_indexes_on_sqlite(
    tmp_path: Path, collection: str, query: Query
) -> None:
    async with await SqliteContentStore.open(tmp_path / "plans.sqlite3") as store:
        plan = await SqliteCmsQueries(store).explain(collection, query)
    first = plan.splitlines()[0] if "CO-ROUTINE" not in plan else plan.splitlines()[1]
    assert "USING INDEX" in first or "MULTI-INDEX OR" in first or "PRIMARY KEY" in plan, plan
    assert f"SCAN {collection}" not in plan, plan
