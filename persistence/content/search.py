"""Full-text search over the business collections: the values of
:meth:`persistence.content.ports.ContentStore.search` and the text rules both engines share.

What is searchable, per collection (:data:`SEARCH_FIELDS`): a title (weighed ten times a
body word) and a body made of every string under the listed paths (arrays of strings and of
objects included: a plan's key objectives, a research's findings). The engines: SQLite FTS5
with the Porter stemmer and bm25 on the embedded adapter, MongoDB ``$text`` with
``textScore`` on the Mongo adapter (both stem English).

Words are matched literally: :func:`search_terms` takes the words out of whatever the user
typed (letters and digits of any script; quotes, ``*``, ``-``, ``:``, ``$``, SQL or Mongo
syntax are separators, never operators), and every word must occur (AND). Scripts written
without spaces (Chinese, Japanese, Korean) are indexed and searched one character at a time,
a run of them searched as a phrase, so any word of them is found inside a longer run.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final

MAX_PAGE_SIZE: Final = 200
MAX_SCOPE_IDS: Final = 1000
MAX_VALUE_CHARS: Final = 256
MAX_QUERY_CHARS: Final = 200
MAX_TERMS: Final = 16
MAX_SNIPPET_CHARS: Final = 240
TITLE_WEIGHT: Final = 10.0
MARK_OPEN: Final = "<mark>"
MARK_CLOSE: Final = "</mark>"
# What the engines mark matches with before a snippet is escaped (private-use characters).
RAW_OPEN: Final = "\ue000"
RAW_CLOSE: Final = "\ue001"


@dataclass(frozen=True, slots=True)
class SearchFields:
    """Where a collection keeps what search reads: its business id, ``title`` and ``body``
    paths (dotted, through arrays), the fields the ``owner``, ``status`` and date filters
    look at, and whether it has ``tags``."""

    id_field: str
    title: str
    body: tuple[str, ...]
    owner: str
    status: str
    updated: str
    tags: bool = False


SEARCH_FIELDS: Final[Mapping[str, SearchFields]] = MappingProxyType(
    {
        "business_documents": SearchFields(
            "documentId",
            "title",
            ("description", "category", "tags", "content.markdown"),
            "owner",
            "status",
            "updatedAt",
            tags=True,
        ),
        "projects": SearchFields(
            "projectId",
            "name",
            (
                "description",
                "objectives.description",
                "objectives.successCriteria",
                "riskAssessment",
            ),
            "owner",
            "status",
            "updatedAt",
        ),
        "market_research": SearchFields(
            "researchId",
            "title",
            (
                "findings.title",
                "findings.description",
                "findings.implications",
                "targetMarkets.segment",
                "competitors.name",
            ),
            "author",
            "status",
            "updatedAt",
        ),
        "strategic_plans": SearchFields(
            "planId",
            "title",
            (
                "vision",
                "mission",
                "keyObjectives.title",
                "keyObjectives.description",
                "risks.description",
            ),
            "owner",
            "status",
            "updatedAt",
        ),
        "sales_opportunities": SearchFields(
            "opportunityId",
            "title",
            ("account", "description", "nextAction", "activities.notes"),
            "owner",
            "stage",
            "updatedAt",
        ),
        "knowledge_articles": SearchFields(
            "articleId",
            "title",
            ("summary", "category", "tags", "content"),
            "author",
            "status",
            "updatedDate",
            tags=True,
        ),
    }
)
SEARCHABLE: Final = tuple(SEARCH_FIELDS)


@dataclass(frozen=True, slots=True)
class SearchScope:
    """One collection to search and who may see what in it: ``accessible_to`` None means
    every record; otherwise the records the user holds through the collection's access
    fields (owner, lists), or whose id is in ``accessible_ids`` (grants). ``ids`` keeps to
    those records (None: no condition); ``filters`` (equality on the collection's filter
    fields, checked by the adapter) and ``tags_all`` apply to this collection only."""

    collection: str
    accessible_to: str | None = None
    accessible_ids: tuple[str, ...] = ()
    ids: tuple[str, ...] | None = None
    filters: Mapping[str, str] = field(default_factory=dict)
    tags_all: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.collection not in SEARCH_FIELDS:
            raise ValueError(f"{self.collection!r} is not searchable")
        object.__setattr__(self, "accessible_ids", tuple(self.accessible_ids))
        object.__setattr__(self, "filters", MappingProxyType(dict(self.filters)))
        object.__setattr__(self, "tags_all", tuple(self.tags_all))
        if self.ids is not None:
            object.__setattr__(self, "ids", tuple(self.ids))
            if len(self.ids) > MAX_SCOPE_IDS:
                raise ValueError(f"at most {MAX_SCOPE_IDS} ids in a scope")
            for doc_id in self.ids:
                _check_value(doc_id, "id")
        for value in (*self.filters.values(), *self.tags_all):
            _check_value(value, "filter value")
        if self.tags_all and not SEARCH_FIELDS[self.collection].tags:
            raise ValueError(f"{self.collection} has no tags")
        if self.accessible_to is not None:
            _check_value(self.accessible_to, "user id")
        elif self.accessible_ids:
            raise ValueError("accessible_ids needs accessible_to")
        if len(self.accessible_ids) > MAX_SCOPE_IDS:
            raise ValueError(f"at most {MAX_SCOPE_IDS} ids in a scope")
        for doc_id in self.accessible_ids:
            _check_value(doc_id, "id")


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A search: the words of ``text`` (:func:`search_terms`) in every scope, with optional
    filters (each applies where the collection has the field: ``tag`` only to collections
    with tags), ranked best first, ``limit`` in 1..200 from ``offset``.

    Raises ValueError at construction: no scope, a scope twice, no word in ``text``, a
    naive datetime, a limit or offset out of range.
    """

    text: str
    scopes: tuple[SearchScope, ...]
    status: str | None = None
    tag: str | None = None
    owner: str | None = None
    updated_from: datetime | None = None
    updated_to: datetime | None = None
    limit: int = 20
    offset: int = 0
    terms: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "scopes", tuple(self.scopes))
        object.__setattr__(self, "terms", tuple(search_terms(self.text)))
        if not self.scopes:
            raise ValueError("nothing to search: no collection")
        names = [scope.collection for scope in self.scopes]
        if len(set(names)) != len(names):
            raise ValueError("a collection is named twice")
        if not 1 <= self.limit <= MAX_PAGE_SIZE:
            raise ValueError(f"limit must be in 1..{MAX_PAGE_SIZE}, not {self.limit}")
        if self.offset < 0:
            raise ValueError(f"offset must be >= 0, not {self.offset}")
        for value, what in ((self.status, "status"), (self.tag, "tag"), (self.owner, "owner")):
            if value is not None:
                _check_value(value, what)
        for moment in (self.updated_from, self.updated_to):
            if moment is not None and moment.tzinfo is None:
                raise ValueError("dates must be timezone-aware")

    def applies(self, collection: str) -> bool:
        """Whether the filters can match anything in ``collection`` (a tag filter on a
        collection without tags cannot)."""
        return self.tag is None or SEARCH_FIELDS[collection].tags


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One result: the collection, the record's id and title, its relevance (higher is
    better; comparable within one answer), a snippet of the text around the match with the
    words between :data:`MARK_OPEN` and :data:`MARK_CLOSE`, when it last changed, and the
    record itself (its inline revisions without their heavy fields)."""

    collection: str
    id: str
    title: str
    score: float
    snippet: str
    updated_at: datetime | None
    record: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class SearchPage:
    """One page of hits, best first, and how many records match in all."""

    items: list[SearchHit]
    total: int


def _check_value(value: object, what: str) -> None:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_VALUE_CHARS or "\0" in value:
        raise ValueError(f"{what} must be 1..{MAX_VALUE_CHARS} characters of text")


# -- words -------------------------------------------------------------------------------------

# Scripts written without spaces between words: each character is a token of its own.
_SPACELESS = (
    "\u2e80-\u2fdf\u3040-\u30ff\u3100-\u312f\u3190-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    "\ua960-\ua97f\uac00-\ud7af\uf900-\ufaff"
)
_SPACELESS_CHAR = re.compile(f"([{_SPACELESS}])")
_WORD = re.compile(r"[^\W_]+")
_GAP = re.compile(f"(?<=[{_SPACELESS}])(?=\\S)|(?<=\\S)(?=[{_SPACELESS}])")
_SPACED_RUN = re.compile(f"(?<=[{_SPACELESS}]) (?=[{_SPACELESS}])")
_SPACED_MARK = re.compile(
    f"(?<=[{_SPACELESS}]) (?={re.escape(MARK_OPEN)}[{_SPACELESS}])"
    f"|(?<=[{_SPACELESS}]{re.escape(MARK_CLOSE)}) (?=[{_SPACELESS}])"
    f"|(?<=[{_SPACELESS}]{re.escape(MARK_CLOSE)}) (?={re.escape(MARK_OPEN)}[{_SPACELESS}])"
)


def search_terms(text: object) -> list[str]:
    """The words of a search, lowercased, in order, without repeats; a run of characters of
    a spaceless script is one term (its characters separated by spaces: a phrase).

    Raises ValueError when ``text`` is empty, too long, holds NUL, or has no word.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("the search text is empty")
    if len(text) > MAX_QUERY_CHARS:
        raise ValueError(f"the search text is longer than {MAX_QUERY_CHARS} characters")
    if "\0" in text:
        raise ValueError("the search text must not contain NUL")
    terms: dict[str, None] = {}
    for word in _WORD.findall(text.lower()):
        for part in _split_spaceless(word):
            terms.setdefault(part)
    if not terms:
        raise ValueError("the search text has no word to look for (letters or digits)")
    if len(terms) > MAX_TERMS:
        raise ValueError(f"at most {MAX_TERMS} words in a search")
    return list(terms)


def _split_spaceless(word: str) -> Iterator[str]:
    """A word of mixed scripts as terms: spaceless runs become spaced phrases."""
    pieces = _SPACELESS_CHAR.split(word)
    run: list[str] = []
    for piece in pieces:
        if not piece:
            continue
        if _SPACELESS_CHAR.fullmatch(piece):
            run.append(piece)
            continue
        if run:
            yield " ".join(run)
            run = []
        yield piece
    if run:
        yield " ".join(run)


def spaced(text: str) -> str:
    """Text as the index holds it: spaceless-script characters set apart by spaces."""
    return _GAP.sub(" ", text) if _SPACELESS_CHAR.search(text) else text


def unspaced(text: str) -> str:
    """A snippet of :func:`spaced` text as people wrote it."""
    return _SPACED_RUN.sub("", _SPACED_MARK.sub("", text))


def finish_snippet(raw: str) -> str:
    """A snippet whose matches an engine marked with :data:`RAW_OPEN` / :data:`RAW_CLOSE`,
    as the API gives it: the text HTML-escaped (a record's ``<script>`` is shown, never
    run), the matches between :data:`MARK_OPEN` and :data:`MARK_CLOSE`, spaceless-script
    runs as written."""
    escaped = html.escape(raw.replace(MARK_OPEN, "").replace(MARK_CLOSE, ""), quote=False)
    return unspaced(escaped.replace(RAW_OPEN, MARK_OPEN).replace(RAW_CLOSE, MARK_CLOSE))


def strings_at(doc: Mapping[str, Any], path: str) -> Iterator[str]:
    """Every string at a dotted ``path`` of ``doc``, through arrays (of objects and of
    strings) at any level."""
    yield from _walk(doc, path.split("."))


def _walk(value: object, parts: list[str]) -> Iterator[str]:
    if isinstance(value, list):
        for item in value:
            yield from _walk(item, parts)
        return
    if not parts:
        if isinstance(value, str):
            yield value
        return
    if isinstance(value, Mapping):
        yield from _walk(value.get(parts[0]), parts[1:])


def title_of(collection: str, doc: Mapping[str, Any]) -> str:
    """The record's title as search shows it (its id when it has none)."""
    fields = SEARCH_FIELDS[collection]
    title = doc.get(fields.title)
    if isinstance(title, str) and title:
        return title
    return str(doc.get(fields.id_field, ""))


def body_of(collection: str, doc: Mapping[str, Any]) -> str:
    """The record's searchable body: every string under the collection's body paths."""
    parts = [text for path in SEARCH_FIELDS[collection].body for text in strings_at(doc, path)]
    return "\n".join(parts)


def updated_of(collection: str, doc: Mapping[str, Any]) -> datetime | None:
    """When the record last changed (its collection's date field), if it says."""
    value = doc.get(SEARCH_FIELDS[collection].updated) or doc.get("createdAt")
    return value if isinstance(value, datetime) else None


def snippet_around(text: str, terms: tuple[str, ...]) -> str:
    """A window of ``text`` around the first place any term starts a word, the terms
    marked and the rest escaped as :func:`finish_snippet` does (for engines that give no
    snippet of their own); the text's start when none is found. Case-insensitive; a
    spaceless-script term matches its characters in a row."""
    patterns = [
        re.escape(term.replace(" ", ""))
        if _SPACELESS_CHAR.match(term)
        else r"(?<![^\W_])" + re.escape(term)
        for term in terms
    ]
    found = re.compile("|".join(patterns), re.IGNORECASE)
    match = found.search(text)
    start = 0 if match is None else max(0, match.start() - MAX_SNIPPET_CHARS // 3)
    window = text[start : start + MAX_SNIPPET_CHARS]
    body = found.sub(lambda m: f"{RAW_OPEN}{m.group(0)}{RAW_CLOSE}", window)
    more = start + MAX_SNIPPET_CHARS < len(text)
    return finish_snippet(("…" if start > 0 else "") + body + ("…" if more else ""))
