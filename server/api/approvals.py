"""The approvals API (``docs/api.md``): workflows, requests on documents, decisions, the
approval chain. The policy is :class:`server.review.approvals.ApprovalService`'s; this module gives
it the documents API's status transition (the one ``POST /documents/{id}/status`` uses, so
revisions are cut and the review freeze applies) and runs every change under the same
per-document lock.

* ``POST /approval-workflows`` (admin role), ``GET /approval-workflows?resourceType=``;
* ``POST /documents/{id}/approvals`` (edit): open a request, the document moves to review;
* ``GET /documents/{id}/approvals`` (view): the document's requests, newest first;
* ``GET /documents/{id}/approval-chain`` (view): the schema's approval-chain query;
* ``GET /approvals/{requestId}`` (view);
* ``POST /approvals/{requestId}/steps/{n}/decision`` (the step's role, or admin);
* ``POST /approvals/{requestId}/resubmit`` (edit).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal

from pydantic import Field, StringConstraints
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from persistence.relational import WorkflowStep
from persistence.relational.records import MAX_PAGE_SIZE
from persistence.relational.review_records import MAX_WORKFLOW_STEPS
from server.api.comments import uuid_of
from server.api.common import (
    ApiError,
    Model,
    authenticated,
    check_params,
    collab_of,
    document_id_of,
    query_int,
    read_json,
    require,
)
from server.identity.authentication import Principal
from server.identity.rights import Right
from server.review.approval_views import chain_view, workflow_view
from server.review.approvals import (
    RESOURCE_TYPES,
    ApprovalService,
    Outcome,
    StatusChange,
)

Role = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,50}$")]
RevisionId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Note = Annotated[str, StringConstraints(max_length=5000, pattern=r"^[^\x00]*$")]
_DECISION_PATH: Final = "/approvals/{request_id}/steps/{step}/decision"


class StepBody(Model):
    """One step of a workflow: the role that decides it, and an optional label."""

    requiredRole: Role
    name: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = None


class WorkflowBody(Model):
    """``POST /approval-workflows``."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    description: Note | None = None
    resourceType: Literal["business_document", "strategic_plan"] = "business_document"
    steps: list[StepBody] = Field(min_length=1, max_length=MAX_WORKFLOW_STEPS)


class RequestBody(Model):
    """``POST /documents/{id}/approvals``."""

    workflowId: uuid.UUID
    revisionId: RevisionId | None = None


class DecisionBody(Model):
    """``POST /approvals/{requestId}/steps/{n}/decision``."""

    decision: Literal["approve", "reject"]
    comment: Note | None = None


class ResubmitBody(Model):
    """``POST /approvals/{requestId}/resubmit`` (the body is optional)."""

    revisionId: RevisionId | None = None


def _service(request: Request) -> ApprovalService:
    return collab_of(request).approvals


def _mover(request: Request, principal: Principal, document_id: str) -> StatusChange:
    """The documents API's status transition, for the approval flow to call."""

    async def move(target: str) -> tuple[dict[str, Any], dict[str, Any]]:
        return await collab_of(request).workflow.set_status(principal, document_id, target)

    return move


async def _answer(service: ApprovalService, outcome: Outcome, status: int = 200) -> Response:
    body: dict[str, Any] = {
        "request": await service.view(outcome.request),
        "documentStatus": outcome.document_status,
    }
    if outcome.revision is not None:
        body["revision"] = _jsonable(outcome.revision)
    return JSONResponse(body, status_code=status)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if hasattr(value, "isoformat"):
        return value.isoformat(timespec="milliseconds")
    return value


async def _optional_body(request: Request) -> ResubmitBody:
    length = request.headers.get("content-length")
    chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
    if "content-type" not in request.headers and not chunked and length in (None, "0"):
        return ResubmitBody()
    return await read_json(request, ResubmitBody)


# -- workflows ---------------------------------------------------------------------------------


async def create_workflow(request: Request) -> Response:
    """``POST /approval-workflows`` (admin role): 201 with the workflow."""
    principal = await authenticated(request)
    check_params(request, frozenset())
    body = await read_json(request, WorkflowBody)
    workflow = await _service(request).create_workflow(
        principal,
        body.name,
        body.resourceType,
        [WorkflowStep(step.requiredRole, step.name) for step in body.steps],
        body.description,
    )
    return JSONResponse(
        workflow_view(workflow),
        status_code=201,
        headers={"Location": f"/api/approval-workflows/{workflow.id}"},
    )


async def list_workflows(request: Request) -> Response:
    """``GET /approval-workflows?resourceType=business_document``: ``{items}``."""
    await authenticated(request)
    check_params(request, frozenset({"resourceType"}))
    resource_type = request.query_params.get("resourceType") or "business_document"
    if resource_type not in RESOURCE_TYPES:
        raise ApiError(400, "invalid query parameter", f"resourceType: one of {RESOURCE_TYPES}")
    workflows = await _service(request).workflows(resource_type)
    return JSONResponse({"items": [workflow_view(w) for w in workflows]})


# -- requests ----------------------------------------------------------------------------------


async def open_request(request: Request) -> Response:
    """``POST /documents/{id}/approvals`` (edit): 201 with the request; the document is in
    review from then on."""
    document_id = document_id_of(request.path_params["document_id"])
    principal, _ = await require(request, document_id, Right.EDIT)
    check_params(request, frozenset())
    body = await read_json(request, RequestBody)
    service = _service(request)
    async with collab_of(request).workflow.serialized(document_id):
        outcome = await service.open(
            principal,
            document_id,
            body.workflowId,
            body.revisionId,
            _mover(request, principal, document_id),
        )
    return await _answer(service, outcome, 201)


async def list_requests(request: Request) -> Response:
    """``GET /documents/{id}/approvals`` (view): ``{items, total, limit, offset}``."""
    document_id = document_id_of(request.path_params["document_id"])
    await require(request, document_id, Right.VIEW)
    check_params(request, frozenset({"limit", "offset"}))
    limit = query_int(request, "limit", 20, 1, MAX_PAGE_SIZE)
    offset = query_int(request, "offset", 0, 0, 1_000_000)
    service = _service(request)
    items, total = await service.requests_of(document_id, limit, offset)
    return JSONResponse(
        {
            "items": [await service.view(item) for item in items],
            "total": total,
            "limit": limit,
            "offset": offset,
        }
    )


async def approval_chain(request: Request) -> Response:
    """``GET /documents/{id}/approval-chain`` (view): every step of every request on the
    document with its reviewer, by request (oldest first) then step."""
    document_id = document_id_of(request.path_params["document_id"])
    await require(request, document_id, Right.VIEW)
    check_params(request, frozenset())
    links = await _service(request).chain(document_id)
    return JSONResponse({"documentId": document_id, "items": [chain_view(x) for x in links]})


async def get_request(request: Request) -> Response:
    """``GET /approvals/{requestId}`` (view)."""
    principal = await authenticated(request)
    request_id = uuid_of(request.path_params["request_id"], "approval request")
    check_params(request, frozenset())
    service = _service(request)
    found = await service.request_for(principal, request_id)
    return JSONResponse(await service.view(found))


def _step_of(value: object) -> int:
    try:
        step = int(str(value))
    except ValueError:
        raise ApiError(404, "step not found", f"{str(value)[:20]!r} is not a step") from None
    if not 1 <= step <= MAX_WORKFLOW_STEPS:
        raise ApiError(404, "step not found", f"no step {step}")
    return step


async def decide(request: Request) -> Response:
    """``POST /approvals/{requestId}/steps/{n}/decision``: approve or reject the current
    step (the step's role, or admin)."""
    principal = await authenticated(request)
    request_id = uuid_of(request.path_params["request_id"], "approval request")
    step = _step_of(request.path_params["step"])
    check_params(request, frozenset())
    body = await read_json(request, DecisionBody)
    service = _service(request)
    found = await service.request_for(principal, request_id)
    document_id = found.resource_id
    async with collab_of(request).workflow.serialized(document_id):
        outcome = await service.decide(
            principal,
            request_id,
            step,
            body.decision,
            body.comment or None,
            _mover(request, principal, document_id),
        )
    return await _answer(service, outcome)


async def resubmit(request: Request) -> Response:
    """``POST /approvals/{requestId}/resubmit`` (edit): 201 with the new request; the
    document is back in review."""
    principal = await authenticated(request)
    request_id = uuid_of(request.path_params["request_id"], "approval request")
    check_params(request, frozenset())
    body = await _optional_body(request)
    service = _service(request)
    found = await service.request_for(principal, request_id, Right.EDIT)
    document_id = found.resource_id
    async with collab_of(request).workflow.serialized(document_id):
        outcome = await service.resubmit(
            principal, request_id, body.revisionId, _mover(request, principal, document_id)
        )
    return await _answer(service, outcome, 201)


routes: list[BaseRoute] = [
    Route("/approval-workflows", create_workflow, methods=["POST"]),
    Route("/approval-workflows", list_workflows, methods=["GET"]),
    Route("/documents/{document_id}/approvals", open_request, methods=["POST"]),
    Route("/documents/{document_id}/approvals", list_requests, methods=["GET"]),
    Route("/documents/{document_id}/approval-chain", approval_chain, methods=["GET"]),
    Route("/approvals/{request_id}", get_request, methods=["GET"]),
    Route(_DECISION_PATH, decide, methods=["POST"]),
    Route("/approvals/{request_id}/resubmit", resubmit, methods=["POST"]),
]
