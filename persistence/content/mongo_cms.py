"""MongoDB adapter of :class:`persistence.content.cms_ports.CmsQueries`: aggregation pipelines
(``$lookup``, ``$group``) and atomic updates (``$inc``, ``$addToSet``) on the collections of a
:class:`~persistence.content.mongo.MongoContentStore`, within what both a real MongoDB and
mongomock honour. Errors are translated by the content adapter's own edge.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from persistence.content.cms_ports import (
    SALES,
    PipelineGroup,
    check_counters,
    check_lookup,
    check_member,
    in_link_order,
    linked_ids,
)
from persistence.content.mongo import (
    MongoContentStore,
    _document,
    _mongo_filter,
    _translated,
)
from persistence.content.ports import Document, Query, check_query, collection_spec

JOINED = "collabJoined"


def _zero_if_null(name: str) -> Document:
    return {"$ifNull": [f"${name}", 0]}


class MongoCmsQueries:
    """The CMS queries on the database of ``store`` (which owns the client)."""

    def __init__(self, store: MongoContentStore) -> None:
        self._store = store

    async def lookup(
        self,
        collection: str,
        doc_id: str,
        field: str,
        target: str,
        *,
        exclude: tuple[str, ...] = (),
    ) -> tuple[Document, list[Document]] | None:
        check_lookup(collection, doc_id, field, target, exclude)
        spec, joined = collection_spec(collection), collection_spec(target)
        projection: Document = {"_id": 0, f"{JOINED}._id": 0}
        projection.update({f"{JOINED}.{name}": 0 for name in exclude})
        pipeline: list[Document] = [
            {"$match": {spec.id_field: doc_id}},
            {"$limit": 1},
            {
                "$lookup": {
                    "from": target,
                    "localField": field,
                    "foreignField": joined.id_field,
                    "as": JOINED,
                }
            },
            {"$project": projection},
        ]
        with _translated(f"lookup {collection} -> {target}"):
            cursor = await self._store._collection(collection).aggregate(pipeline)
            rows = await cursor.to_list(None)
        if not rows:
            return None
        record = _document(rows[0], collection)
        found = record.pop(JOINED, [])
        if not isinstance(found, list):
            found = []
        return record, in_link_order(linked_ids(record, field), found, joined.id_field)

    async def sales_pipeline(self, query: Query) -> list[PipelineGroup]:
        spec = collection_spec(SALES)
        check_query(spec, query)
        value = _zero_if_null("value")
        probability = _zero_if_null("probability")
        pipeline: list[Document] = [
            {"$match": _mongo_filter(spec, query)},
            {
                "$group": {
                    "_id": {"stage": "$stage", "currency": "$currency"},
                    "count": {"$sum": 1},
                    "total": {"$sum": value},
                    "weighted": {"$sum": {"$multiply": [value, {"$divide": [probability, 100]}]}},
                }
            },
        ]
        with _translated("the sales pipeline"):
            cursor = await self._store._collection(SALES).aggregate(pipeline)
            rows = await cursor.to_list(None)
        groups = [_group(row) for row in rows]
        return sorted(groups, key=lambda g: (g.stage or "", g.currency or ""))

    async def increment(self, collection: str, doc_id: str, counters: Mapping[str, int]) -> bool:
        check_counters(collection, doc_id, counters)
        spec = collection_spec(collection)
        with _translated(f"increment in {collection}"):
            result = await self._store._collection(collection).update_one(
                {spec.id_field: doc_id}, {"$inc": dict(counters)}
            )
        return result.matched_count == 1

    async def add_member(
        self, collection: str, doc_id: str, field: str, member: str, counter: str
    ) -> bool:
        return await self._move(collection, doc_id, field, member, counter, add=True)

    async def remove_member(
        self, collection: str, doc_id: str, field: str, member: str, counter: str
    ) -> bool:
        return await self._move(collection, doc_id, field, member, counter, add=False)

    async def _move(
        self, collection: str, doc_id: str, field: str, member: str, counter: str, *, add: bool
    ) -> bool:
        check_member(collection, doc_id, field, member, counter)
        spec = collection_spec(collection)
        selector: Document = {spec.id_field: doc_id, field: {"$ne": member} if add else member}
        change: Document = (
            {"$addToSet": {field: member}, "$inc": {counter: 1}}
            if add
            else {"$pull": {field: member}, "$inc": {counter: -1}}
        )
        with _translated(f"members of {collection}"):
            result = await self._store._collection(collection).update_one(selector, change)
        return result.matched_count == 1

    async def explain(self, collection: str, query: Query) -> str:
        spec = collection_spec(collection)
        sort = check_query(spec, query)
        order = [(sort, -1 if query.descending else 1)]
        with _translated(f"explain a find in {collection}"):
            cursor = (
                self._store._collection(collection)
                .find(_mongo_filter(spec, query), {"_id": 0})
                .sort(order)
                .limit(query.limit)
            )
            plan: Any = await cursor.explain()
        winning = plan.get("queryPlanner", {}).get("winningPlan", plan)
        return json.dumps(winning, default=str, sort_keys=True)


def _group(row: Mapping[str, Any]) -> PipelineGroup:
    key = row.get("_id") or {}
    stage, currency = key.get("stage"), key.get("currency")
    return PipelineGroup(
        stage=stage if isinstance(stage, str) else None,
        currency=currency if isinstance(currency, str) else None,
        count=int(row.get("count") or 0),
        total=float(row.get("total") or 0),
        weighted=float(row.get("weighted") or 0),
    )
