"""Approval workflows on business documents (``docs/comments.md``, the state machine).

A workflow is an ordered list of steps, each decided by a user holding its required role (or
an admin). A request puts one revision of a document through a workflow: opening it moves
the document to ``review`` through the documents API's own status transition (which cuts a
revision and freezes the content: every socket turns read-only while in review), approving
the last step makes the document ``approved``, a rejection moves it back to ``draft`` (editing
resumes), and a rejected request is resubmitted as a new request (a new round, back in
``review``).

:class:`ApprovalService` holds the policy; the REST layer (:mod:`server.api.approvals`) gives
it the status transition to use (``move``) and runs each change under the document's lock,
the one the documents API's status changes take. Every decision is audited (``approval``),
every participant notified (the role holders of the step to decide, the requestor, the
earlier reviewers of a decided request), and every client of the document gets an
``approval`` event.

Rules:

* opening or resubmitting needs the edit right, a ``draft`` document (or one in ``review``
  that no request holds) and no pending request on it;
* deciding needs the view right and the step's role (or the admin role); the requestor may
  not decide on their own request unless an admin; only the current step is decided;
* approving the last step needs the document still in ``review``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from persistence.errors import StorageError
from persistence.relational import (
    ApprovalQuery,
    ApprovalRequest,
    ChainLink,
    NewApprovalRequest,
    NewNotification,
    NewWorkflow,
    UserQuery,
    Workflow,
    WorkflowStep,
)
from protocol.events import AppEvent
from server.documents.revisions import RevisionNotFound
from server.errors import ConflictError, ForbiddenError, InvalidError, NotFoundError
from server.identity.authentication import Principal
from server.identity.rights import DOCUMENTS, RESOURCE_TYPE, Right, Subject
from server.review.approval_views import request_view
from server.review.comments import store_errors
from server.review.notifications import snippet

if TYPE_CHECKING:
    from server.review.ports import ReviewPorts

log = logging.getLogger(__name__)

RESOURCE_TYPES: Final = ("business_document", "strategic_plan")
REQUEST_RESOURCE: Final = "approval_request"
MAX_NOTIFIED_PER_STEP: Final = 2000
USERS_PAGE: Final = 200

# The documents API's status transition: target status -> (record, revision summary).
StatusChange = Callable[[str], Awaitable[tuple[dict[str, Any], dict[str, Any]]]]


@dataclass(frozen=True, slots=True)
class Outcome:
    """A request after a change, and the document's status then."""

    request: ApprovalRequest
    document_status: str
    revision: Mapping[str, Any] | None = None


class ApprovalService:
    """Workflows, requests and decisions. Every method raises a domain error of
    :mod:`server.errors` on refusal (or lets a storage error through): the edge maps it."""

    def __init__(self, ports: ReviewPorts) -> None:
        self._ports = ports

    # -- workflows ---------------------------------------------------------------------------

    async def create_workflow(
        self,
        actor: Principal,
        name: str,
        resource_type: str,
        steps: Sequence[WorkflowStep],
        description: str | None,
    ) -> Workflow:
        """Store a workflow (admin role only)."""
        if actor.role != "admin":
            raise ForbiddenError("only admins may create approval workflows")
        try:
            workflow = NewWorkflow(
                name=name,
                resource_type=resource_type,
                steps=tuple(steps),
                description=description,
                created_by=actor.uuid,
            )
        except ValueError as exc:
            raise InvalidError(str(exc)) from exc
        with store_errors("workflow"):
            stored = await self._ports.relational.approvals.create_workflow(workflow)
        self._audit(
            actor,
            "create",
            "approval_workflow",
            str(stored.id),
            {"name": stored.name, "resourceType": stored.resource_type},
        )
        return stored

    async def workflows(self, resource_type: str) -> list[Workflow]:
        with store_errors("workflow"):
            return await self._ports.relational.approvals.list_workflows(resource_type)

    # -- reading -----------------------------------------------------------------------------

    async def right(self, actor: Principal, document_id: str) -> Right:
        if not actor.may_open(document_id):
            return Right.NONE
        return await self._ports.access.right(actor.subject, document_id)

    async def request_for(
        self, actor: Principal, request_id: uuid.UUID, needed: Right = Right.VIEW
    ) -> ApprovalRequest:
        """A request on a document the actor has ``needed`` on (404 when they may not
        view it: its existence is not disclosed)."""
        with store_errors("approval request"):
            found = await self._ports.relational.approvals.get_request(request_id)
        if found is None or found.resource_type != RESOURCE_TYPE:
            raise NotFoundError(f"no request {request_id}", what="approval request")
        right = await self.right(actor, found.resource_id)
        if right < Right.VIEW:
            raise NotFoundError(f"no request {request_id}", what="approval request")
        if right < needed:
            raise ForbiddenError(
                f"this needs the {needed.label} right on the document; you have {right.label}",
            )
        return found

    async def chain(self, document_id: str) -> list[ChainLink]:
        with store_errors("approval chain"):
            return await self._ports.relational.approvals.approval_chain(RESOURCE_TYPE, document_id)

    async def requests_of(
        self, document_id: str, limit: int, offset: int
    ) -> tuple[list[ApprovalRequest], int]:
        query = ApprovalQuery(
            resource_type=RESOURCE_TYPE, resource_id=document_id, limit=limit, offset=offset
        )
        with store_errors("approval request"):
            page = await self._ports.relational.approvals.find_requests(query)
        return page.items, page.total

    # -- opening a request -------------------------------------------------------------------

    async def open(
        self,
        actor: Principal,
        document_id: str,
        workflow_id: uuid.UUID,
        revision_id: str | None,
        move: StatusChange,
    ) -> Outcome:
        """Put the document through a workflow: it moves to review (a revision is cut then;
        it is the one under review unless ``revision_id`` names another). Run it under the
        document's lock."""
        with store_errors("workflow"):
            workflow = await self._ports.relational.approvals.get_workflow(workflow_id)
        if workflow is None:
            raise _invalid("workflowId", f"no workflow {workflow_id}")
        if workflow.resource_type != RESOURCE_TYPE:
            raise _invalid("workflowId", f"workflow {workflow_id} is for {workflow.resource_type}")
        await self._no_pending(document_id)

        async def create(revision: str) -> ApprovalRequest:
            new = NewApprovalRequest(
                workflow_id=workflow.id,
                resource_type=RESOURCE_TYPE,
                resource_id=document_id,
                requestor_id=actor.uuid,
                revision_id=revision,
            )
            with store_errors("approval request"):
                return await self._ports.relational.approvals.create_request(new)

        outcome = await self._submit(actor, document_id, revision_id, move, create)
        self._audit(
            actor,
            "approval",
            REQUEST_RESOURCE,
            str(outcome.request.id),
            {
                "op": "request",
                "documentId": document_id,
                "workflowId": str(workflow.id),
                "revision": outcome.request.revision_id,
            },
        )
        await self._after_submit(actor, outcome, "requested")
        return outcome

    async def resubmit(
        self,
        actor: Principal,
        request_id: uuid.UUID,
        revision_id: str | None,
        move: StatusChange,
    ) -> Outcome:
        """Start a new round for a rejected request (edit right); the document goes back to
        review. Run it under the document's lock."""
        rejected = await self.request_for(actor, request_id, Right.EDIT)
        if rejected.status != "rejected":
            raise ConflictError(
                f"only a rejected request is resubmitted; it is {rejected.status}",
                title="invalid transition",
            )
        document_id = rejected.resource_id
        await self._no_pending(document_id)

        async def create(revision: str) -> ApprovalRequest:
            with store_errors("approval request"):
                return await self._ports.relational.approvals.resubmit(
                    request_id, requestor_id=actor.uuid, revision_id=revision
                )

        outcome = await self._submit(actor, document_id, revision_id, move, create)
        self._audit(
            actor,
            "approval",
            REQUEST_RESOURCE,
            str(outcome.request.id),
            {
                "op": "resubmit",
                "documentId": document_id,
                "previous": str(request_id),
                "revision": outcome.request.revision_id,
            },
        )
        await self._after_submit(actor, outcome, "resubmitted")
        return outcome

    async def _no_pending(self, document_id: str) -> None:
        query = ApprovalQuery(
            resource_type=RESOURCE_TYPE, resource_id=document_id, status="pending", limit=1
        )
        with store_errors("approval request"):
            page = await self._ports.relational.approvals.find_requests(query)
        if page.items:
            raise ConflictError(
                f"request {page.items[0].id} is pending on this document",
                title="approval pending",
                extra={"pendingRequest": str(page.items[0].id)},
            )

    async def _submit(
        self,
        actor: Principal,
        document_id: str,
        revision_id: str | None,
        move: StatusChange,
        create: Callable[[str], Awaitable[ApprovalRequest]],
    ) -> Outcome:
        status = await self._status(document_id)
        if revision_id is not None:
            try:
                await self._ports.revisions.get(document_id, revision_id)
            except RevisionNotFound as exc:
                raise _invalid("revisionId", f"no revision {revision_id} of this document") from exc
        revision: Mapping[str, Any] | None = None
        moved = False
        if status == "draft":
            _, revision = await move("review")  # cuts the revision of the frozen content
            moved = True
        elif status != "review":
            raise ConflictError(
                f"a {status} document cannot be submitted for approval",
                title="invalid status transition",
                extra={"currentStatus": status},
            )
        if revision_id is None:
            if revision is None:
                revision = await self._ports.revisions.save(
                    document_id, actor.user_id, reason="approval requested"
                )
            revision_id = str(revision["revisionId"])
        try:
            request = await create(revision_id)
        except Exception:
            if moved:
                await self._undo_review(document_id, move)
            raise
        return Outcome(request, "review", revision)

    async def _undo_review(self, document_id: str, move: StatusChange) -> None:
        """The request could not be stored: end the review it opened (best effort)."""
        try:
            await move("draft")
        except Exception:
            log.exception("document %s: left in review without a request", document_id)

    async def _after_submit(self, actor: Principal, outcome: Outcome, action: str) -> None:
        request = outcome.request
        step = request.pending_step
        if step is not None:
            await self._ask(actor, request, step.step_number, step.required_role)
        await self.publish(action, request, outcome.document_status)

    # -- deciding ----------------------------------------------------------------------------

    async def decide(
        self,
        actor: Principal,
        request_id: uuid.UUID,
        step_number: int,
        decision: str,
        comment: str | None,
        move: StatusChange,
    ) -> Outcome:
        """Record a decision on the current step and let the document's status follow.
        Run it under the document's lock."""
        request = await self.request_for(actor, request_id)
        if not 1 <= step_number <= len(request.steps):
            raise NotFoundError(f"request {request_id} has no step {step_number}", what="step")
        step = request.steps[step_number - 1]
        if request.status != "pending":
            raise ConflictError(f"the request is {request.status}", title="invalid transition")
        if step_number != request.current_step:
            raise ConflictError(
                f"step {step_number} is not the current step ({request.current_step})",
                title="invalid transition",
            )
        if actor.role != "admin" and actor.role != step.required_role:
            raise ForbiddenError(f"step {step_number} is decided by the {step.required_role} role")
        if actor.role != "admin" and request.requestor_id == actor.uuid:
            raise ForbiddenError("you may not decide on your own request")
        document_id = request.resource_id
        status = await self._status(document_id)
        last = step_number == request.total_steps
        if decision == "approve" and last and status != "review":
            raise ConflictError(
                f"the document is {status}: it must be in review to be approved",
                title="document not in review",
                extra={"currentStatus": status},
            )
        with store_errors("approval request"):
            decided = await self._ports.relational.approvals.decide(
                request_id, step_number, reviewer_id=actor.uuid, decision=decision, comment=comment
            )
        self._audit(
            actor,
            "approval",
            REQUEST_RESOURCE,
            str(request_id),
            {
                "op": decision,
                "documentId": document_id,
                "step": step_number,
                "comment": comment,
                "requestStatus": decided.status,
            },
        )
        revision: Mapping[str, Any] | None = None
        if status == "review" and decided.status in ("approved", "rejected"):
            target = "approved" if decided.status == "approved" else "draft"
            _, revision = await move(target)
            status = target
        await self._tell_decision(actor, decided, step_number, decision, comment)
        action = decided.status if decided.status != "pending" else "step_approved"
        await self.publish(action, decided, status)
        return Outcome(decided, status, revision)

    async def _status(self, document_id: str) -> str:
        record = await self._ports.content.get(DOCUMENTS, document_id)
        if record is None:
            raise NotFoundError(f"no document {document_id!r}", what="document")
        return str(record.get("status") or "draft")

    # -- telling people ----------------------------------------------------------------------

    async def publish(self, action: str, request: ApprovalRequest, document_status: str) -> None:
        """``{"type": "approval", "action", "request", "documentStatus"}`` to every client
        of the document."""
        view = await self.view(request)
        self._ports.hub.emit(
            request.resource_id,
            AppEvent(
                "approval",
                {"action": action, "request": view, "documentStatus": document_status},
            ),
        )

    async def view(self, request: ApprovalRequest) -> dict[str, Any]:
        people = {request.requestor_id} | {
            s.reviewed_by for s in request.steps if s.reviewed_by is not None
        }
        names = {user_id: await self._name(user_id) for user_id in people}
        return request_view(request, names)

    async def _name(self, user_id: uuid.UUID) -> str | None:
        try:
            user = await self._ports.authn.user(str(user_id))
        except StorageError:
            return None
        return user.name if user is not None else None

    async def _holders(
        self, role: str, document_id: str, exclude: set[uuid.UUID]
    ) -> list[uuid.UUID]:
        """Active users holding ``role`` who may view the document."""
        found: list[uuid.UUID] = []
        offset = 0
        while offset < MAX_NOTIFIED_PER_STEP:
            query = UserQuery(role=role, status="active", limit=USERS_PAGE, offset=offset)
            page = await self._ports.relational.users.find(query)
            for user in page.items:
                if user.id in exclude:
                    continue
                subject = Subject(str(user.id), user.role, True)
                if await self._ports.access.right(subject, document_id) >= Right.VIEW:
                    found.append(user.id)
            offset += USERS_PAGE
            if offset >= page.total:
                break
        return found

    async def _ask(
        self, actor: Principal, request: ApprovalRequest, step_number: int, role: str
    ) -> None:
        """Tell the holders of the step's role that their decision is awaited."""
        document_id = request.resource_id
        try:
            holders = await self._holders(role, document_id, {request.requestor_id})
            requestor = await self._name(request.requestor_id) or "Someone"
        except StorageError as exc:
            log.warning(
                "request %s: approvers of step %d not notified: %s", request.id, step_number, exc
            )
            return
        self._ports.notifier.send_soon(
            [
                NewNotification(
                    user_id=user_id,
                    type="approval_requested",
                    title=snippet(f"Approval requested: {document_id}", 255),
                    message=snippet(
                        f"{requestor} asks for a decision on {document_id}: step {step_number} "
                        f"of {request.total_steps} ({role}) awaits you."
                    ),
                    resource_type=REQUEST_RESOURCE,
                    resource_id=str(request.id),
                )
                for user_id in holders
            ]
        )

    async def _tell_decision(
        self,
        actor: Principal,
        request: ApprovalRequest,
        step_number: int,
        decision: str,
        comment: str | None,
    ) -> None:
        document_id = request.resource_id
        verb = "approved" if decision == "approve" else "rejected"
        if request.status == "pending":
            title = f"Step {step_number} of {request.total_steps} {verb}: {document_id}"
        else:
            title = f"Approval {request.status}: {document_id}"
        message = f"{actor.name} {verb} step {step_number} of {request.total_steps}."
        if comment:
            message += f" \u201c{snippet(comment)}\u201d"
        recipients = [request.requestor_id]
        if request.status != "pending":  # the outcome: every earlier reviewer hears it too
            recipients += [s.reviewed_by for s in request.steps if s.reviewed_by is not None]
        told = [u for u in dict.fromkeys(recipients) if u != actor.uuid]
        self._ports.notifier.send_soon(
            [
                NewNotification(
                    user_id=user_id,
                    type="approval_decided",
                    title=snippet(title, 255),
                    message=message,
                    resource_type=REQUEST_RESOURCE,
                    resource_id=str(request.id),
                )
                for user_id in told
            ]
        )
        following = request.pending_step
        if request.status == "pending" and following is not None:
            await self._ask(actor, request, following.step_number, following.required_role)

    def _audit(
        self,
        actor: Principal,
        action: str,
        resource_type: str,
        resource_id: str,
        changes: Mapping[str, Any],
    ) -> None:
        self._ports.audit.record(
            actor.context.entry(action, resource_type, resource_id, dict(changes))
        )


def _invalid(field: str, message: str) -> InvalidError:
    return InvalidError(message, field=field)
