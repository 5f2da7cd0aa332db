"""The ContentStore contract, run against every adapter.

Adapters: the embedded SQLite one; the Mongo one over mongomock (through the async shim in
``mongomock_async.py``); the Mongo one against a real MongoDB when ``COLLAB_TEST_MONGO_URL``
is set (each test gets a database of its own, dropped afterwards).
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import bson
import pytest
from pymongo import AsyncMongoClient

from persistence.content.mongo import MongoContentStore
from persistence.content.ports import COLLECTIONS, ContentStore, Query
from persistence.content.sqlite import SqliteContentStore
from persistence.errors import (
    DocumentNotFound,
    DocumentTooLarge,
    StorageClosed,
    StorageConflict,
    StorageCorrupted,
    StorageUnavailable,
)
from tests.contract.mongomock_async import AsyncMockClient

MONGO_URL = os.environ.get("COLLAB_TEST_MONGO_URL")
RUN_ID = uuid.uuid4().hex[:8]
DOCS = "business_documents"
T0 = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)

needs_mongo = pytest.mark.skipif(
    not MONGO_URL,
    reason="COLLAB_TEST_MONGO_URL is not set: no MongoDB server to run the Mongo adapter against",
)
ADAPTERS = ["sqlite", "mongomock", pytest.param("mongo", marks=needs_mongo)]


async def _open(kind: str, tmp_path: Path) -> AsyncIterator[ContentStore]:
    if kind == "sqlite":
        async with await SqliteContentStore.open(tmp_path / "content.sqlite3") as store:
            yield store
    elif kind == "mongomock":
        client = AsyncMockClient()
        async with MongoContentStore(client["collab_test"]) as mock_store:
            await mock_store.ensure_indexes()
            yield mock_store
        await client.close()
    else:
        assert MONGO_URL is not None
        name = f"collab_test_{RUN_ID}_{uuid.uuid4().hex[:8]}"
        try:
            async with MongoContentStore.from_url(MONGO_URL, name) as real_store:
                await real_store.ensure_indexes()
                yield real_store
        finally:
            admin: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGO_URL)
            await admin.drop_database(name)
            await admin.close()


@pytest.fixture(params=ADAPTERS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ContentStore]:
    async for opened in _open(request.param, tmp_path):
        yield opened


def business_doc(doc_id: str, **fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "documentId": doc_id,
        "title": f"Document {doc_id}",
        "type": "custom",
        "status": "draft",
        "version": 1,
        "owner": "alice",
        "permissions": {"view": [], "edit": [], "comment": []},
        "tags": [],
        "content": {"markdown": "", "sections": [], "metadata": {"wordCount": 0}},
        "createdAt": T0,
        "updatedAt": T0,
    }
    doc.update(fields)
    return doc


def ids(items: list[dict[str, Any]], field: str = "documentId") -> list[str]:
    return [item[field] for item in items]


# -- insert / get / update / delete ----------------------------------------------------------


async def test_insert_then_get_returns_the_document(store: ContentStore) -> None:
    doc = business_doc(
        "d1",
        slug="growth-2026",
        description="Ünïcode — “quoted” 🚀",
        content={
            "markdown": "# Plan\n\nGrow.",
            "sections": [{"id": "s1", "title": "Plan", "content": "Grow.", "order": 0}],
            "metadata": {"wordCount": 2, "readingTime": 1},
        },
        seo={"metaTitle": "Growth", "keywords": ["growth", "plan"]},
        budget=1250000.5,
        featured=False,
        lastReviewedAt=None,
    )
    stored = await store.insert(DOCS, doc)
    assert stored == doc
    fetched = await store.get(DOCS, "d1")
    assert fetched == doc
    assert fetched is not None
    assert "_id" not in fetched


async def test_datetimes_come_back_aware_utc_at_millisecond_precision(store: ContentStore) -> None:
    paris = timezone(timedelta(hours=1))
    written = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=paris)
    stored = await store.insert(DOCS, business_doc("d1", updatedAt=written, nested={"at": written}))
    fetched = await store.get(DOCS, "d1")
    assert fetched == stored
    expected = datetime(2026, 3, 1, 11, 0, 0, 123000, tzinfo=UTC)
    for value in (fetched["updatedAt"], fetched["nested"]["at"]):
        assert value == expected
        assert value.utcoffset() == timedelta(0)


async def test_get_unknown_returns_none(store: ContentStore) -> None:
    assert await store.get(DOCS, "nope") is None


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"_id": "mine"}, "_id is the store's"),
        ({"$where": "1"}, "invalid field name"),
        ({"a.b": 1}, "invalid field name"),
        ({"nested": {"$gt": 1}}, "invalid field name"),
        ({"when": datetime(2026, 1, 1)}, "timezone-aware"),  # naive
        ({"ratio": float("nan")}, "non-finite"),
        ({"big": 2**64}, "int64"),
        ({"blob": {1, 2}}, "cannot store a set"),
        ({"raw": b"bytes"}, "cannot store a bytes"),
    ],
)
async def test_unstorable_documents_are_refused(
    store: ContentStore, bad: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        await store.insert(DOCS, {**business_doc("d1"), **bad})
    assert await store.get(DOCS, "d1") is None


async def test_insert_without_business_id_is_refused(store: ContentStore) -> None:
    with pytest.raises(ValueError, match="documentId must be a string"):
        await store.insert(DOCS, {"title": "no id"})
    with pytest.raises(ValueError, match="projectId must be a string"):
        await store.insert("projects", {"projectId": ""})


@pytest.mark.parametrize("collection", sorted(COLLECTIONS))
async def test_duplicate_business_id_conflicts(store: ContentStore, collection: str) -> None:
    id_field = COLLECTIONS[collection].id_field
    await store.insert(collection, {id_field: "x1", "title": "first"})
    with pytest.raises(StorageConflict):
        await store.insert(collection, {id_field: "x1", "title": "second"})
    assert (await store.get(collection, "x1")) == {id_field: "x1", "title": "first"}


@pytest.mark.parametrize(
    ("collection", "id_field"), [(DOCS, "documentId"), ("knowledge_articles", "articleId")]
)
async def test_duplicate_slug_conflicts(
    store: ContentStore, collection: str, id_field: str
) -> None:
    await store.insert(collection, {id_field: "a", "slug": "same"})
    with pytest.raises(StorageConflict):
        await store.insert(collection, {id_field: "b", "slug": "same"})
    assert await store.get(collection, "b") is None
    # Documents without a slug, or with a null one, never conflict.
    for doc_id in ("c", "d"):
        await store.insert(collection, {id_field: doc_id})
    for doc_id in ("e", "f"):
        await store.insert(collection, {id_field: doc_id, "slug": None})


async def test_slugs_are_unique_per_collection_only(store: ContentStore) -> None:
    await store.insert(DOCS, {"documentId": "a", "slug": "shared"})
    await store.insert("knowledge_articles", {"articleId": "a", "slug": "shared"})
    await store.insert("projects", {"projectId": "p1", "slug": "x"})
    await store.insert("projects", {"projectId": "p2", "slug": "x"})  # no slug index there


async def test_update_sets_top_level_fields(store: ContentStore) -> None:
    await store.insert(DOCS, business_doc("d1", slug="one"))
    later = T0 + timedelta(hours=1)
    updated = await store.update(
        DOCS, "d1", {"title": "Renamed", "updatedAt": later, "content": {"markdown": "new"}}
    )
    assert updated["title"] == "Renamed"
    assert updated["updatedAt"] == later
    assert updated["content"] == {"markdown": "new"}
    assert updated["slug"] == "one"
    assert await store.get(DOCS, "d1") == updated


async def test_update_unknown_document_raises_not_found(store: ContentStore) -> None:
    with pytest.raises(DocumentNotFound):
        await store.update(DOCS, "ghost", {"title": "x"})
    with pytest.raises(DocumentNotFound):
        await store.update(DOCS, "ghost", {"title": "x"}, expected_version=1)


async def test_update_to_a_taken_slug_conflicts_and_changes_nothing(store: ContentStore) -> None:
    await store.insert(DOCS, business_doc("a", slug="taken"))
    await store.insert(DOCS, business_doc("b", slug="free"))
    with pytest.raises(StorageConflict):
        await store.update(DOCS, "b", {"slug": "taken", "title": "moved"})
    after = await store.get(DOCS, "b")
    assert after is not None
    assert (after["slug"], after["title"]) == ("free", "Document b")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "empty"),
        ({"documentId": "other"}, "cannot be changed"),
        ({"revisions": []}, "through add_revision"),
        ({"content.markdown": "x"}, "invalid field name"),
        ({"$set": {}}, "invalid field name"),
    ],
)
async def test_update_refuses_what_the_port_owns(
    store: ContentStore, fields: dict[str, Any], message: str
) -> None:
    await store.insert(DOCS, business_doc("d1"))
    with pytest.raises(ValueError, match=message):
        await store.update(DOCS, "d1", fields)


async def test_optimistic_concurrency_on_version(store: ContentStore) -> None:
    await store.insert(DOCS, business_doc("d1", version=3))
    first = await store.update(DOCS, "d1", {"title": "A"}, expected_version=3)
    assert first["version"] == 4
    with pytest.raises(StorageConflict):
        await store.update(DOCS, "d1", {"title": "B"}, expected_version=3)
    current = await store.get(DOCS, "d1")
    assert current is not None
    assert (current["title"], current["version"]) == ("A", 4)
    with pytest.raises(ValueError, match="bumped by the store"):
        await store.update(DOCS, "d1", {"version": 9}, expected_version=4)
    # Without expected_version, version is an ordinary field: last writer wins.
    assert (await store.update(DOCS, "d1", {"version": 10}))["version"] == 10


async def test_concurrent_writers_of_one_version_one_wins(store: ContentStore) -> None:
    await store.insert(DOCS, business_doc("d1", version=1))
    results = await asyncio.gather(
        *(store.update(DOCS, "d1", {"title": f"t{n}"}, expected_version=1) for n in range(5)),
        return_exceptions=True,
    )
    winners = [result for result in results if isinstance(result, dict)]
    assert len(winners) == 1
    assert all(isinstance(result, StorageConflict) for result in results if result not in winners)
    assert await store.get(DOCS, "d1") == winners[0]


async def test_delete(store: ContentStore) -> None:
    await store.insert(DOCS, business_doc("d1"))
    assert await store.delete(DOCS, "d1") is True
    assert await store.get(DOCS, "d1") is None
    assert await store.delete(DOCS, "d1") is False
    await store.insert(DOCS, business_doc("d1"))  # the id is free again


# -- find ------------------------------------------------------------------------------------


async def seed(store: ContentStore) -> None:
    hour = timedelta(hours=1)
    docs = [
        business_doc(
            "d1",
            title="Growth strategy 2026",
            type="strategy_plan",
            status="draft",
            category="Sales",
            owner="alice",
            permissions={"view": ["bob"], "edit": [], "comment": []},
            tags=["growth", "sales"],
            description="The plan",
            content={"markdown": "We grow by a.b* leverage"},
            version=3,
            updatedAt=T0 + hour,
        ),
        business_doc(
            "d2",
            title="Market analysis EU",
            type="market_analysis",
            status="review",
            category="Market Research",
            owner="bob",
            permissions={"view": [], "edit": ["alice"], "comment": ["carol"]},
            tags=["market"],
            description="ÜBER-analysis of the market",
            content={"markdown": "axbbb is not the literal"},
            version=1,
            updatedAt=T0 + 3 * hour,
        ),
        business_doc(
            "d3",
            title="Pitch deck",
            type="pitch_deck",
            status="published",
            category="Sales",
            owner="carol",
            permissions={"view": ["dave"]},
            tags=["sales", "pitch"],
            description="100% (draft) [v2] ^$|?+{} costs $5",
            content={"markdown": "Robert'); DROP TABLE students;--"},
            version=2,
            updatedAt=T0 + 2 * hour,
        ),
        business_doc(
            "d4",
            title="Case study",
            type="case_study",
            status="archived",
            category=None,
            owner="dave",
            tags=[],
            version=5,
            updatedAt=T0 + 4 * hour,
        ),
        business_doc(
            "d5",
            title="Operational guide",
            type="operational_guide",
            status="draft",
            category="Operations",
            owner="alice",
            tags=["growth"],
            content={"markdown": "Files live in C:\\data\\guide.md"},
            version=4,
            updatedAt=T0,
        ),
    ]
    for doc in docs:
        await store.insert(DOCS, doc)


async def found(store: ContentStore, query: Query, collection: str = DOCS) -> list[str]:
    page = await store.find(collection, query)
    return sorted(ids(page.items, COLLECTIONS[collection].id_field))


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"type": "pitch_deck"}, ["d3"]),
        ({"status": "draft"}, ["d1", "d5"]),
        ({"category": "Sales"}, ["d1", "d3"]),
        ({"owner": "alice"}, ["d1", "d5"]),
        ({"owner": "alice", "status": "draft", "category": "Operations"}, ["d5"]),
        ({"category": None}, ["d4"]),
        ({"status": "nonexistent"}, []),
        ({"status": "DRAFT"}, []),  # equality is exact
    ],
)
async def test_find_equality_filters(
    store: ContentStore, filters: dict[str, Any], expected: list[str]
) -> None:
    await seed(store)
    assert await found(store, Query(filters=filters)) == expected


async def test_find_filter_keeps_bools_and_numbers_apart(store: ContentStore) -> None:
    articles = "knowledge_articles"
    await store.insert(articles, {"articleId": "a1", "featured": True})
    await store.insert(articles, {"articleId": "a2", "featured": 1})
    await store.insert(articles, {"articleId": "a3", "featured": False})
    assert await found(store, Query(filters={"featured": True}), articles) == ["a1"]
    assert await found(store, Query(filters={"featured": 1}), articles) == ["a2"]
    assert await found(store, Query(filters={"featured": False}), articles) == ["a3"]


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("alice", ["d1", "d2", "d5"]),  # owner of d1, d5; editor of d2
        ("bob", ["d1", "d2"]),  # viewer of d1; owner of d2
        ("carol", ["d2", "d3"]),  # commenter on d2; owner of d3
        ("dave", ["d3", "d4"]),  # viewer of d3; owner of d4
        ("mallory", []),
    ],
)
async def test_find_accessible_to(store: ContentStore, user: str, expected: list[str]) -> None:
    await seed(store)
    assert await found(store, Query(accessible_to=user)) == expected


async def test_find_accessible_to_looks_in_contributors(store: ContentStore) -> None:
    await seed(store)
    await store.update(DOCS, "d4", {"contributors": ["erin", "mallory"]})
    assert await found(store, Query(accessible_to="mallory")) == ["d4"]
    assert await found(store, Query(accessible_to="erin", filters={"status": "draft"})) == []


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # accessible_ids widen accessible_to: documents opened to the user elsewhere.
        (Query(accessible_to="mallory", accessible_ids=("d2", "d4")), ["d2", "d4"]),
        (Query(accessible_to="bob", accessible_ids=("d4", "nope")), ["d1", "d2", "d4"]),
        (Query(accessible_to="bob", accessible_ids=("d4",), tags_any=("sales",)), ["d1"]),
        (Query(accessible_to="mallory", accessible_ids=("d5",), text="guide"), ["d5"]),
        (Query(accessible_to="mallory", accessible_ids=("d5",), text="pitch"), []),
        # ids narrow whatever else holds.
        (Query(ids=("d1", "d3", "nope")), ["d1", "d3"]),
        (Query(ids=()), []),
        (Query(ids=("d1", "d2", "d3"), filters={"category": "Sales"}), ["d1", "d3"]),
        (Query(ids=("d1", "d3"), accessible_to="dave"), ["d3"]),
        (Query(ids=("d3", "d4"), accessible_to="alice", accessible_ids=("d4",)), ["d4"]),
        (Query(ids=("' OR 1=1 --", '{"$ne": null}')), []),
    ],
)
async def test_find_by_business_ids(store: ContentStore, query: Query, expected: list[str]) -> None:
    await seed(store)
    assert await found(store, query) == expected
    page = await store.find(DOCS, query)
    assert page.total == len(expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"accessible_ids": ("d1",)}, "needs accessible_to"),
        ({"ids": ("",)}, "id must be"),
        ({"ids": tuple(f"d{n}" for n in range(1001))}, "at most 1000"),
        ({"accessible_to": "u", "accessible_ids": ("x\0",)}, "id must be"),
    ],
)
def test_query_ids_out_of_range_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Query(**kwargs)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (Query(tags_all=("sales",)), ["d1", "d3"]),
        (Query(tags_all=("sales", "pitch")), ["d3"]),
        (Query(tags_all=("sales", "market")), []),
        (Query(tags_any=("market", "pitch")), ["d2", "d3"]),
        (Query(tags_any=("growth",), tags_all=("sales",)), ["d1"]),
        (Query(tags_any=("nothing",)), []),
    ],
)
async def test_find_tags(store: ContentStore, query: Query, expected: list[str]) -> None:
    await seed(store)
    assert await found(store, query) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("growth STRATEGY", ["d1"]),  # title, case-insensitive
        ("the plan", ["d1"]),  # description
        ("leverage", ["d1"]),  # content.markdown
        ("über", ["d2"]),  # non-ASCII case folding
        ("a.b*", ["d1"]),  # metacharacters are literal: "axbbb" must not match
        ("(draft) [v2]", ["d3"]),
        ("^$|?+{}", ["d3"]),
        ("$5", ["d3"]),
        ("C:\\data\\", ["d5"]),
        (".*", []),
        ("'); DROP TABLE students;--", ["d3"]),
        ("' OR '1'='1", []),
        ('"; DELETE FROM business_documents; --', []),
    ],
)
async def test_find_text_is_a_literal_substring(
    store: ContentStore, text: str, expected: list[str]
) -> None:
    await seed(store)
    assert await found(store, Query(text=text)) == expected
    assert (await store.find(DOCS, Query())).total == 5  # nothing was dropped or deleted


async def test_find_combines_every_condition(store: ContentStore) -> None:
    await seed(store)
    query = Query(
        filters={"category": "Sales"}, accessible_to="bob", tags_any=("growth",), text="grow"
    )
    assert await found(store, query) == ["d1"]
    assert await found(store, Query(accessible_to="alice", text="guide")) == ["d5"]


@pytest.mark.parametrize(
    ("sort", "descending", "expected"),
    [
        ("updatedAt", False, ["d5", "d1", "d3", "d2", "d4"]),
        ("updatedAt", True, ["d4", "d2", "d3", "d1", "d5"]),
        ("version", False, ["d2", "d3", "d1", "d5", "d4"]),
        ("title", False, ["d4", "d1", "d2", "d5", "d3"]),
        ("documentId", True, ["d5", "d4", "d3", "d2", "d1"]),
        ("status", False, ["d4", "d1", "d5", "d3", "d2"]),  # ties broken by id
        (None, False, ["d1", "d2", "d3", "d4", "d5"]),  # default: the business id
    ],
)
async def test_find_sorts(
    store: ContentStore, sort: str | None, descending: bool, expected: list[str]
) -> None:
    await seed(store)
    page = await store.find(DOCS, Query(sort=sort, descending=descending))
    assert ids(page.items) == expected


async def test_find_pages_with_limit_offset_and_total(store: ContentStore) -> None:
    for n in range(23):
        await store.insert(DOCS, business_doc(f"p{n:02d}", status="draft" if n % 2 else "review"))
    collected: list[str] = []
    for offset in range(0, 30, 5):
        page = await store.find(DOCS, Query(sort="documentId", limit=5, offset=offset))
        assert page.total == 23
        collected += ids(page.items)
    assert collected == [f"p{n:02d}" for n in range(23)]
    drafts = await store.find(DOCS, Query(filters={"status": "draft"}, limit=3, offset=9))
    assert drafts.total == 11
    assert ids(drafts.items) == ["p19", "p21"]
    beyond = await store.find(DOCS, Query(offset=100))
    assert (beyond.items, beyond.total) == ([], 23)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"offset": -1}, "offset"),
        ({"text": ""}, "search text"),
        ({"text": "x" * 201}, "search text"),
        ({"filters": {"status": ["a"]}}, "scalars"),
        ({"accessible_to": ""}, "user id"),
    ],
)
def test_query_out_of_range_is_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Query(**kwargs)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (Query(sort="content.markdown"), "cannot be sorted"),
        (Query(sort="$natural"), "cannot be sorted"),
        (Query(sort="title; DROP TABLE business_documents"), "cannot be sorted"),
        (Query(filters={"description": "x"}), "cannot be filtered"),
        (Query(filters={"$where": "1"}), "cannot be filtered"),
    ],
)
async def test_find_refuses_fields_off_the_whitelist(
    store: ContentStore, query: Query, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        await store.find(DOCS, query)


async def test_find_refuses_conditions_a_collection_lacks(store: ContentStore) -> None:
    with pytest.raises(ValueError, match="has no tags"):
        await store.find("projects", Query(tags_all=("x",)))


@pytest.mark.parametrize(
    ("collection", "doc", "query"),
    [
        (
            "projects",
            {
                "projectId": "p1",
                "name": "Expansion",
                "status": "active",
                "owner": "erin",
                "stakeholders": [{"userId": "frank", "role": "Lead"}],
            },
            Query(accessible_to="frank", filters={"status": "active"}, text="expan"),
        ),
        (
            "market_research",
            {
                "researchId": "r1",
                "title": "EU trends",
                "type": "trend_research",
                "author": "erin",
                "status": "validated",
            },
            Query(accessible_to="erin", filters={"type": "trend_research"}),
        ),
        (
            "strategic_plans",
            {
                "planId": "s1",
                "title": "2026 plan",
                "planType": "annual",
                "fiscalYear": 2026,
                "owner": "erin",
                "approvers": ["frank", "gina"],
                "status": "draft",
            },
            Query(accessible_to="gina", filters={"fiscalYear": 2026}, sort="fiscalYear"),
        ),
        (
            "sales_opportunities",
            {
                "opportunityId": "o1",
                "account": "Uni of X",
                "title": "Campus deal",
                "stage": "proposal",
                "owner": "erin",
                "accountManager": "frank",
                "value": 5e4,
            },
            Query(
                accessible_to="frank",
                filters={"stage": "proposal"},
                text="uni of",
                sort="value",
                descending=True,
            ),
        ),
        (
            "knowledge_articles",
            {
                "articleId": "k1",
                "title": "How to pitch",
                "slug": "how-to-pitch",
                "content": "Pitch *well*.",
                "author": "erin",
                "status": "published",
                "tags": ["sales"],
                "featured": True,
            },
            Query(accessible_to="erin", tags_all=("sales",), text="*WELL*"),
        ),
    ],
)
async def test_every_collection_goes_through_the_same_port(
    store: ContentStore, collection: str, doc: dict[str, Any], query: Query
) -> None:
    id_field = COLLECTIONS[collection].id_field
    stored = await store.insert(collection, doc)
    await store.insert(collection, {id_field: "other", "owner": "zed", "author": "zed"})
    assert await store.get(collection, doc[id_field]) == stored
    page = await store.find(collection, query)
    assert (ids(page.items, id_field), page.total) == ([doc[id_field]], 1)
    assert page.items[0] == stored
    updated = await store.update(collection, doc[id_field], {"status": "archived"})
    assert updated["status"] == "archived"
    assert await store.delete(collection, doc[id_field]) is True


# -- revisions -------------------------------------------------------------------------------


def revision(version: int, content: str = "", **extra: Any) -> dict[str, Any]:
    return {
        "revisionId": f"rev-{version}",
        "version": version,
        "timestamp": T0 + timedelta(minutes=version),
        "author": "alice",
        "changes": f"change {version}",
        "content": content,
        **extra,
    }


async def test_revision_round_trip_keeps_extra_fields(store: ContentStore) -> None:
    await store.insert(DOCS, business_doc("d1"))
    sections = [{"id": "s1", "content": "# One"}, {"id": "s2", "content": "# Two"}]
    full = revision(1, "# One\n# Two", sections=sections, restoredFrom=None)
    await store.add_revision("d1", full, keep_inline=5)
    assert await store.get_revision("d1", "rev-1") == full
    listed = await store.list_revisions("d1", limit=10)
    assert listed == [{k: v for k, v in full.items() if k not in ("content", "sections")}]
    assert await store.get_revision("d1", "rev-404") is None


async def test_revision_versions_must_increase(store: ContentStore) -> None:
    await store.insert(DOCS, business_doc("d1"))
    await store.add_revision("d1", revision(2), keep_inline=1)
    await store.add_revision("d1", revision(3), keep_inline=1)  # moves 2 to the archive
    for stale in (3, 2, 1):
        with pytest.raises(StorageConflict):
            await store.add_revision("d1", revision(stale) | {"revisionId": "x"}, keep_inline=1)
    assert [item["version"] for item in await store.list_revisions("d1", limit=10)] == [3, 2]


async def test_revisions_of_an_unknown_document(store: ContentStore) -> None:
    with pytest.raises(DocumentNotFound):
        await store.add_revision("ghost", revision(1), keep_inline=5)
    with pytest.raises(DocumentNotFound):
        await store.list_revisions("ghost", limit=5)
    with pytest.raises(DocumentNotFound):
        await store.get_revision("ghost", "rev-1")


@pytest.mark.parametrize(
    ("rev", "keep_inline", "message"),
    [
        ({"version": 1}, 5, "revisionId"),
        ({"revisionId": "r", "version": "1"}, 5, "revision version"),
        ({"revisionId": "r", "version": True}, 5, "revision version"),
        ({"revisionId": "r", "version": 1, "documentId": "d1"}, 5, "documentId"),
        ({"revisionId": "r", "version": 1}, 0, "keep_inline"),
    ],
)
async def test_malformed_revisions_are_refused(
    store: ContentStore, rev: dict[str, Any], keep_inline: int, message: str
) -> None:
    await store.insert(DOCS, business_doc("d1"))
    with pytest.raises(ValueError, match=message):
        await store.add_revision("d1", rev, keep_inline=keep_inline)


async def test_1200_revisions_keep_the_document_small_and_lose_none(store: ContentStore) -> None:
    await store.insert(DOCS, business_doc("d1", content={"markdown": "m" * 10_000}))
    count, keep = 1200, 20
    for version in range(1, count + 1):
        body = f"{version:05d}" + "x" * 10_000
        await store.add_revision("d1", revision(version, body), keep_inline=keep)

    doc = await store.get(DOCS, "d1")
    assert doc is not None
    assert [item["version"] for item in doc["revisions"]] == list(
        range(count - keep + 1, count + 1)
    )
    if isinstance(store, MongoContentStore):
        size = len(bson.encode(doc))
    else:
        size = len(json.dumps(doc, default=str).encode())
    assert size < 1_000_000  # 20 inline revisions of 10 KB: far from MongoDB's 16 MB

    listed: list[dict[str, Any]] = []
    before: int | None = None
    while page := await store.list_revisions("d1", limit=500, before_version=before):
        listed += page
        before = page[-1]["version"]
    assert [item["version"] for item in listed] == list(range(count, 0, -1))
    assert all("content" not in item and item["changes"] for item in listed)

    # Every 7th, and each one around the inline/archive boundary (mongomock scans the whole
    # archive per lookup, so all 1,200 would cost seconds there).
    boundary = range(count - keep - 3, count - keep + 4)
    for version in sorted({*range(1, count + 1, 7), *boundary, count}):
        full = await store.get_revision("d1", f"rev-{version}")
        assert full is not None
        assert full["content"].startswith(f"{version:05d}")
        assert full["timestamp"] == T0 + timedelta(minutes=version)


async def test_list_revisions_limit_and_before_version(store: ContentStore) -> None:
    await store.insert(DOCS, business_doc("d1"))
    for version in range(1, 11):
        await store.add_revision("d1", revision(version), keep_inline=3)
    versions = [item["version"] for item in await store.list_revisions("d1", limit=4)]
    assert versions == [10, 9, 8, 7]
    older = await store.list_revisions("d1", limit=4, before_version=9)
    assert [item["version"] for item in older] == [8, 7, 6, 5]
    assert await store.list_revisions("d1", limit=4, before_version=1) == []
    with pytest.raises(ValueError, match="limit"):
        await store.list_revisions("d1", limit=0)


async def test_find_leaves_heavy_revision_fields_out(store: ContentStore) -> None:
    await store.insert(DOCS, business_doc("d1"))
    await store.add_revision("d1", revision(1, "big", sections=[{"id": "s"}]), keep_inline=5)
    (item,) = (await store.find(DOCS, Query())).items
    assert item["revisions"] == [{k: v for k, v in revision(1).items() if k != "content"}]


async def test_deleting_a_document_deletes_its_revisions(store: ContentStore) -> None:
    await store.insert(DOCS, business_doc("d1"))
    for version in range(1, 6):
        await store.add_revision("d1", revision(version), keep_inline=2)
    assert await store.delete(DOCS, "d1") is True
    await store.insert(DOCS, business_doc("d1"))
    assert await store.list_revisions("d1", limit=10) == []
    assert await store.get_revision("d1", "rev-1") is None
    await store.add_revision("d1", revision(1), keep_inline=2)  # versions start afresh


# -- CRDT state ------------------------------------------------------------------------------


async def test_crdt_state_round_trip(store: ContentStore) -> None:
    assert await store.load_crdt_state("d1") is None
    state = bytes(range(256)) * 4096  # 1 MiB with every byte value, NULs included
    await store.save_crdt_state("d1", state, 7)
    await store.save_crdt_state("d1/s1", b"\x00", 0)
    assert await store.load_crdt_state("d1") == (state, 7)
    assert await store.load_crdt_state("d1/s1") == (b"\x00", 0)


async def test_crdt_state_never_goes_back_in_the_journal(store: ContentStore) -> None:
    await store.save_crdt_state("d1", b"v10", 10)
    await store.save_crdt_state("d1", b"v10-again", 10)  # same seq: idempotent re-save
    await store.save_crdt_state("d1", b"v12", 12)
    with pytest.raises(StorageConflict):
        await store.save_crdt_state("d1", b"v11", 11)
    assert await store.load_crdt_state("d1") == (b"v12", 12)


# -- indexes, names, lifecycle ---------------------------------------------------------------


async def test_ensure_indexes_is_idempotent(store: ContentStore) -> None:
    await store.ensure_indexes()
    await store.insert(DOCS, business_doc("d1", slug="s"))
    await store.ensure_indexes()
    with pytest.raises(StorageConflict):
        await store.insert(DOCS, business_doc("d2", slug="s"))
    assert await store.get(DOCS, "d1") is not None


async def test_unknown_collection_is_a_value_error(store: ContentStore) -> None:
    for name in ("users", "document_revisions", "crdt_states", "system.users", ""):
        with pytest.raises(ValueError, match="unknown collection"):
            await store.insert(name, {"id": "x"})
        with pytest.raises(ValueError, match="unknown collection"):
            await store.get(name, "x")
        with pytest.raises(ValueError, match="unknown collection"):
            await store.update(name, "x", {"a": 1})
        with pytest.raises(ValueError, match="unknown collection"):
            await store.delete(name, "x")
        with pytest.raises(ValueError, match="unknown collection"):
            await store.find(name, Query())


async def test_calls_after_close_raise(store: ContentStore) -> None:
    await store.aclose()
    await store.aclose()  # idempotent
    with pytest.raises(StorageClosed):
        await store.get(DOCS, "d1")
    with pytest.raises(StorageClosed):
        await store.save_crdt_state("d1", b"x", 1)


# -- one adapter's edges ---------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("mongo", marks=needs_mongo)])
async def size_checked_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[ContentStore]:
    """The adapters that enforce MongoDB's 16 MB limit (mongomock has no limit)."""
    async for opened in _open(request.param, tmp_path):
        yield opened


async def test_documents_over_16_mb_are_refused(size_checked_store: ContentStore) -> None:
    store = size_checked_store
    with pytest.raises(DocumentTooLarge):
        await store.insert(DOCS, business_doc("big", description="x" * 17_000_000))
    assert await store.get(DOCS, "big") is None
    await store.insert(DOCS, business_doc("d1"))
    with pytest.raises(DocumentTooLarge):
        await store.update(DOCS, "d1", {"description": "x" * 17_000_000})
    assert (await store.get(DOCS, "d1")) == business_doc("d1")


async def test_sqlite_content_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "content.sqlite3"
    async with await SqliteContentStore.open(path) as store:
        await store.insert(DOCS, business_doc("d1"))
        await store.add_revision("d1", revision(1, "body"), keep_inline=1)
        await store.add_revision("d1", revision(2, "body"), keep_inline=1)
        await store.save_crdt_state("d1", b"state", 3)
    async with await SqliteContentStore.open(path) as reopened:
        assert await reopened.get(DOCS, "d1") is not None
        assert (await reopened.get_revision("d1", "rev-1") or {}).get("content") == "body"
        assert await reopened.load_crdt_state("d1") == (b"state", 3)


async def test_sqlite_corrupted_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "content.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises((StorageCorrupted, StorageUnavailable)):
        await SqliteContentStore.open(path)


async def test_sqlite_unwritable_directory_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageUnavailable):
        await SqliteContentStore.open(blocker / "content.sqlite3")


async def test_mongo_unreachable_server_is_unavailable(tmp_path: Path) -> None:
    # A Unix socket nobody listens on: the driver's ServerSelectionTimeoutError must not
    # leak. (Not a refused TCP port: pymongo 4.20 leaks the socket of a TCP connect that
    # closing the client cancels, which filterwarnings=error turns into a failure.)
    socket_path = quote(str(tmp_path / "nobody.sock"), safe="")
    async with MongoContentStore.from_url(
        f"mongodb://{socket_path}/", "collab", server_selection_timeout=0.2
    ) as store:
        with pytest.raises(StorageUnavailable) as caught:
            await store.get(DOCS, "d1")
        assert caught.value.__cause__ is not None


def test_mongo_malformed_url_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="invalid MongoDB URL"):
        MongoContentStore.from_url("http://not-mongo")


async def test_mongo_move_interrupted_between_copy_and_pull_completes() -> None:
    # A crash after a revision was copied to the archive but before it left the document
    # leaves it in both places: it is listed once, and the next move completes.
    client = AsyncMockClient()
    database = client["collab_test"]
    async with MongoContentStore(database) as store:
        await store.ensure_indexes()
        await store.insert(DOCS, business_doc("d1"))
        for version in (1, 2, 3):
            await store.add_revision("d1", revision(version, "body"), keep_inline=3)
        await database["document_revisions"].insert_one({"documentId": "d1", **revision(1, "body")})
        listed = await store.list_revisions("d1", limit=10)
        assert [item["version"] for item in listed] == [3, 2, 1]
        await store.add_revision("d1", revision(4, "body"), keep_inline=3)
        doc = await store.get(DOCS, "d1")
        assert doc is not None
        assert [item["version"] for item in doc["revisions"]] == [2, 3, 4]
        listed = await store.list_revisions("d1", limit=10)
        assert [item["version"] for item in listed] == [4, 3, 2, 1]
        assert (await store.get_revision("d1", "rev-1") or {}).get("content") == "body"
    await client.close()


async def test_mongo_operations_are_timed_as_dependency_calls() -> None:
    from persistence.latency import DEPENDENCIES

    calls = DEPENDENCIES["mongo"]
    client = AsyncMockClient()
    async with MongoContentStore(client["collab_test"]) as store:
        before, errors = calls.latency.count, calls.errors
        assert await store.get("projects", "nowhere") is None
        assert calls.latency.count == before + 1
        assert calls.errors == errors
    await client.close()
