"""Presence over REST (``docs/api.md``, "Presence"): who is in a document right now, in which
sections, with their cursors, across every node (it reads the coordinator; the tracking is in
:mod:`server.presence.tracker`).

* ``GET /documents/{id}/presence`` (view).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from persistence.coordinator.values import Cursor, Presence
from server.api.common import collab_of, document_id_of, require
from server.identity.rights import Right
from server.presence.locks import iso

if TYPE_CHECKING:
    from server.api.ports import ApiCollab


async def _names(collab: ApiCollab, user_ids: set[str]) -> dict[str, str | None]:
    """Display names: those of this node's connections, the others from the users store
    (cached by the authenticator)."""
    local = collab.presence.tracker.names()
    names: dict[str, str | None] = {uid: local[uid] for uid in user_ids if uid in local}
    others = sorted(user_ids - names.keys())
    users = await asyncio.gather(*(collab.authn.user(uid) for uid in others))
    for uid, user in zip(others, users, strict=True):
        names[uid] = user.name if user is not None else None
    return names


def presence_view(
    entries: list[Presence], cursors: list[Cursor], names: dict[str, str | None]
) -> list[dict[str, Any]]:
    """Group the entries by user, then by section (the outline first), with the cursors."""
    cursor_of = {(cursor.section_id, cursor.user_id): cursor for cursor in cursors}
    users: dict[str, dict[str, Any]] = {}
    sections: dict[tuple[str, str | None], dict[str, Any]] = {}
    for entry in entries:
        user = users.setdefault(
            entry.user_id,
            {
                "userId": entry.user_id,
                "name": names.get(entry.user_id),
                "since": entry.joined_at,
                "connections": 0,
                "sections": [],
            },
        )
        user["since"] = min(user["since"], entry.joined_at)
        user["connections"] += 1
        key = (entry.user_id, entry.section_id)
        section = sections.get(key)
        if section is None:
            cursor = cursor_of.get((entry.section_id, entry.user_id))
            section = sections[key] = {
                "sectionId": entry.section_id,
                "since": entry.joined_at,
                "connections": 0,
                "cursor": cursor.value if cursor is not None else None,
                "cursorUpdatedAt": iso(cursor.updated_at) if cursor is not None else None,
            }
            user["sections"].append(section)
        section["since"] = min(section["since"], entry.joined_at)
        section["connections"] += 1
    for section in sections.values():
        section["since"] = iso(section["since"])
    for user in users.values():
        user["since"] = iso(user["since"])
    return sorted(users.values(), key=lambda user: (user["name"] or "", user["userId"]))


async def get_presence(request: Request) -> Response:
    """``GET /documents/{id}/presence`` (view)."""
    document_id = document_id_of(request.path_params["document_id"])
    await require(request, document_id, Right.VIEW)
    collab = collab_of(request)
    coordinator = collab.coordinator
    entries, cursors = await asyncio.gather(
        coordinator.presence.members(document_id), coordinator.cursors.of_document(document_id)
    )
    names = await _names(collab, {entry.user_id for entry in entries})
    return JSONResponse(
        {"documentId": document_id, "users": presence_view(entries, cursors, names)}
    )


routes: list[BaseRoute] = [
    Route("/documents/{document_id}/presence", get_presence, methods=["GET"]),
]
