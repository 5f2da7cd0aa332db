"""Section locks over REST (``docs/api.md``, "Section locks"); the locks themselves are in
:mod:`server.presence.locks`.

* ``POST /documents/{id}/sections/{section}/lock`` (edit): take the lock (201), or renew it
  when the caller holds it already (200); 409 with the holder when another user holds it.
  A lock taken here lives ``LOCK_TTL`` seconds unless POSTed again.
* ``DELETE`` the same path: release it (the holder), or force it (role admin, or the admin
  right on the document); 204; 403 for anyone else, 404 when it is not locked.
* ``GET /documents/{id}/locks`` (view): the document's current locks.

A coordinator that cannot be reached answers 503 (the common storage error handler).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from crdt.ids import InvalidIdError, check_section_id
from server.api.common import ApiError, audit, collab_of, document_id_of, require
from server.identity.rights import RESOURCE_TYPE, Right
from server.presence.locks import RESERVED_PREFIX, LockHeld, Reason, is_reserved


def _section_id_of(value: object) -> str:
    try:
        section_id = check_section_id(value)
    except InvalidIdError as exc:
        raise ApiError(400, "invalid section id", str(exc)) from exc
    if is_reserved(section_id):
        raise ApiError(
            400, "invalid section id", f"ids starting with {RESERVED_PREFIX!r} cannot be locked"
        )
    return section_id


async def _existing(request: Request, document_id: str) -> None:
    """404 unless the document has a record (admins have rights on ids that do not)."""
    if await collab_of(request).access.document(document_id) is None:
        raise ApiError(404, "document not found", f"no document {document_id!r}")


async def lock_section(request: Request) -> Response:
    """``POST /documents/{id}/sections/{section}/lock`` (edit)."""
    document_id = document_id_of(request.path_params["document_id"])
    principal, _ = await require(request, document_id, Right.EDIT)
    section_id = _section_id_of(request.path_params["section_id"])
    await _existing(request, document_id)
    service = collab_of(request).locks
    try:
        held, created = await service.acquire(principal, document_id, section_id, via="rest")
    except LockHeld as refused:
        raise ApiError(
            409, "section locked", str(refused), extra={"holder": refused.holder.view()}
        ) from None
    return JSONResponse(held.view(), status_code=201 if created else 200)


async def unlock_section(request: Request) -> Response:
    """``DELETE /documents/{id}/sections/{section}/lock`` (the holder, or an admin)."""
    document_id = document_id_of(request.path_params["document_id"])
    principal, right = await require(request, document_id, Right.VIEW)
    section_id = _section_id_of(request.path_params["section_id"])
    service = collab_of(request).locks
    held = await service.holder(document_id, section_id)
    if held is None:
        raise ApiError(404, "not locked", f"section {section_id} is not locked")
    mine = held.lock.owner == principal.user_id
    if not mine and principal.role != "admin" and right < Right.ADMIN:
        detail = "only the holder or an admin may release this lock"
        audit(
            request,
            principal,
            "unlock",
            RESOURCE_TYPE,
            document_id,
            {"section": section_id, "owner": held.lock.owner, "via": "rest"},
            error=detail,
        )
        raise ApiError(403, "forbidden", detail, extra={"holder": held.view()})
    reason: Reason = "released" if mine else "forced"
    if not await service.release(principal, held.lock, reason=reason, via="rest"):
        raise ApiError(404, "not locked", f"section {section_id} is not locked")
    return Response(status_code=204)


async def list_locks(request: Request) -> Response:
    """``GET /documents/{id}/locks`` (view)."""
    document_id = document_id_of(request.path_params["document_id"])
    await require(request, document_id, Right.VIEW)
    held = await collab_of(request).locks.current(document_id)
    return JSONResponse({"documentId": document_id, "locks": [lock.view() for lock in held]})


routes: list[BaseRoute] = [
    Route("/documents/{document_id}/sections/{section_id}/lock", lock_section, methods=["POST"]),
    Route(
        "/documents/{document_id}/sections/{section_id}/lock", unlock_section, methods=["DELETE"]
    ),
    Route("/documents/{document_id}/locks", list_locks, methods=["GET"]),
]
