"""``/api/strategic-plans``: strategic plans (``docs/api.md``) with their key-result
roll-up in every view (``progress``), approval requests, decisions and the approval chain
(:class:`server.cms.plans.PlanService`).

* ``POST /strategic-plans/{id}/approvals`` (edit) ``{"workflowId"}``: 201, the plan moves
  to ``under_review``;
* ``GET /strategic-plans/{id}/approvals`` (view): the plan's requests, newest first;
* ``POST /strategic-plans/{id}/approvals/{requestId}/steps/{n}/decision``
  ``{"decision": "approve" | "reject", "comment"}``;
* ``GET /strategic-plans/{id}/approval-chain`` (view): the schema's approval-chain query.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import StringConstraints
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from persistence.relational import ApprovalRequest
from server.api.cms_common import Resource, record_id_of, view
from server.api.comments import uuid_of
from server.api.common import ApiError, Model, authenticated, check_params, collab_of, read_json
from server.cms.plans import rollup
from server.review.approval_views import chain_view, request_view


def shown(record: Mapping[str, Any]) -> dict[str, Any]:
    body = view(record)
    body["progress"] = rollup(record)
    return body


resource = Resource("strategic-plans", lambda collab: collab.cms.plans, shown)


class RequestBody(Model):
    workflowId: uuid.UUID


class DecisionBody(Model):
    decision: Literal["approve", "reject"]
    comment: Annotated[str, StringConstraints(max_length=5000, pattern=r"^[^\x00]*$")] | None = None


async def _request(http: Request, request: ApprovalRequest) -> dict[str, Any]:
    """An approval request as JSON, with the names of its requestor and reviewers."""
    people = {request.requestor_id} | {s.reviewed_by for s in request.steps if s.reviewed_by}
    users = collab_of(http).authn
    names: dict[uuid.UUID, str | None] = {}
    for person in people:
        found = await users.user(str(person))
        names[person] = found.name if found is not None else None
    body = request_view(request, names)
    body["planId"] = body.pop("documentId")
    return body


async def open_request(request: Request) -> Response:
    principal = await authenticated(request)
    plan_id = record_id_of(request)
    check_params(request, frozenset())
    body = await read_json(request, RequestBody)
    service = collab_of(request).cms.plans
    opened, plan = await service.request_approval(principal, plan_id, body.workflowId)
    answer = {"request": await _request(request, opened), "plan": shown(plan)}
    return JSONResponse(answer, status_code=201)


async def list_requests(request: Request) -> Response:
    principal = await authenticated(request)
    plan_id = record_id_of(request)
    check_params(request, frozenset())
    found = await collab_of(request).cms.plans.requests(principal, plan_id)
    return JSONResponse({"items": [await _request(request, item) for item in found]})


async def decide(request: Request) -> Response:
    principal = await authenticated(request)
    plan_id = record_id_of(request)
    request_id = uuid_of(request.path_params["request_id"], "approval request")
    try:
        step = int(request.path_params["step"])
    except ValueError:
        raise ApiError(404, "step not found", "the step is a number") from None
    check_params(request, frozenset())
    body = await read_json(request, DecisionBody)
    decided, plan = await collab_of(request).cms.plans.decide(
        principal, plan_id, request_id, step, body.decision, body.comment or None
    )
    return JSONResponse({"request": await _request(request, decided), "plan": shown(plan)})


async def approval_chain(request: Request) -> Response:
    principal = await authenticated(request)
    plan_id = record_id_of(request)
    check_params(request, frozenset())
    links = await collab_of(request).cms.plans.chain(principal, plan_id)
    return JSONResponse({"planId": plan_id, "items": [chain_view(link) for link in links]})


_ITEM = "/strategic-plans/{record_id}"
routes: list[BaseRoute] = [
    *resource.routes(),
    Route(f"{_ITEM}/approvals", open_request, methods=["POST"]),
    Route(f"{_ITEM}/approvals", list_requests, methods=["GET"]),
    Route(f"{_ITEM}/approvals/{{request_id}}/steps/{{step}}/decision", decide, methods=["POST"]),
    Route(f"{_ITEM}/approval-chain", approval_chain, methods=["GET"]),
]
