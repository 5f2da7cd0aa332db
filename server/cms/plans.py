"""Strategic plans (``strategic_plans``): approval workflows, the approval chain, key-result
roll-up.

Approvals use the approval store's ``strategic_plan`` workflows (``POST
/api/approval-workflows`` with ``resourceType: "strategic_plan"``): opening a request
(edit right, a ``draft`` plan, no pending request) moves the plan to ``under_review``; a
rejection moves it back to ``draft``; approving the last step makes it ``approved`` and sets
``approvalDate``. A step is decided by a user holding its role, an admin, or one of the
plan's ``approvers``; a requestor does not decide their own request (unless an admin).
After approval, a PATCH moves it on: approved -> executing -> completed; DELETE archives.
The plan's approvers are notified of a new request, the requestor of each decision. While
it is under review a plan is frozen: a PATCH is 409 until the review ends.

Roll-up: a key result's progress is ``actual / target`` (clipped to 0..1; absent when either
is missing or the target is 0), an objective's the mean of its key results', the plan's the
mean of its objectives'.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Final

from persistence.errors import RecordNotFound
from persistence.relational import (
    ApprovalQuery,
    ApprovalRequest,
    ChainLink,
    InvalidTransitionError,
    NewApprovalRequest,
    NewNotification,
)
from server.cms.service import CmsPorts, CmsService, now_ms
from server.cms.tables import KINDS, PLANS
from server.errors import ConflictError, ForbiddenError, InvalidError, NotFoundError
from server.identity.authentication import Principal
from server.identity.rights import Right

RESOURCE: Final = "strategic_plan"


class PlanService(CmsService):
    """Strategic plans (see the module docstring)."""

    def __init__(self, ports: CmsPorts) -> None:
        super().__init__(ports, KINDS[PLANS])

    async def before_update(
        self, actor: Principal, record: Mapping[str, Any], changes: dict[str, Any]
    ) -> None:
        if record.get("status") == "under_review":
            raise ConflictError(
                "the plan is under review: it changes again once the review ends",
                title="plan under review",
                extra={"currentStatus": "under_review"},
            )

    async def request_approval(
        self, actor: Principal, plan_id: str, workflow_id: uuid.UUID
    ) -> tuple[ApprovalRequest, dict[str, Any]]:
        approvals = self.ports.approvals
        async with self.lock(plan_id):
            plan = await self.fetch(actor, plan_id, Right.EDIT)
            workflow = await approvals.get_workflow(workflow_id)
            if workflow is None or workflow.resource_type != RESOURCE:
                raise InvalidError(f"no {RESOURCE} workflow {workflow_id}", field="workflowId")
            if plan.get("status") != "draft":
                raise ConflictError(
                    f"a {plan.get('status')} plan cannot be submitted for approval",
                    title="invalid status transition",
                    extra={"currentStatus": plan.get("status")},
                )
            pending = await approvals.find_requests(
                ApprovalQuery(
                    resource_type=RESOURCE, resource_id=plan_id, status="pending", limit=1
                )
            )
            if pending.items:
                raise ConflictError(
                    f"request {pending.items[0].id} is pending on this plan",
                    title="approval pending",
                    extra={"pendingRequest": str(pending.items[0].id)},
                )
            try:
                request = await approvals.create_request(
                    NewApprovalRequest(workflow.id, RESOURCE, plan_id, actor.uuid)
                )
            except InvalidTransitionError as exc:
                raise InvalidError(str(exc), field="workflowId") from exc
            stored = await self.set_fields(
                actor, plan_id, {"status": "under_review"}, "status_change"
            )
        self.audit(actor, "approval", plan_id, {"op": "request", "requestId": str(request.id)})
        self._tell(
            _approvers(stored) - {actor.user_id},
            "approval_requested",
            f"Approval requested: {stored.get('title') or plan_id}",
            f"{actor.name} asks for a decision on the strategic plan {plan_id}.",
            request.id,
        )
        return request, stored

    async def request_of(
        self, actor: Principal, plan_id: str, request_id: uuid.UUID
    ) -> ApprovalRequest:
        await self.fetch(actor, plan_id, Right.VIEW)
        found = await self.ports.approvals.get_request(request_id)
        if found is None or found.resource_type != RESOURCE or found.resource_id != plan_id:
            raise NotFoundError(f"no request {request_id} on this plan", what="approval request")
        return found

    async def decide(
        self,
        actor: Principal,
        plan_id: str,
        request_id: uuid.UUID,
        step_number: int,
        decision: str,
        comment: str | None,
    ) -> tuple[ApprovalRequest, dict[str, Any]]:
        async with self.lock(plan_id):
            plan = await self.fetch(actor, plan_id, Right.VIEW)
            request = await self.request_of(actor, plan_id, request_id)
            if not 1 <= step_number <= len(request.steps):
                raise NotFoundError(f"request {request_id} has no step {step_number}", what="step")
            step = request.steps[step_number - 1]
            approvers = plan.get("approvers")
            named = isinstance(approvers, list) and actor.user_id in approvers
            allowed = actor.role in ("admin", step.required_role) or named
            if not allowed:
                raise ForbiddenError(
                    f"step {step_number} is decided by the {step.required_role} role "
                    "or an approver of the plan"
                )
            if actor.role != "admin" and request.requestor_id == actor.uuid:
                raise ForbiddenError("you may not decide on your own request")
            try:
                decided = await self.ports.approvals.decide(
                    request_id,
                    step_number,
                    reviewer_id=actor.uuid,
                    decision=decision,
                    comment=comment,
                )
            except (InvalidTransitionError, RecordNotFound) as exc:
                raise ConflictError(str(exc), title="invalid transition") from exc
            if decided.status == "approved":
                plan = await self.set_fields(
                    actor,
                    plan_id,
                    {"status": "approved", "approvalDate": now_ms()},
                    "status_change",
                )
            elif decided.status == "rejected":
                plan = await self.set_fields(actor, plan_id, {"status": "draft"}, "status_change")
        self.audit(
            actor,
            "approval",
            plan_id,
            {"op": decision, "requestId": str(request_id), "step": step_number},
        )
        verb = "approved" if decision == "approve" else "rejected"
        self._tell(
            {str(decided.requestor_id)} - {actor.user_id},
            "approval_decided",
            f"Step {step_number} {verb}: {plan.get('title') or plan_id}",
            f"{actor.name} {verb} step {step_number} of {decided.total_steps}; "
            f"the request is {decided.status}, the plan {plan.get('status')}.",
            request_id,
        )
        return decided, plan

    def _tell(
        self, users: set[str], kind: str, title: str, message: str, request_id: uuid.UUID
    ) -> None:
        """Notify ``users`` (in the background) about an approval request of a plan."""
        notifications = []
        for user in sorted(users):
            try:
                notifications.append(
                    NewNotification(
                        user_id=uuid.UUID(user),
                        type=kind,
                        title=title[:255],
                        message=message[:2000],
                        resource_type="approval_request",
                        resource_id=str(request_id),
                    )
                )
            except ValueError:
                continue
        self.ports.notify(notifications)

    async def requests(self, actor: Principal, plan_id: str) -> list[ApprovalRequest]:
        await self.fetch(actor, plan_id, Right.VIEW)
        page = await self.ports.approvals.find_requests(
            ApprovalQuery(resource_type=RESOURCE, resource_id=plan_id, limit=100)
        )
        return page.items

    async def chain(self, actor: Principal, plan_id: str) -> list[ChainLink]:
        """The schema's approval-chain query for the plan."""
        await self.fetch(actor, plan_id, Right.VIEW)
        return await self.ports.approvals.approval_chain(RESOURCE, plan_id)


def _approvers(plan: Mapping[str, Any]) -> set[str]:
    found = plan.get("approvers")
    return {user for user in found if isinstance(user, str)} if isinstance(found, list) else set()


def _progress(result: Mapping[str, Any]) -> float | None:
    target, actual = result.get("target"), result.get("actual")
    if not isinstance(target, int | float) or not isinstance(actual, int | float) or target == 0:
        return None
    return max(0.0, min(1.0, actual / target))


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(sum(known) / len(known), 4) if known else None


def rollup(plan: Mapping[str, Any]) -> dict[str, Any]:
    """``{"progress", "objectives": [{"id", "progress", "keyResults": [{"id", "progress"}]}]}``."""
    objectives: list[dict[str, Any]] = []
    means: list[float | None] = []
    for objective in plan.get("keyObjectives") or []:
        if not isinstance(objective, dict):
            continue
        results = [
            {"id": result.get("id"), "progress": _progress(result)}
            for result in objective.get("keyResults") or []
            if isinstance(result, dict)
        ]
        mean = _mean([r["progress"] for r in results])
        means.append(mean)
        objectives.append({"id": objective.get("id"), "progress": mean, "keyResults": results})
    return {"progress": _mean(means), "objectives": objectives}
