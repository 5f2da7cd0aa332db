"""The content-store port: the business collections of the schema (``cms-schema.md`` section 1).

Adapters: :mod:`persistence.content.mongo` (MongoDB, pymongo's async API) and
:mod:`persistence.content.sqlite` (embedded, one SQLite file). Both pass the contract suite
``tests/contract/test_contract_content_store.py``. The value types and the validation every
adapter shares live here, so the adapters cannot drift apart on what they accept.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Protocol

from persistence.content.search import SearchPage, SearchQuery, SearchScope

Document = dict[str, Any]
Scalar = str | int | float | bool | None
Bound = datetime | int | float | None

MAX_PAGE_SIZE = 200
MAX_REVISION_PAGE = 1000
MAX_KEEP_INLINE = 1000
MAX_ID_LENGTH = 256
MAX_TEXT_LENGTH = 200
MAX_QUERY_IDS = 1000
_INT64 = 2**63

REVISIONS = "document_revisions"
CRDT_STATES = "crdt_states"
# Heavy revision fields: left out of list_revisions() and of find() results.
HEAVY_REVISION_FIELDS = ("content", "sections")


@dataclass(frozen=True, slots=True)
class CollectionSpec:
    """What the port knows about one collection: its business id and the queryable fields.

    ``access_fields`` are the fields ``Query.accessible_to`` looks a user id up in (a scalar
    equal to the user, or an array holding it); an empty tuple means the collection has no
    notion of access and ``accessible_to`` is refused.
    """

    name: str
    id_field: str
    filter_fields: frozenset[str]
    sort_fields: frozenset[str]
    text_fields: tuple[str, ...]
    access_fields: tuple[str, ...]
    indexed_fields: tuple[str, ...]
    slug_unique: bool = False
    has_tags: bool = False
    has_revisions: bool = False
    # Fields ``Query.ranges`` may bound (dates, numbers) and array fields ``Query.holds``
    # looks a value up in (``linkedDocuments``).
    range_fields: frozenset[str] = frozenset()
    array_fields: frozenset[str] = frozenset()
    # Access fields that hold one user id (never an array): ``accessible_to`` compares them
    # for equality, which an index serves.
    scalar_fields: frozenset[str] = frozenset()
    # Array fields an embedded multikey index serves (a side table of the SQLite adapter;
    # MongoDB indexes arrays by itself).
    multikey_fields: frozenset[str] = frozenset()


def _spec(
    name: str,
    id_field: str,
    filters: str,
    sorts: str,
    *,
    ranges: str = "",
    arrays: str = "",
    scalars: str = "",
    multikey: str = "",
    **kw: Any,
) -> CollectionSpec:
    return CollectionSpec(
        name,
        id_field,
        frozenset(filters.split()),
        frozenset((*sorts.split(), id_field)),
        range_fields=frozenset(ranges.split()),
        array_fields=frozenset(arrays.split()),
        scalar_fields=frozenset(scalars.split()),
        multikey_fields=frozenset(multikey.split()),
        **kw,
    )


COLLECTIONS: Mapping[str, CollectionSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            _spec(
                "business_documents",
                "documentId",
                "type status category owner createdBy updatedBy slug",
                "title createdAt updatedAt version status type",
                text_fields=("title", "description", "content.markdown"),
                access_fields=(
                    "owner",
                    "permissions.view",
                    "permissions.edit",
                    "permissions.comment",
                    "contributors",
                ),
                indexed_fields=(
                    "owner",
                    "permissions.view",
                    "permissions.edit",
                    "permissions.comment",
                    "contributors",
                    "tags",
                    "status",
                    "type",
                    "updatedAt",
                ),
                slug_unique=True,
                has_tags=True,
                has_revisions=True,
            ),
            _spec(
                "projects",
                "projectId",
                "status owner createdBy",
                "name createdAt updatedAt startDate targetCompletionDate budget",
                text_fields=("name", "description"),
                access_fields=("owner", "stakeholders.userId"),
                indexed_fields=("owner", "stakeholders.userId", "status", "updatedAt"),
                ranges="startDate targetCompletionDate budget createdAt updatedAt",
                arrays="linkedDocuments linkedStrategies relatedProjects",
                scalars="owner",
                multikey="stakeholders.userId linkedDocuments linkedStrategies relatedProjects",
            ),
            _spec(
                "market_research",
                "researchId",
                "type status author",
                "title createdAt updatedAt researchDate nextReviewDate",
                text_fields=("title",),
                access_fields=("author",),
                indexed_fields=("author", "status", "type", "updatedAt"),
                ranges="researchDate nextReviewDate createdAt updatedAt",
                scalars="author",
            ),
            _spec(
                "strategic_plans",
                "planId",
                "planType status owner fiscalYear quarter createdBy",
                "title createdAt updatedAt startDate endDate fiscalYear",
                text_fields=("title", "vision", "mission"),
                access_fields=("owner", "approvers", "createdBy"),
                indexed_fields=(
                    "owner",
                    "approvers",
                    "createdBy",
                    "status",
                    "fiscalYear",
                    "updatedAt",
                ),
                ranges="startDate endDate createdAt updatedAt",
                arrays="initiatives approvers",
                scalars="owner createdBy",
                multikey="approvers initiatives",
            ),
            _spec(
                "sales_opportunities",
                "opportunityId",
                "stage owner accountManager account source priority currency createdBy",
                "title createdAt updatedAt value probability expectedCloseDate nextActionDate",
                text_fields=("title", "description", "account"),
                access_fields=("owner", "accountManager", "createdBy"),
                indexed_fields=(
                    "owner",
                    "accountManager",
                    "createdBy",
                    "stage",
                    "expectedCloseDate",
                    "updatedAt",
                ),
                ranges="expectedCloseDate actualCloseDate value probability createdAt updatedAt",
                arrays="linkedDocuments",
                scalars="owner accountManager createdBy",
                multikey="linkedDocuments",
            ),
            _spec(
                "knowledge_articles",
                "articleId",
                "category status author featured createdBy slug",
                "title createdAt publishedDate updatedDate views likes shares",
                text_fields=("title", "summary", "content"),
                access_fields=("author", "createdBy"),
                indexed_fields=(
                    "author",
                    "createdBy",
                    "status",
                    "category",
                    "tags",
                    "publishedDate",
                    "createdAt",
                ),
                ranges="publishedDate createdAt",
                arrays="relatedArticles",
                scalars="author createdBy",
                multikey="tags relatedArticles",
                slug_unique=True,
                has_tags=True,
            ),
        )
    }
)
BUSINESS_DOCUMENTS = COLLECTIONS["business_documents"]


def collection_spec(name: str) -> CollectionSpec:
    """The spec of a collection; raises ValueError for a name the port does not know."""
    try:
        return COLLECTIONS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown collection {name!r}") from None


@dataclass(frozen=True, slots=True)
class Query:
    """One page of a collection. Every condition given must hold (they are ANDed).

    * ``filters``: equality on whitelisted scalar fields (``None`` matches a missing or null
      field; a bool matches only a bool, a number only a number);
    * ``tags_all`` / ``tags_any``: the document's ``tags`` holds every / at least one of them
      (an empty tuple means no condition);
    * ``accessible_to``: the user owns the document or is listed in one of its permission
      lists (the collection's ``access_fields``: equal to the user for its
      ``scalar_fields``, equal or an array holding it for the others), or its business id is one of
      ``accessible_ids`` (documents opened to the user elsewhere, e.g. by grants; only with
      ``accessible_to``);
    * ``ranges``: ``low <= field <= high`` on the collection's ``range_fields`` (either bound
      may be None; both bounds of one type: aware datetimes, or numbers); a document whose
      field is missing or of another type never matches;
    * ``holds``: the array field (one of the collection's ``array_fields``) holds the value;
    * ``ids``: the business id is one of these (None: no condition; an empty tuple matches
      nothing); at most 1000 ids in each of ``ids`` and ``accessible_ids``;
    * ``text``: case-insensitive literal substring of any of the collection's text fields
      (regex metacharacters are matched as themselves);
    * ``sort`` on one whitelisted field (the business id breaks ties, so paging is stable),
      ``limit`` in 1..200, ``offset`` >= 0.

    Raises ValueError at construction for values out of range; fields are checked against a
    collection by :func:`check_query` when the query is run.
    """

    filters: Mapping[str, Scalar] = field(default_factory=dict)
    tags_all: tuple[str, ...] = ()
    tags_any: tuple[str, ...] = ()
    accessible_to: str | None = None
    accessible_ids: tuple[str, ...] = ()
    ids: tuple[str, ...] | None = None
    ranges: Mapping[str, tuple[Bound, Bound]] = field(default_factory=dict)
    holds: Mapping[str, str] = field(default_factory=dict)
    text: str | None = None
    sort: str | None = None
    descending: bool = False
    limit: int = 50
    offset: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "filters", MappingProxyType(dict(self.filters)))
        object.__setattr__(self, "tags_all", tuple(self.tags_all))
        object.__setattr__(self, "tags_any", tuple(self.tags_any))
        object.__setattr__(self, "accessible_ids", tuple(self.accessible_ids))
        object.__setattr__(self, "ranges", MappingProxyType(_check_ranges(self.ranges)))
        object.__setattr__(self, "holds", MappingProxyType(dict(self.holds)))
        for held in self.holds.values():
            check_id(held, "held value")
        if self.ids is not None:
            object.__setattr__(self, "ids", tuple(self.ids))
        if not 1 <= self.limit <= MAX_PAGE_SIZE:
            raise ValueError(f"limit must be in 1..{MAX_PAGE_SIZE}, not {self.limit}")
        if self.offset < 0:
            raise ValueError(f"offset must be >= 0, not {self.offset}")
        for value in self.filters.values():
            if not isinstance(value, str | int | float | bool | type(None)):
                raise ValueError(f"filter values are scalars, not {type(value).__name__}")
            _check_value(value, "filter")
        for tag in (*self.tags_all, *self.tags_any):
            check_id(tag, "tag")
        if self.accessible_to is not None:
            check_id(self.accessible_to, "user id")
        if self.accessible_ids and self.accessible_to is None:
            raise ValueError("accessible_ids needs accessible_to")
        _check_query_ids(self.accessible_ids)
        _check_query_ids(self.ids or ())
        if self.text is not None and not 0 < len(self.text) <= MAX_TEXT_LENGTH:
            raise ValueError(f"search text must be 1..{MAX_TEXT_LENGTH} characters")
        if self.text is not None and "\0" in self.text:
            raise ValueError("search text must not contain NUL")


def _check_ranges(ranges: Mapping[str, tuple[Bound, Bound]]) -> dict[str, tuple[Bound, Bound]]:
    checked: dict[str, tuple[Bound, Bound]] = {}
    for name, pair in ranges.items():
        bounds: object = pair
        if not isinstance(bounds, tuple) or len(bounds) != 2:
            raise ValueError(f"range on {name}: a (low, high) pair")
        low, high = (_check_bound(bound, name) for bound in bounds)
        kinds = {type(b) is datetime for b in (low, high) if b is not None}
        if len(kinds) > 1:
            raise ValueError(f"range on {name}: both bounds datetimes, or both numbers")
        if low is not None and high is not None and low > high:  # type: ignore[operator]
            raise ValueError(f"range on {name}: low is above high")
        checked[name] = (low, high)
    return checked


def _check_bound(bound: object, name: str) -> Bound:
    if bound is None:
        return None
    if isinstance(bound, datetime):
        return utc_ms(bound)
    if isinstance(bound, int | float) and not isinstance(bound, bool):
        _check_value(bound, f"range on {name}")
        return bound
    raise ValueError(f"range on {name}: bounds are datetimes or numbers")


def _check_query_ids(ids: tuple[str, ...]) -> None:
    if len(ids) > MAX_QUERY_IDS:
        raise ValueError(f"at most {MAX_QUERY_IDS} ids in a query")
    for doc_id in ids:
        check_id(doc_id, "id")


@dataclass(frozen=True, slots=True)
class Page:
    """One page of results and how many documents match the query in all."""

    items: list[Document]
    total: int


def check_query(spec: CollectionSpec, query: Query) -> str:
    """Check ``query`` against the collection; returns the sort field. Raises ValueError."""
    unknown = set(query.filters) - spec.filter_fields
    if unknown:
        raise ValueError(f"{spec.name} cannot be filtered on {sorted(unknown)}")
    if (query.tags_all or query.tags_any) and not spec.has_tags:
        raise ValueError(f"{spec.name} has no tags")
    unknown = (set(query.ranges) - spec.range_fields) | (set(query.holds) - spec.array_fields)
    if unknown:
        raise ValueError(f"{spec.name} has no range or array field {sorted(unknown)}")
    if query.accessible_to is not None and not spec.access_fields:
        raise ValueError(f"{spec.name} has no access fields")
    sort = query.sort or spec.id_field
    if sort not in spec.sort_fields:
        raise ValueError(f"{spec.name} cannot be sorted on {sort!r}")
    return sort


def check_scope(scope: SearchScope) -> CollectionSpec:
    """The spec of a search scope's collection, its filters checked; raises ValueError."""
    spec = collection_spec(scope.collection)
    unknown = set(scope.filters) - spec.filter_fields
    if unknown:
        raise ValueError(f"{spec.name} cannot be filtered on {sorted(unknown)}")
    return spec


class ContentStore(Protocol):
    """The business content of the schema's MongoDB collections.

    Guarantees of every adapter:

    * Documents are plain dicts of JSON types plus datetimes, exactly as given (nested
      structure kept). They come back without Mongo's ``_id``; datetimes come back
      timezone-aware in UTC, truncated to milliseconds (BSON's precision). Input is checked
      before any I/O: a naive datetime, a non-finite float, an int outside int64, a key
      starting with ``$`` or holding ``.``, a top-level ``_id``, or a type outside that set
      raises ValueError.
    * A document is addressed by its collection's business id (``documentId``, ``projectId``,
      ...; a non-empty string). Unknown collection names, filter or sort fields raise
      ValueError.
    * ``insert`` raises StorageConflict for a business id already stored and, in
      ``business_documents`` and ``knowledge_articles``, for a string ``slug`` already used
      (documents without a slug never conflict). Uniqueness rests on the indexes that
      ``ensure_indexes`` creates (``collab migrate``); the embedded adapter creates them when
      it opens.
    * ``update`` is a top-level ``$set`` (keys without dots; the business id and
      ``revisions`` cannot be set). With ``expected_version`` it applies only if the stored
      ``version`` equals it, and sets ``version`` to ``expected_version + 1`` (then
      ``version`` must not be in ``set_fields``); otherwise StorageConflict. A missing
      document raises DocumentNotFound. Returns the document as stored after the update.
    * ``find`` returns a :class:`Page`; inline revisions in its items lack their heavy fields
      (:data:`HEAVY_REVISION_FIELDS`). ``total`` counts every match, ignoring limit/offset.
    * Revisions (``business_documents`` only): ``add_revision`` requires a ``revisionId``
      (string) and a ``version`` (int) greater than every stored revision's (else
      StorageConflict); it pushes onto ``revisions[]`` and moves the oldest beyond
      ``keep_inline`` into ``document_revisions``, so a document's size is bounded by
      ``keep_inline`` revisions whatever its history. A revision is never lost in the move:
      it is written to the archive before it leaves the document, and a revision seen in
      both places is returned once. ``list_revisions`` returns the newest first (versions
      below ``before_version`` if given) without the heavy fields; ``get_revision`` returns
      one in full, or None. Both raise DocumentNotFound for an unknown document.
      ``delete`` of a business document deletes its archived revisions too.
    * CRDT states (collection ``crdt_states``, one per room): ``save_crdt_state`` replaces
      the stored state only with one at the same or a later ``journal_seq`` (else
      StorageConflict, so a slow snapshotter never overwrites a newer snapshot);
      ``load_crdt_state`` returns ``(state, journal_seq)`` or None.
    * ``ensure_indexes`` is idempotent.
    * Every write is durable when the call returns (the embedded adapter commits with
      ``synchronous=FULL``; the Mongo adapter uses the client's write concern).
    * Failures raise :mod:`persistence.errors`: StorageUnavailable (transient; retry),
      StorageConflict, StorageCorrupted, DocumentTooLarge (over MongoDB's 16 MB), and
      StorageClosed after ``aclose``. Driver exceptions never cross the port.
    """

    async def insert(self, collection: str, doc: Mapping[str, Any]) -> Document: ...

    async def get(self, collection: str, doc_id: str) -> Document | None: ...

    async def update(
        self,
        collection: str,
        doc_id: str,
        set_fields: Mapping[str, Any],
        *,
        expected_version: int | None = None,
    ) -> Document: ...

    async def delete(self, collection: str, doc_id: str) -> bool: ...

    async def find(self, collection: str, query: Query) -> Page: ...

    async def search(self, query: SearchQuery) -> SearchPage:
        """Full-text search over the scopes' collections (:mod:`persistence.content.search`):
        records holding every word, those each scope lets its user see, after the filters,
        best first; ``total`` counts every match."""
        ...

    async def add_revision(
        self, document_id: str, revision: Mapping[str, Any], *, keep_inline: int
    ) -> None: ...

    async def list_revisions(
        self, document_id: str, *, limit: int, before_version: int | None = None
    ) -> list[Document]: ...

    async def get_revision(self, document_id: str, revision_id: str) -> Document | None: ...

    async def save_crdt_state(self, room: str, state: bytes, journal_seq: int) -> None: ...

    async def load_crdt_state(self, room: str) -> tuple[bytes, int] | None: ...

    async def ensure_indexes(self) -> None: ...

    async def aclose(self) -> None: ...


# -- validation and normalisation shared by the adapters -------------------------------------


def check_id(value: object, what: str = "id") -> str:
    """A business id, user id, tag or room name: a non-empty string without NUL."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_LENGTH or "\0" in value:
        raise ValueError(f"{what} must be a string of 1..{MAX_ID_LENGTH} characters")
    return value


def check_int(value: object, what: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{what} must be an int >= {low}")
    if high is not None and value > high:
        raise ValueError(f"{what} must be <= {high}")
    return value


def utc_ms(moment: datetime) -> datetime:
    """An aware datetime in UTC truncated to milliseconds; ValueError for a naive one."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("datetimes must be timezone-aware")
    moment = moment.astimezone(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _check_value(value: object, where: str) -> object:
    if isinstance(value, bool | str) or value is None:
        return value
    if isinstance(value, int):
        if not -_INT64 <= value < _INT64:
            raise ValueError(f"{where}: integer out of int64 range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: non-finite float")
        return value
    if isinstance(value, datetime):
        return utc_ms(value)
    if isinstance(value, Mapping):
        return {_check_key(key, where): _check_value(item, where) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_check_value(item, where) for item in value]
    raise ValueError(f"{where}: cannot store a {type(value).__name__}")


def _check_key(key: object, where: str) -> str:
    if not isinstance(key, str) or not key or key[0] == "$" or "." in key or "\0" in key:
        raise ValueError(f"{where}: invalid field name {key!r}")
    return key


def normalise(doc: Mapping[str, Any], where: str = "document") -> Document:
    """A checked deep copy of ``doc`` as the adapters store it; raises ValueError."""
    if not isinstance(doc, Mapping):
        raise ValueError(f"{where} must be a mapping")
    if "_id" in doc:
        raise ValueError(f"{where}: _id is the store's, not the caller's")
    checked = _check_value(doc, where)
    assert isinstance(checked, dict)
    return checked


def prepare_insert(spec: CollectionSpec, doc: Mapping[str, Any]) -> Document:
    stored = normalise(doc)
    check_id(stored.get(spec.id_field), spec.id_field)
    if spec.has_revisions:
        revisions = stored.get("revisions", [])
        if not isinstance(revisions, list):
            raise ValueError("revisions must be a list")
        versions = [_check_revision(revision)["version"] for revision in revisions]
        if versions != sorted(set(versions)):
            raise ValueError("inline revisions must have strictly increasing versions")
    return stored


def prepare_update(
    spec: CollectionSpec, set_fields: Mapping[str, Any], expected_version: int | None
) -> Document:
    """The ``$set`` document of an update, ``version`` bump included; raises ValueError."""
    fields = normalise(set_fields, "set_fields")
    if not fields:
        raise ValueError("set_fields is empty")
    if spec.id_field in fields:
        raise ValueError(f"{spec.id_field} cannot be changed")
    if spec.has_revisions and "revisions" in fields:
        raise ValueError("revisions change through add_revision only")
    if expected_version is not None:
        check_int(expected_version, "expected_version", 0, _INT64 - 2)
        if "version" in fields:
            raise ValueError("version is bumped by the store when expected_version is given")
        fields["version"] = expected_version + 1
    return fields


def _check_revision(revision: object) -> Document:
    if not isinstance(revision, dict):
        raise ValueError("a revision is a mapping")
    check_id(revision.get("revisionId"), "revisionId")
    check_int(revision.get("version"), "revision version", 0)
    if "documentId" in revision:
        raise ValueError("a revision must not carry documentId")
    return revision


def prepare_revision(revision: Mapping[str, Any], keep_inline: int) -> Document:
    check_int(keep_inline, "keep_inline", 1, MAX_KEEP_INLINE)
    return _check_revision(normalise(revision, "revision"))


def summary(revision: Mapping[str, Any]) -> Document:
    """A revision without its heavy fields."""
    return {key: value for key, value in revision.items() if key not in HEAVY_REVISION_FIELDS}


def merge_revisions(
    inline: list[Document], archived: list[Document], limit: int, before_version: int | None
) -> list[Document]:
    """Newest first, each version once (inline wins: it is the copy that was just written)."""
    seen: dict[int, Document] = {}
    for revision in (*inline, *archived):
        version = revision["version"]
        if (before_version is None or version < before_version) and version not in seen:
            seen[version] = revision
    return [seen[version] for version in sorted(seen, reverse=True)[:limit]]


def check_list_args(document_id: str, limit: int, before_version: int | None) -> None:
    check_id(document_id, "documentId")
    check_int(limit, "limit", 1, MAX_REVISION_PAGE)
    if before_version is not None:
        check_int(before_version, "before_version", 0)


def check_crdt_args(room: str, state: bytes, journal_seq: int) -> None:
    check_id(room, "room")
    if not isinstance(state, bytes):
        raise ValueError("a CRDT state is bytes")
    check_int(journal_seq, "journal_seq", 0, _INT64 - 1)
