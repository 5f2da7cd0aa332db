"""The notifications API (``docs/api.md``): the caller's own notifications.

* ``GET /notifications``: unread first, then newest; ``unread=1`` leaves out the read ones;
  ``limit`` (1-200, 50), ``offset``;
* ``GET /notifications/count``: ``{total, unread}``;
* ``POST /notifications/{id}/read``: mark one read (``{"id", "changed"}``);
* ``POST /notifications/read-all``: mark every unread one read (``{"changed": n}``).

Marking read tells the user's open connections the new counts (``notification.count``).
"""

from __future__ import annotations

from typing import Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from persistence.relational.records import MAX_PAGE_SIZE
from server.api.comments import uuid_of
from server.api.common import authenticated, check_params, collab_of, query_flag, query_int
from server.identity.authentication import Principal
from server.review.comments import store_errors
from server.review.notifications import notification_view

_LIST_PARAMS: Final = frozenset({"unread", "limit", "offset"})


async def list_notifications(request: Request) -> Response:
    """``GET /notifications``: ``{items, total, unread, limit, offset}``."""
    principal = await authenticated(request)
    check_params(request, _LIST_PARAMS)
    limit = query_int(request, "limit", 50, 1, MAX_PAGE_SIZE)
    offset = query_int(request, "offset", 0, 0, 1_000_000)
    store = collab_of(request).relational.notifications
    with store_errors("notification"):
        page = await store.list_for_user(
            principal.uuid, unread_only=query_flag(request, "unread"), limit=limit, offset=offset
        )
        counts = await store.count(principal.uuid)
    return JSONResponse(
        {
            "items": [notification_view(n) for n in page.items],
            "total": page.total,
            "unread": counts.unread,
            "limit": limit,
            "offset": offset,
        }
    )


async def count_notifications(request: Request) -> Response:
    """``GET /notifications/count``: ``{total, unread}``."""
    principal = await authenticated(request)
    check_params(request, frozenset())
    with store_errors("notification"):
        counts = await collab_of(request).relational.notifications.count(principal.uuid)
    return JSONResponse({"total": counts.total, "unread": counts.unread})


async def _tell_counts(request: Request, principal: Principal) -> None:
    with store_errors("notification"):
        counts = await collab_of(request).relational.notifications.count(principal.uuid)
    collab_of(request).notifier.tell_count(principal.user_id, counts.total, counts.unread)


async def mark_read(request: Request) -> Response:
    """``POST /notifications/{id}/read``: ``{"id", "changed"}`` (false when it was read
    already, or is not the caller's)."""
    principal = await authenticated(request)
    notification_id = uuid_of(request.path_params["notification_id"], "notification")
    check_params(request, frozenset())
    with store_errors("notification"):
        changed = await collab_of(request).relational.notifications.mark_read(
            notification_id, user_id=principal.uuid
        )
    if changed:
        await _tell_counts(request, principal)
    return JSONResponse({"id": str(notification_id), "changed": changed})


async def mark_all_read(request: Request) -> Response:
    """``POST /notifications/read-all``: ``{"changed": n}``."""
    principal = await authenticated(request)
    check_params(request, frozenset())
    with store_errors("notification"):
        changed = await collab_of(request).relational.notifications.mark_all_read(principal.uuid)
    if changed:
        await _tell_counts(request, principal)
    return JSONResponse({"changed": changed})


routes: list[BaseRoute] = [
    Route("/notifications", list_notifications, methods=["GET"]),
    Route("/notifications/count", count_notifications, methods=["GET"]),
    Route("/notifications/read-all", mark_all_read, methods=["POST"]),
    Route("/notifications/{notification_id}/read", mark_read, methods=["POST"]),
]
