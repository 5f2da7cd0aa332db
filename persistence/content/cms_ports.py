"""The CMS queries port: what the CMS resources need of the content store beyond ``find``.

The schema's "project with all linked documents" join (``cms-schema.md`` section 4.1, a
``$lookup``), the sales pipeline aggregation, counters and per-user member sets, and the
query plan of a listing. Adapters wrap a content store of the same technology:
:class:`persistence.content.mongo_cms.MongoCmsQueries` (an aggregation pipeline on
MongoDB) and :class:`persistence.content.sqlite_cms.SqliteCmsQueries` (the equivalent SQL
on the embedded file). Both pass ``tests/contract/test_contract_cms_queries.py``.

Guarantees of every adapter (besides those of :class:`ContentStore`: input checked before
any I/O, ValueError for unknown collections and fields, driver errors translated into
:mod:`persistence.errors`):

* ``lookup(collection, doc_id, field, target, exclude=...)`` returns the record and the
  records of ``target`` whose business id is listed in the record's array ``field``, in
  the order of the array, each once; ids with no record are left out (the caller compares
  to tell dangling links). ``exclude`` names top-level fields left out of the joined
  records (``content``, ``revisions``). None when the record does not exist.
* ``sales_pipeline(query)`` groups the ``sales_opportunities`` matching ``query`` (its
  filters, ranges and access conditions; sort and paging are ignored) by ``stage`` and
  ``currency``: per group the count, the sum of ``value`` and the sum of ``value *
  probability / 100`` (a missing value or probability counts as 0; a missing currency is
  None). Groups come sorted by stage, then currency (None first).
* ``increment(collection, doc_id, counters)`` adds each amount to its numeric top-level
  field (a missing field counts as 0) in one atomic write; False when the record does not
  exist.
* ``add_member`` / ``remove_member(collection, doc_id, field, member, counter)`` add the
  member to (remove it from) the array ``field`` and move the integer ``counter`` by one,
  atomically and only when the array changes: True if it changed, False if the member was
  already there (not there) or the record does not exist. So a user's like counts once.
* ``explain(collection, query)`` returns the query planner's description of the listing
  ``find`` runs for ``query`` (SQLite's ``EXPLAIN QUERY PLAN`` lines, MongoDB's winning
  plan), for checking that an index serves it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from persistence.content.ports import (
    Document,
    Query,
    check_id,
    check_int,
    collection_spec,
)

SALES = "sales_opportunities"
MAX_LOOKUP_IDS = 1000
MAX_EXCLUDED = 20


@dataclass(frozen=True, slots=True)
class PipelineGroup:
    """One stage and currency of the sales pipeline."""

    stage: str | None
    currency: str | None
    count: int
    total: float
    weighted: float


class CmsQueries(Protocol):
    """See the module docstring for what every adapter guarantees."""

    async def lookup(
        self,
        collection: str,
        doc_id: str,
        field: str,
        target: str,
        *,
        exclude: tuple[str, ...] = (),
    ) -> tuple[Document, list[Document]] | None: ...

    async def sales_pipeline(self, query: Query) -> list[PipelineGroup]: ...

    async def increment(
        self, collection: str, doc_id: str, counters: Mapping[str, int]
    ) -> bool: ...

    async def add_member(
        self, collection: str, doc_id: str, field: str, member: str, counter: str
    ) -> bool: ...

    async def remove_member(
        self, collection: str, doc_id: str, field: str, member: str, counter: str
    ) -> bool: ...

    async def explain(self, collection: str, query: Query) -> str: ...


# -- argument checks shared by the adapters ----------------------------------------------------


def check_field(name: object, what: str = "field") -> str:
    """A top-level field name: letters, digits and underscores."""
    if not isinstance(name, str) or not name.isidentifier() or len(name) > 64:
        raise ValueError(f"{what} must be a top-level field name, not {name!r}")
    return name


def check_lookup(
    collection: str, doc_id: str, field: str, target: str, exclude: tuple[str, ...]
) -> None:
    spec = collection_spec(collection)
    collection_spec(target)
    check_id(doc_id, spec.id_field)
    if field not in spec.array_fields:
        raise ValueError(f"{collection}.{field} is not an array of ids")
    if len(exclude) > MAX_EXCLUDED:
        raise ValueError(f"at most {MAX_EXCLUDED} excluded fields")
    for name in exclude:
        check_field(name, "excluded field")


def check_counters(collection: str, doc_id: str, counters: Mapping[str, int]) -> None:
    spec = collection_spec(collection)
    check_id(doc_id, spec.id_field)
    if not counters:
        raise ValueError("no counter to increment")
    for name, amount in counters.items():
        if check_field(name, "counter") == spec.id_field:
            raise ValueError("the business id is not a counter")
        check_int(amount, f"increment of {name}", -(2**31), 2**31)


def check_member(collection: str, doc_id: str, field: str, member: str, counter: str) -> None:
    spec = collection_spec(collection)
    check_id(doc_id, spec.id_field)
    check_field(field)
    check_field(counter, "counter")
    check_id(member, "member")
    if spec.id_field in (field, counter) or field == counter:
        raise ValueError("the member field and the counter are two other fields")


def linked_ids(record: Mapping[str, object], field: str) -> list[str]:
    """The distinct string ids of an array field, in order (at most MAX_LOOKUP_IDS)."""
    values = record.get(field)
    if not isinstance(values, list):
        return []
    return list(dict.fromkeys(v for v in values if isinstance(v, str)))[:MAX_LOOKUP_IDS]


def in_link_order(ids: list[str], found: list[Document], id_field: str) -> list[Document]:
    by_id = {doc.get(id_field): doc for doc in found}
    return [by_id[doc_id] for doc_id in ids if doc_id in by_id]
