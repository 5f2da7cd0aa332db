"""Who a comment may mention: the active users who may view the document.

The editor's @mention autocomplete asks for them (``GET /api/documents/{id}/people``); the
comments feature refuses mentions of anyone else (:meth:`Comments._mentions`). Only ids and
display names are given out, never emails: a viewer of a document learns who else may read
it, as presence and comment authors already show, and nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from persistence.relational import User, UserQuery, UserStore
from server.identity.rights import AccessControl, Right, Subject

PAGE: Final = 200
# Users looked at per request at most: the list is for an autocomplete, not a directory.
MAX_SCANNED: Final = 5000


@dataclass(frozen=True, slots=True)
class Person:
    id: str
    name: str


async def mentionable(
    users: UserStore, access: AccessControl, document_id: str, query: str, limit: int
) -> list[Person]:
    """Up to ``limit`` active users whose name contains ``query`` (case-insensitive, empty:
    anyone) and who may view the document, by name."""
    needle = query.casefold()
    found: list[Person] = []
    offset = 0
    while offset < MAX_SCANNED and len(found) < limit:
        page = await users.find(UserQuery(status="active", sort="name", limit=PAGE, offset=offset))
        for user in page.items:
            if needle in user.name.casefold() and await _may_view(access, user, document_id):
                found.append(Person(str(user.id), user.name))
                if len(found) == limit:
                    break
        if len(page.items) < PAGE:
            break
        offset += PAGE
    return found


async def _may_view(access: AccessControl, user: User, document_id: str) -> bool:
    subject = Subject(str(user.id), user.role, True)
    return await access.right(subject, document_id) >= Right.VIEW
