"""Approval requests, workflows and approval-chain rows as JSON (``docs/api.md``)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from persistence.relational import ApprovalRequest, ChainLink, Workflow
from server.review.notifications import iso


def _person(user_id: uuid.UUID | None, names: Mapping[uuid.UUID, str | None]) -> Any:
    return None if user_id is None else {"id": str(user_id), "name": names.get(user_id)}


def request_view(request: ApprovalRequest, names: Mapping[uuid.UUID, str | None]) -> dict[str, Any]:
    """An approval request and its steps as JSON."""
    return {
        "id": str(request.id),
        "workflowId": str(request.workflow_id) if request.workflow_id else None,
        "resourceType": request.resource_type,
        "documentId": request.resource_id,
        "revisionId": request.revision_id,
        "requestor": _person(request.requestor_id, names),
        "status": request.status,
        "currentStep": request.current_step,
        "totalSteps": request.total_steps,
        "createdAt": iso(request.created_at),
        "completedAt": iso(request.completed_at),
        "previousRequestId": str(request.previous_request_id)
        if request.previous_request_id
        else None,
        "steps": [
            {
                "stepNumber": step.step_number,
                "requiredRole": step.required_role,
                "status": step.status,
                "reviewer": _person(step.reviewed_by, names),
                "reviewedAt": iso(step.reviewed_at),
                "comment": step.review_comments,
            }
            for step in request.steps
        ],
    }


def workflow_view(workflow: Workflow) -> dict[str, Any]:
    """A workflow as JSON."""
    return {
        "id": str(workflow.id),
        "name": workflow.name,
        "description": workflow.description,
        "resourceType": workflow.resource_type,
        "status": workflow.status,
        "steps": [
            {"stepNumber": n, "requiredRole": step.required_role, "name": step.name}
            for n, step in enumerate(workflow.steps, start=1)
        ],
        "createdAt": iso(workflow.created_at),
        "createdBy": str(workflow.created_by) if workflow.created_by else None,
    }


def chain_view(link: ChainLink) -> dict[str, Any]:
    """One row of the approval-chain query as JSON."""
    reviewer = None
    if link.reviewer_id is not None:
        reviewer = {
            "id": str(link.reviewer_id),
            "name": link.reviewer_name,
            "email": link.reviewer_email,
        }
    return {
        "requestId": str(link.request_id),
        "requestStatus": link.request_status,
        "currentStep": link.current_step,
        "revisionId": link.revision_id,
        "stepNumber": link.step_number,
        "requiredRole": link.required_role,
        "stepStatus": link.step_status,
        "reviewedAt": iso(link.reviewed_at),
        "reviewer": reviewer,
    }
