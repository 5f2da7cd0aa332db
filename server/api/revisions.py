"""The revisions API (``docs/api.md``): list, get, diff, save and restore a document's
revisions (:class:`server.documents.revisions.Revisions` does the work).

* ``GET /documents/{id}/revisions`` (view), ``GET .../revisions/{revisionId}`` (view),
  ``GET .../revisions/{a}/diff/{b}`` (view);
* ``POST /documents/{id}/revisions`` (edit): cut one now;
* ``POST .../revisions/{revisionId}/restore`` (edit): bring the live rooms back to it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from crdt.revisions import SectionDiff, diff_sections, sections_from_dicts
from server.api.common import (
    ApiError,
    access_logged,
    audit,
    check_params,
    collab_of,
    document_id_of,
    query_int,
    read_json,
    require,
)
from server.api.document_bodies import SaveBody, jsonable, revision_summary, sensitivity_of
from server.identity.rights import RESOURCE_TYPE, Right

if TYPE_CHECKING:
    from server.api.ports import ApiCollab

MAX_REVISION_LIMIT: Final = 100
_REVISION_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _revision_id_of(value: object) -> str:
    if not isinstance(value, str) or _REVISION_ID.fullmatch(value) is None:
        raise ApiError(400, "invalid revision id", f"{str(value)[:80]!r}")
    return value


async def _optional_body(request: Request, model: type[SaveBody]) -> SaveBody:
    """The body as ``model`` when one is sent; the model's defaults otherwise."""
    length = request.headers.get("content-length")
    chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
    if "content-type" not in request.headers and not chunked and length in (None, "0"):
        return model()
    return await read_json(request, model)


def _revision_json(revision: Mapping[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = jsonable(revision)
    return result


def _diff_json(diff: SectionDiff) -> dict[str, Any]:
    return {
        "sectionId": diff.section_id,
        "status": diff.status,
        "titleBefore": diff.title_before,
        "titleAfter": diff.title_after,
        "diff": diff.unified_diff,
    }


async def _revision(collab: ApiCollab, document_id: str, revision_id: str) -> dict[str, Any]:
    """The revision; :class:`RevisionNotFound` is a 404 "revision not found"."""
    return await collab.revisions.get(document_id, revision_id)


async def list_revisions(request: Request) -> Response:
    """``GET /documents/{id}/revisions`` (view): newest first, paged by ``before``."""
    document_id = document_id_of(request.path_params["document_id"])
    await require(request, document_id, Right.VIEW)
    check_params(request, frozenset({"before", "limit"}), frozenset())
    limit = query_int(request, "limit", 20, 1, MAX_REVISION_LIMIT)
    before: int | None = None
    if request.query_params.get("before"):
        before = query_int(request, "before", 0, 0, 2**53)
    collab = collab_of(request)
    items = await collab.content.list_revisions(document_id, limit=limit, before_version=before)
    next_before = items[-1]["version"] if len(items) == limit else None
    return JSONResponse(
        {"items": [revision_summary(r) for r in items], "limit": limit, "nextBefore": next_before}
    )


async def get_revision(request: Request) -> Response:
    """``GET /documents/{id}/revisions/{revisionId}`` (view): one revision in full."""
    document_id = document_id_of(request.path_params["document_id"])
    principal, _ = await require(request, document_id, Right.VIEW)
    revision_id = _revision_id_of(request.path_params["revision_id"])
    check_params(request, frozenset(), frozenset())
    collab = collab_of(request)
    revision = await _revision(collab, document_id, revision_id)
    record = await collab.workflow.record(document_id)
    access_logged(request, principal, document_id, "read", sensitivity_of(record))
    return JSONResponse(_revision_json(revision))


async def diff_revisions(request: Request) -> Response:
    """``GET /documents/{id}/revisions/{a}/diff/{b}`` (view): per-section unified diffs."""
    document_id = document_id_of(request.path_params["document_id"])
    principal, _ = await require(request, document_id, Right.VIEW)
    before_id = _revision_id_of(request.path_params["before_id"])
    after_id = _revision_id_of(request.path_params["after_id"])
    check_params(request, frozenset(), frozenset())
    collab = collab_of(request)
    before = await _revision(collab, document_id, before_id)
    after = await _revision(collab, document_id, after_id)
    diffs = diff_sections(
        sections_from_dicts(before.get("sections", [])),
        sections_from_dicts(after.get("sections", [])),
        (f"v{before['version']}", f"v{after['version']}"),
    )
    record = await collab.workflow.record(document_id)
    access_logged(request, principal, document_id, "read", sensitivity_of(record))
    return JSONResponse(
        {
            "from": revision_summary(before),
            "to": revision_summary(after),
            "sections": [_diff_json(diff) for diff in diffs],
        }
    )


async def save_revision(request: Request) -> Response:
    """``POST /documents/{id}/revisions`` (edit): cut a revision now; 201 with it."""
    document_id = document_id_of(request.path_params["document_id"])
    principal, _ = await require(request, document_id, Right.EDIT)
    check_params(request, frozenset(), frozenset())
    body = await _optional_body(request, SaveBody)
    collab = collab_of(request)
    await collab.workflow.record(document_id)
    async with collab.workflow.serialized(document_id):
        revision = await collab.revisions.save(
            document_id, principal.user_id, reason=body.message or "save"
        )
    audit(
        request,
        principal,
        "revision_save",
        RESOURCE_TYPE,
        document_id,
        {"revision": revision["revisionId"], "version": revision["version"]},
    )
    return JSONResponse(jsonable(revision), status_code=201)


async def restore_revision(request: Request) -> Response:
    """``POST /documents/{id}/revisions/{revisionId}/restore`` (edit): bring the live rooms
    back to a revision (forward CRDT edits every client receives) and cut a new revision."""
    document_id = document_id_of(request.path_params["document_id"])
    principal, _ = await require(request, document_id, Right.EDIT)
    revision_id = _revision_id_of(request.path_params["revision_id"])
    check_params(request, frozenset(), frozenset())
    collab = collab_of(request)
    source = await _revision(collab, document_id, revision_id)
    if (await collab.workflow.record(document_id)).get("status") == "review":
        raise ApiError(
            409,
            "document in review",
            "its content is frozen while in review: end the review (approve, or move it "
            "back to draft) before restoring a revision",
        )
    async with collab.workflow.serialized(document_id):
        revision = await collab.revisions.restore(document_id, revision_id, principal.user_id)
    audit(
        request,
        principal,
        "restore",
        RESOURCE_TYPE,
        document_id,
        {"from": revision_id, "fromVersion": source["version"], "revision": revision["revisionId"]},
    )
    return JSONResponse({"restoredFrom": revision_summary(source), "revision": jsonable(revision)})


routes: list[BaseRoute] = [
    Route("/documents/{document_id}/revisions", list_revisions, methods=["GET"]),
    Route("/documents/{document_id}/revisions", save_revision, methods=["POST"]),
    Route("/documents/{document_id}/revisions/{revision_id}", get_revision, methods=["GET"]),
    Route(
        "/documents/{document_id}/revisions/{before_id}/diff/{after_id}",
        diff_revisions,
        methods=["GET"],
    ),
    Route(
        "/documents/{document_id}/revisions/{revision_id}/restore",
        restore_revision,
        methods=["POST"],
    ),
]
