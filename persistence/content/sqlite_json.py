"""Documents as JSON in SQLite: the codec and the SQL of the content store's queries.

Used by :mod:`persistence.content.sqlite`. Pure: builds strings, does no I/O. Field and table
names in the SQL come from the static specs of :data:`persistence.content.ports.COLLECTIONS`, never
from callers; every caller value is a bound parameter.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from persistence.content.ports import (
    COLLECTIONS,
    HEAVY_REVISION_FIELDS,
    Bound,
    CollectionSpec,
    Document,
    Query,
    Scalar,
)
from persistence.content.sqlite_keys import keyed
from persistence.errors import DocumentTooLarge, StorageCorrupted

# MongoDB's limit, so that whatever the embedded mode stores can move to a real MongoDB.
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024

SCHEMA = """
CREATE TABLE IF NOT EXISTS document_revisions (
    document_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    revision_id TEXT NOT NULL,
    inline INTEGER NOT NULL,
    revision TEXT NOT NULL,
    PRIMARY KEY (document_id, version)
);
CREATE INDEX IF NOT EXISTS document_revisions_revision_id
    ON document_revisions (document_id, revision_id);
CREATE INDEX IF NOT EXISTS document_revisions_inline
    ON document_revisions (document_id, version) WHERE inline = 1;
CREATE TABLE IF NOT EXISTS crdt_states (
    room TEXT PRIMARY KEY,
    state BLOB NOT NULL,
    journal_seq INTEGER NOT NULL,
    updated_at TEXT NOT NULL
);
"""

# A revision without its heavy fields, computed by SQLite (no decoding of 10 KB contents).
REVISION_SUMMARY = "json_remove(revision, {})".format(
    ", ".join(f"'$.\"{name}\"'" for name in HEAVY_REVISION_FIELDS)
)


# -- the codec -------------------------------------------------------------------------------


def _encode_default(value: object) -> object:
    if isinstance(value, datetime):
        # Already UTC and truncated to milliseconds by content.normalise().
        return {"$date": value.isoformat(timespec="milliseconds").replace("+00:00", "Z")}
    raise TypeError(f"cannot encode {type(value).__name__}")


def _decode_hook(obj: dict[str, Any]) -> Any:
    # Caller keys never start with "$" (content.normalise refuses them): no ambiguity.
    if len(obj) == 1 and isinstance(obj.get("$date"), str):
        return datetime.fromisoformat(obj["$date"]).astimezone(UTC)
    return obj


def dumps(doc: Mapping[str, Any], what: str) -> str:
    """JSON text of a normalised document; raises DocumentTooLarge past 16 MiB."""
    text = json.dumps(
        doc, default=_encode_default, ensure_ascii=False, separators=(",", ":"), allow_nan=False
    )
    if len(text) > MAX_DOCUMENT_BYTES // 4 and len(text.encode()) > MAX_DOCUMENT_BYTES:
        raise DocumentTooLarge(f"{what} is over {MAX_DOCUMENT_BYTES} bytes")
    return text


def loads(text: object, what: str) -> Document:
    """The document a JSON text holds; raises StorageCorrupted for anything else."""
    try:
        value = json.loads(text, object_hook=_decode_hook) if isinstance(text, str) else None
    except ValueError as exc:
        raise StorageCorrupted(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise StorageCorrupted(f"{what} is not a JSON object")
    return value


def icontains(haystack: object, needle: object) -> bool:
    """SQL function ``collab_icontains``: SQLite's own lower() and LIKE fold ASCII only."""
    return (
        isinstance(haystack, str) and isinstance(needle, str) and needle.lower() in haystack.lower()
    )


# -- the SQL of queries ----------------------------------------------------------------------


def _path(field: str) -> str:
    return "$." + ".".join(f'"{part}"' for part in field.split("."))


def _extract(field: str) -> str:
    return f"json_extract(doc, '{_path(field)}')"


def sort_expression(field: str) -> str:
    # A datetime is stored as {"$date": iso}; fixed-width ISO strings sort chronologically.
    path = _path(field)
    return (
        f"CASE json_type(doc, '{path}') WHEN 'object' "
        f"THEN json_extract(doc, '{path}.\"$date\"') ELSE json_extract(doc, '{path}') END"
    )


def _equals(field: str, value: Scalar) -> tuple[str, list[object]]:
    """Mongo's scalar equality: a bool matches a bool only, a number a number, None a null."""
    kind = f"json_type(doc, '{_path(field)}')"
    if value is None:
        return f"({kind} IS NULL OR {kind} = 'null')", []
    if isinstance(value, bool):
        return f"{kind} = ?", ["true" if value else "false"]
    if isinstance(value, int | float):
        return f"({kind} IN ('integer', 'real') AND {_extract(field)} = ?)", [value]
    if not value.startswith(("[", "{")):
        # json_extract gives a JSON string as text, a number as a number (never equal to a
        # text parameter) and an array or object as its JSON text (which starts with [ or
        # {): the type test is implied, and the expression index alone serves the filter.
        return f"{_extract(field)} = ?", [value]
    return f"({kind} = 'text' AND {_extract(field)} = ?)", [value]


def _holds(field: str, values: tuple[str, ...]) -> tuple[str, list[object]]:
    """The field equals, or is an array holding, one of the values (Mongo's array equality).

    A two-part path also looks through an array of objects (``stakeholders.userId``).
    """
    marks = ", ".join("?" * len(values))
    parts = field.split(".")
    direct = f"EXISTS (SELECT 1 FROM json_each(doc, '{_path(field)}') WHERE value IN ({marks}))"
    if len(parts) != 2:
        return direct, list(values)
    outer, inner = _path(parts[0]), _path(parts[1])
    nested = (
        f"json_type(doc, '{outer}') = 'array' AND EXISTS (SELECT 1 FROM json_each(doc, "
        f"'{outer}') AS o WHERE o.type = 'object' AND EXISTS (SELECT 1 FROM "
        f"json_each(o.value, '{inner}') WHERE value IN ({marks})))"
    )
    return f"({direct} OR ({nested}))", [*values, *values]


def _date_text(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _in_range(field: str, low: Bound, high: Bound) -> tuple[str, list[object]]:
    """``low <= field <= high`` on the expression the sort index of the field is built on
    (so the index serves it); a datetime range matches only datetimes, a numeric one only
    numbers."""
    kind = f"json_type(doc, '{_path(field)}')"
    dated = isinstance(low, datetime) or isinstance(high, datetime)
    clauses = [f"{kind} = 'object'" if dated else f"{kind} IN ('integer', 'real')"]
    params: list[object] = []
    for bound, operator in ((low, ">="), (high, "<=")):
        if bound is not None:
            clauses.append(f"{sort_expression(field)} {operator} ?")
            params.append(_date_text(bound) if isinstance(bound, datetime) else bound)
    return "(" + " AND ".join(clauses) + ")", params


def _holding(spec: CollectionSpec, field: str, values: tuple[str, ...]) -> tuple[str, list[object]]:
    """``field`` holds one of ``values``: through the multikey side table when the
    collection has one for the field, else ``json_each``."""
    if field in spec.multikey_fields:
        return keyed(spec, field, values)
    return _holds(field, values)


def where_clause(spec: CollectionSpec, query: Query) -> tuple[str, list[object]]:
    """The WHERE condition of a checked query, and its parameters."""
    clauses: list[str] = []
    params: list[object] = []
    conditions = [_equals(name, value) for name, value in query.filters.items()]
    conditions += [_holding(spec, "tags", (tag,)) for tag in query.tags_all]
    if query.tags_any:
        conditions.append(_holding(spec, "tags", query.tags_any))
    conditions += [_holding(spec, name, (value,)) for name, value in query.holds.items()]
    conditions += [_in_range(name, *bounds) for name, bounds in query.ranges.items()]
    for clause, values in conditions:
        clauses.append(clause)
        params.extend(values)
    if query.accessible_to is not None:
        user = query.accessible_to
        access = [
            _equals(name, user) if name in spec.scalar_fields else _holding(spec, name, (user,))
            for name in spec.access_fields
        ]
        clauses.append("(" + " OR ".join(clause for clause, _ in access) + ")")
        params.extend(value for _, values in access for value in values)
    if query.text is not None:
        texts = [f"collab_icontains({_extract(name)}, ?)" for name in spec.text_fields]
        clauses.append("(" + " OR ".join(texts) + ")")
        params.extend([query.text] * len(texts))
    return (" AND ".join(clauses) or "1"), params


def _collection_ddl(spec: CollectionSpec) -> list[str]:
    table = spec.name
    ddl = [
        f'CREATE TABLE IF NOT EXISTS "{table}" (id TEXT PRIMARY KEY, slug TEXT, doc TEXT NOT NULL)',
        f'CREATE UNIQUE INDEX IF NOT EXISTS "{table}_slug" ON "{table}" (slug) '
        "WHERE slug IS NOT NULL",
    ]
    for name in spec.indexed_fields:
        # Array fields (tags, permissions.*) are matched with json_each, which no expression
        # index serves; at embedded scale the scan is cheap.
        if name in spec.filter_fields:
            ddl.append(
                f'CREATE INDEX IF NOT EXISTS "{table}_{name}" ON "{table}" ({_extract(name)})'
            )
        if name in spec.sort_fields:
            ddl.append(
                f'CREATE INDEX IF NOT EXISTS "{table}_{name}_sort" ON "{table}" '
                f"({sort_expression(name)}, id)"
            )
    return ddl


# Virtual generated columns of the sales pipeline, indexed together: the pipeline's GROUP BY
# reads that index instead of parsing every record's JSON (SQLite 3.40 does not use an index
# on expressions as a covering index; it does on generated columns).
PIPELINE_COLUMNS: Final = (
    ("pipeline_stage", "stage"),
    ("pipeline_currency", "currency"),
    ("pipeline_value", "value"),
    ("pipeline_probability", "probability"),
)
PIPELINE_TABLE: Final = "sales_opportunities"


def pipeline_ddl(existing: set[str]) -> list[str]:
    """Add the pipeline's generated columns the table lacks (``existing``: its columns),
    then its index; idempotent."""
    table = PIPELINE_TABLE
    ddl = [
        f'ALTER TABLE "{table}" ADD COLUMN {column} GENERATED ALWAYS AS ({_extract(name)}) VIRTUAL'
        for column, name in PIPELINE_COLUMNS
        if column not in existing
    ]
    columns = ", ".join(column for column, _ in PIPELINE_COLUMNS)
    ddl.append(f'CREATE INDEX IF NOT EXISTS "{table}_pipeline" ON "{table}" ({columns})')
    return ddl


def collections_ddl() -> list[str]:
    """Every table and index of the collections; each statement is idempotent."""
    return [statement for spec in COLLECTIONS.values() for statement in _collection_ddl(spec)]
