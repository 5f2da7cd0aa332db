"""Full-text search on the Mongo adapter: ``$text`` with ``textScore`` (``docs/search.md``).

Each searchable collection has one text index, ``search_text``, over the fields of
:data:`~persistence.content.search.SEARCH_FIELDS` (the title weighed
:data:`~persistence.content.search.TITLE_WEIGHT` times a body field), English stemming.
MongoDB's own semantics apply: a record matches when it holds any of the words (stemmed), and
ranks higher the more of them it holds, the more often and the more in its title; a run of
a spaceless script is searched as a phrase. MongoDB gives no snippet: ours is cut around the
first match (:func:`~persistence.content.search.snippet_around`).

One query per collection, each already restricted to what its scope may see and to the
filters, then merged by score (each asks for ``offset + limit`` hits: a page never misses a
better hit of another collection).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from persistence.content.search import (
    SEARCH_FIELDS,
    TITLE_WEIGHT,
    SearchHit,
    SearchQuery,
    body_of,
    snippet_around,
    title_of,
    updated_of,
)

INDEX_NAME: Final = "search_text"
# Our own field name for the score in the projection: no collection has a field of it.
SCORE: Final = "collabSearchScore"


def text_index(collection: str) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    """The keys and options of a collection's text index."""
    fields = SEARCH_FIELDS[collection]
    keys = [(fields.title, "text"), *((path, "text") for path in fields.body)]
    options: dict[str, Any] = {
        "name": INDEX_NAME,
        "weights": {fields.title: int(TITLE_WEIGHT), **dict.fromkeys(fields.body, 1)},
        "default_language": "english",
        # A field no collection has: a record's own "language" can never fail its insert.
        "language_override": "collabTextLanguage",
    }
    return keys, options


def text_condition(query: SearchQuery) -> dict[str, Any]:
    """The ``$text`` condition: plain words (stemmed, any of them), spaceless runs quoted.
    Terms hold only letters, digits and spaces: nothing in them is ``$text`` syntax."""
    words = [f'"{term}"' if " " in term else term for term in query.terms]
    return {"$text": {"$search": " ".join(words)}}


def filters(collection: str, query: SearchQuery) -> list[dict[str, Any]]:
    """The filter conditions of ``query`` on one collection (rights are the caller's)."""
    fields = SEARCH_FIELDS[collection]
    clauses: list[dict[str, Any]] = []
    if query.status is not None:
        clauses.append({fields.status: query.status})
    if query.owner is not None:
        clauses.append({fields.owner: query.owner})
    if query.tag is not None:
        clauses.append({"tags": query.tag})
    window: dict[str, datetime] = {}
    if query.updated_from is not None:
        window["$gte"] = query.updated_from
    if query.updated_to is not None:
        window["$lte"] = query.updated_to
    if window:
        clauses.append({fields.updated: window})
    return clauses


def hit(collection: str, doc: dict[str, Any], score: float, query: SearchQuery) -> SearchHit:
    """A found record (its ``textScore`` taken out) as a hit."""
    title = title_of(collection, doc)
    text = title + "\n" + body_of(collection, doc)
    return SearchHit(
        collection=collection,
        id=str(doc.get(SEARCH_FIELDS[collection].id_field, "")),
        title=title,
        score=round(score, 6),
        snippet=snippet_around(text, query.terms),
        updated_at=updated_of(collection, doc),
        record=doc,
    )
