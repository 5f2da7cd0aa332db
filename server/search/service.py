"""Search across the business collections, for one caller (``docs/search.md``).

The service turns who is asking into the scopes of a
:class:`~persistence.content.search.SearchQuery`: every collection for the roles that see
everything (admin, manager), else the records the user holds through each collection's own
fields (owner, author, permission lists, stakeholders, approvers, account manager) or
through rows of the ``permissions`` table for the collection's resource type. The store
applies the scopes inside the query, so totals and pages count only what the caller may
see. A token scoped to some documents searches those documents only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Final

from persistence.content.search import (
    MAX_SCOPE_IDS,
    SEARCHABLE,
    SearchPage,
    SearchQuery,
    SearchScope,
    search_terms,
)
from server.cms.tables import KINDS
from server.errors import InvalidError
from server.identity.rights import DOCUMENTS, RESOURCE_TYPE

if TYPE_CHECKING:
    from persistence.content.ports import ContentStore
    from server.identity.authentication import Principal
    from server.identity.rights import AccessControl

# The resource type of each collection: its name in the API's answers, in ``type=`` and in
# the ``permissions`` table.
RESOURCE_TYPES: Final[Mapping[str, str]] = {
    DOCUMENTS: RESOURCE_TYPE,
    **{name: kind.resource_type for name, kind in KINDS.items()},
}
COLLECTION_OF: Final[Mapping[str, str]] = {kind: name for name, kind in RESOURCE_TYPES.items()}
assert set(RESOURCE_TYPES) == set(SEARCHABLE), "every searchable collection has a type"


@dataclass(frozen=True, slots=True)
class Search:
    """What a caller asks: the words, the resource types (all when empty) and filters."""

    text: str
    types: Sequence[str] = ()
    status: str | None = None
    tag: str | None = None
    owner: str | None = None
    updated_from: datetime | None = None
    updated_to: datetime | None = None
    limit: int = 20
    offset: int = 0
    # Business documents only (the documents list): equality filters and every tag.
    document_filters: Mapping[str, str] = field(default_factory=dict)
    document_tags: tuple[str, ...] = ()


class SearchService:
    """Searches on behalf of a principal. Raises :class:`InvalidError` (422) for a search
    that cannot run (no word, an unknown type, a value out of range), naming the field."""

    def __init__(self, content: ContentStore, access: AccessControl) -> None:
        self._content = content
        self._access = access

    async def search(self, actor: Principal, search: Search) -> SearchPage:
        """The records matching ``search`` that ``actor`` may view, best first."""
        try:
            search_terms(search.text)
        except ValueError as exc:
            raise InvalidError(str(exc), field="q") from exc
        unknown = [kind for kind in search.types if kind not in COLLECTION_OF]
        if unknown:
            raise InvalidError(
                f"unknown type {unknown[0]!r}; one of {sorted(COLLECTION_OF)}", field="type"
            )
        collections = [COLLECTION_OF[kind] for kind in dict.fromkeys(search.types)] or list(
            RESOURCE_TYPES
        )
        if actor.documents is not None:
            collections = [name for name in collections if name == DOCUMENTS]
        scopes = [await self._scope(actor, name, search) for name in collections]
        if not scopes:
            return SearchPage([], 0)
        try:
            query = SearchQuery(
                search.text,
                tuple(scopes),
                status=search.status,
                tag=search.tag,
                owner=search.owner,
                updated_from=search.updated_from,
                updated_to=search.updated_to,
                limit=search.limit,
                offset=search.offset,
            )
        except ValueError as exc:
            raise InvalidError(str(exc)) from exc
        return await self._content.search(query)

    async def _scope(self, actor: Principal, collection: str, search: Search) -> SearchScope:
        documents = collection == DOCUMENTS
        ids = None
        if documents and actor.documents is not None:
            ids = tuple(sorted(actor.documents))[:MAX_SCOPE_IDS]
        to: str | None = None
        granted: list[str] = []
        # Not a role that sees everything:
        if await self._access.visibility(actor.subject) is not None:
            granted = await self._access.granted_ids(actor.subject, RESOURCE_TYPES[collection])
            if "*" not in granted:
                to = actor.user_id
        try:
            return SearchScope(
                collection,
                accessible_to=to,
                accessible_ids=tuple(sorted(set(granted)))[:MAX_SCOPE_IDS] if to else (),
                ids=ids,
                filters=search.document_filters if documents else {},
                tags_all=search.document_tags if documents else (),
            )
        except ValueError as exc:
            raise InvalidError(str(exc)) from exc
