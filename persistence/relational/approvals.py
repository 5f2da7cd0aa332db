"""SQL adapter of :class:`.review_ports.ApprovalStore` (both backends).

A workflow's steps are kept in its ``steps`` JSON column as ``[{"required_role": ...,
"name": ...}, ...]``; a request copies them into ``approval_steps`` rows when it is created,
so a request keeps the chain it started with whatever happens to the workflow later.

Every change to a request runs in one write transaction that first locks the request's row
(``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's write transactions are already serial),
so concurrent decisions on one request are applied one after the other and the second sees
the state the first left.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from persistence.errors import RecordNotFound, StorageCorrupted
from persistence.relational.engine import SqlDatabase
from persistence.relational.records import (
    Page,
    check_moment,
    check_optional_text,
    check_text,
    check_uuid,
)
from persistence.relational.review_records import (
    MAX_MESSAGE_CHARS,
    WORKFLOW_ACTIVE,
    ApprovalQuery,
    ApprovalRequest,
    ApprovalStep,
    ChainLink,
    InvalidTransitionError,
    NewApprovalRequest,
    NewWorkflow,
    Workflow,
    WorkflowStep,
    check_decision,
    check_step_number,
)
from persistence.relational.schema import (
    approval_requests,
    approval_steps,
    approval_workflows,
    users,
)
from persistence.relational.users import Clock, required

_w = approval_workflows.c
_r = approval_requests.c
_s = approval_steps.c


# -- rows to values --------------------------------------------------------------------------


def _workflow_steps(row: sa.Row[Any]) -> tuple[WorkflowStep, ...]:
    try:
        steps = tuple(WorkflowStep(step["required_role"], step.get("name")) for step in row.steps)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise StorageCorrupted(f"the steps of workflow {row.id} are malformed") from exc
    if not steps:
        raise StorageCorrupted(f"workflow {row.id} has no steps")
    return steps


def _workflow(row: sa.Row[Any]) -> Workflow:
    return Workflow(
        id=row.id,
        name=row.name,
        description=row.description,
        resource_type=row.resource_type,
        status=row.status or WORKFLOW_ACTIVE,
        steps=_workflow_steps(row),
        created_at=required(row, "created_at"),
        created_by=row.created_by,
    )


def _step(row: sa.Row[Any]) -> ApprovalStep:
    return ApprovalStep(
        id=row.id,
        request_id=row.approval_request_id,
        step_number=row.step_number,
        required_role=row.required_role,
        assigned_to=row.assigned_to,
        status=required(row, "status"),
        reviewed_at=row.reviewed_at,
        reviewed_by=row.reviewed_by,
        review_comments=row.review_comments,
    )


def _request(row: sa.Row[Any], steps: list[ApprovalStep]) -> ApprovalRequest:
    return ApprovalRequest(
        id=row.id,
        workflow_id=row.workflow_id,
        resource_type=row.resource_type,
        resource_id=row.resource_id,
        revision_id=row.revision_id,
        requestor_id=row.requestor_id,
        status=required(row, "status"),
        current_step=required(row, "current_step"),
        total_steps=row.total_steps if row.total_steps is not None else len(steps),
        created_at=required(row, "created_at"),
        completed_at=row.completed_at,
        previous_request_id=row.previous_request_id,
        steps=tuple(steps),
    )


async def _load_many(conn: AsyncConnection, rows: list[sa.Row[Any]]) -> list[ApprovalRequest]:
    """The requests of ``rows`` with their steps (one query for all the steps)."""
    if not rows:
        return []
    steps: dict[uuid.UUID, list[ApprovalStep]] = defaultdict(list)
    statement = (
        sa.select(approval_steps)
        .where(_s.approval_request_id.in_([row.id for row in rows]))
        .order_by(_s.approval_request_id, _s.step_number)
    )
    for step_row in await conn.execute(statement):
        steps[step_row.approval_request_id].append(_step(step_row))
    return [_request(row, steps[row.id]) for row in rows]


async def _load(conn: AsyncConnection, request_id: uuid.UUID) -> ApprovalRequest | None:
    row = (
        await conn.execute(sa.select(approval_requests).where(_r.id == request_id))
    ).one_or_none()
    return None if row is None else (await _load_many(conn, [row]))[0]


async def _locked_request(conn: AsyncConnection, request_id: uuid.UUID) -> sa.Row[Any]:
    statement = sa.select(approval_requests).where(_r.id == request_id).with_for_update()
    row = (await conn.execute(statement)).one_or_none()
    if row is None:
        raise RecordNotFound(f"approval request {request_id} not found")
    return row


async def _active_workflow(
    conn: AsyncConnection, workflow_id: uuid.UUID | None, resource_type: str
) -> Workflow:
    if workflow_id is None:
        raise InvalidTransitionError("the request names no workflow")
    row = (
        await conn.execute(sa.select(approval_workflows).where(_w.id == workflow_id))
    ).one_or_none()
    if row is None:
        raise RecordNotFound(f"approval workflow {workflow_id} not found")
    workflow = _workflow(row)
    if workflow.status != WORKFLOW_ACTIVE:
        raise InvalidTransitionError(f"workflow {workflow_id} is {workflow.status}")
    if workflow.resource_type != resource_type:
        raise InvalidTransitionError(
            f"workflow {workflow_id} is for {workflow.resource_type!r}, not {resource_type!r}"
        )
    return workflow


def _link(row: Any) -> ChainLink:
    return ChainLink(
        request_id=row.request_id,
        request_status=required(row, "request_status"),
        current_step=required(row, "current_step"),
        revision_id=row.revision_id,
        step_number=row.step_number,
        required_role=row.required_role,
        step_status=required(row, "step_status"),
        reviewed_at=row.reviewed_at,
        reviewer_id=row.reviewed_by,
        reviewer_name=row.name,
        reviewer_email=row.email,
    )


# -- the store -------------------------------------------------------------------------------


class SqlApprovalStore:
    """Approval workflows, requests and steps. Guarantees: :class:`.review_ports.ApprovalStore`."""

    def __init__(self, db: SqlDatabase, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def _now(self) -> datetime:
        return check_moment(self._clock(), "clock")

    async def create_workflow(self, workflow: NewWorkflow) -> Workflow:
        if not isinstance(workflow, NewWorkflow):
            raise ValueError(f"expected NewWorkflow, not {type(workflow).__name__}")
        values = {
            "id": workflow.id,
            "name": workflow.name,
            "description": workflow.description,
            "resource_type": workflow.resource_type,
            "status": WORKFLOW_ACTIVE,
            "steps": [
                {"required_role": step.required_role, "name": step.name} for step in workflow.steps
            ],
            "created_at": self._now(),
            "created_by": workflow.created_by,
        }
        statement = approval_workflows.insert().values(values).returning(*approval_workflows.c)

        async def run(conn: AsyncConnection) -> Workflow:
            return _workflow((await conn.execute(statement)).one())

        return await self._db.write("creating an approval workflow", run)

    async def get_workflow(self, workflow_id: uuid.UUID) -> Workflow | None:
        check_uuid(workflow_id, "workflow_id")
        statement = sa.select(approval_workflows).where(_w.id == workflow_id)

        async def run(conn: AsyncConnection) -> Workflow | None:
            row = (await conn.execute(statement)).one_or_none()
            return None if row is None else _workflow(row)

        return await self._db.read("getting an approval workflow", run)

    async def list_workflows(self, resource_type: str) -> list[Workflow]:
        check_text(resource_type, "resource_type", 255)
        statement = (
            sa.select(approval_workflows)
            .where(_w.resource_type == resource_type)
            .order_by(_w.created_at, _w.id)
        )

        async def run(conn: AsyncConnection) -> list[Workflow]:
            return [_workflow(row) for row in await conn.execute(statement)]

        return await self._db.read("listing approval workflows", run)

    async def create_request(self, request: NewApprovalRequest) -> ApprovalRequest:
        if not isinstance(request, NewApprovalRequest):
            raise ValueError(f"expected NewApprovalRequest, not {type(request).__name__}")
        now = self._now()

        async def run(conn: AsyncConnection) -> ApprovalRequest:
            workflow = await _active_workflow(conn, request.workflow_id, request.resource_type)
            return await self._insert(conn, request, workflow, None, now)

        return await self._db.write("creating an approval request", run)

    @staticmethod
    async def _insert(
        conn: AsyncConnection,
        request: NewApprovalRequest,
        workflow: Workflow,
        previous: uuid.UUID | None,
        now: datetime,
    ) -> ApprovalRequest:
        await conn.execute(
            approval_requests.insert().values(
                id=request.id,
                workflow_id=workflow.id,
                resource_type=request.resource_type,
                resource_id=request.resource_id,
                revision_id=request.revision_id,
                requestor_id=request.requestor_id,
                status="pending",
                current_step=1,
                total_steps=len(workflow.steps),
                created_at=now,
                previous_request_id=previous,
            )
        )
        steps = [
            {
                "id": uuid.uuid4(),
                "approval_request_id": request.id,
                "step_number": number,
                "required_role": step.required_role,
                "status": "pending" if number == 1 else "waiting",
            }
            for number, step in enumerate(workflow.steps, start=1)
        ]
        await conn.execute(approval_steps.insert(), steps)
        created = await _load(conn, request.id)
        assert created is not None  # inserted just above, in this transaction
        return created

    async def decide(
        self,
        request_id: uuid.UUID,
        step_number: int,
        *,
        reviewer_id: uuid.UUID,
        decision: str,
        comment: str | None = None,
    ) -> ApprovalRequest:
        check_uuid(request_id, "request_id")
        check_step_number(step_number)
        check_uuid(reviewer_id, "reviewer_id")
        approve = check_decision(decision) == "approve"
        check_optional_text(comment, "comment", MAX_MESSAGE_CHARS)
        now = self._now()

        async def run(conn: AsyncConnection) -> ApprovalRequest:
            row = await _locked_request(conn, request_id)
            if row.status != "pending":
                raise InvalidTransitionError(f"approval request {request_id} is {row.status}")
            if step_number != row.current_step:
                raise InvalidTransitionError(
                    f"step {step_number} is not the current step ({row.current_step})"
                )
            decided = await conn.execute(
                approval_steps.update()
                .where(
                    _s.approval_request_id == request_id,
                    _s.step_number == step_number,
                    _s.status == "pending",
                )
                .values(
                    status="approved" if approve else "rejected",
                    reviewed_at=now,
                    reviewed_by=reviewer_id,
                    review_comments=comment,
                )
                .returning(_s.id)
            )
            if decided.one_or_none() is None:
                raise StorageCorrupted(f"the current step of {request_id} is not pending")
            await self._advance(conn, row, step_number, approve, now)
            after = await _load(conn, request_id)
            assert after is not None
            return after

        return await self._db.write("deciding an approval step", run)

    @staticmethod
    async def _advance(
        conn: AsyncConnection, row: sa.Row[Any], step_number: int, approve: bool, now: datetime
    ) -> None:
        """Move the request on after a decision on its current step."""
        mine = _s.approval_request_id == row.id
        request = approval_requests.update().where(_r.id == row.id)
        total = row.total_steps
        if total is None:
            count = sa.select(sa.func.count()).select_from(approval_steps).where(mine)
            total = int(await conn.scalar(count) or 0)
        if not approve:
            await conn.execute(request.values(status="rejected", completed_at=now))
            waiting = approval_steps.update().where(mine, _s.status == "waiting")
            await conn.execute(waiting.values(status="skipped"))
        elif step_number >= total:
            await conn.execute(request.values(status="approved", completed_at=now))
        else:
            await conn.execute(request.values(current_step=step_number + 1))
            following = (
                approval_steps.update()
                .where(mine, _s.step_number == step_number + 1, _s.status == "waiting")
                .values(status="pending")
                .returning(_s.id)
            )
            if (await conn.execute(following)).one_or_none() is None:
                raise StorageCorrupted(f"step {step_number + 1} of {row.id} is not waiting")

    async def resubmit(
        self, request_id: uuid.UUID, *, requestor_id: uuid.UUID, revision_id: str | None = None
    ) -> ApprovalRequest:
        check_uuid(request_id, "request_id")
        check_uuid(requestor_id, "requestor_id")
        check_optional_text(revision_id, "revision_id", 255)
        now = self._now()

        async def run(conn: AsyncConnection) -> ApprovalRequest:
            old = await _locked_request(conn, request_id)
            if old.status != "rejected":
                raise InvalidTransitionError(
                    f"only a rejected request is resubmitted; {request_id} is {old.status}"
                )
            newer = await conn.scalar(sa.select(_r.id).where(_r.previous_request_id == old.id))
            if newer is not None:
                raise InvalidTransitionError(f"{request_id} was resubmitted already as {newer}")
            workflow = await _active_workflow(conn, old.workflow_id, old.resource_type)
            request = NewApprovalRequest(
                workflow_id=workflow.id,
                resource_type=old.resource_type,
                resource_id=old.resource_id,
                requestor_id=requestor_id,
                revision_id=revision_id if revision_id is not None else old.revision_id,
            )
            return await self._insert(conn, request, workflow, old.id, now)

        return await self._db.write("resubmitting an approval request", run)

    async def get_request(self, request_id: uuid.UUID) -> ApprovalRequest | None:
        check_uuid(request_id, "request_id")

        async def run(conn: AsyncConnection) -> ApprovalRequest | None:
            return await _load(conn, request_id)

        return await self._db.read("getting an approval request", run)

    async def find_requests(self, query: ApprovalQuery) -> Page[ApprovalRequest]:
        if not isinstance(query, ApprovalQuery):
            raise ValueError(f"expected ApprovalQuery, not {type(query).__name__}")
        conditions = [
            column == value
            for column, value in (
                (_r.resource_type, query.resource_type),
                (_r.resource_id, query.resource_id),
                (_r.status, query.status),
            )
            if value is not None
        ]
        count = sa.select(sa.func.count()).select_from(approval_requests).where(*conditions)
        page = (
            sa.select(approval_requests)
            .where(*conditions)
            .order_by(_r.created_at.desc(), _r.id.desc())
            .limit(query.limit)
            .offset(query.offset)
        )

        async def run(conn: AsyncConnection) -> Page[ApprovalRequest]:
            total = await conn.scalar(count)
            rows = list((await conn.execute(page)).all())
            return Page(await _load_many(conn, rows), int(total or 0))

        return await self._db.read("listing approval requests", run)

    async def approval_chain(self, resource_type: str, resource_id: str) -> list[ChainLink]:
        check_text(resource_type, "resource_type", 255)
        check_text(resource_id, "resource_id", 255)
        # cms-schema.md section 4.1, "Fetch Approval Chain", with the request's revision.
        statement = (
            sa.select(
                _r.id.label("request_id"),
                _r.status.label("request_status"),
                _r.current_step,
                _r.revision_id,
                _s.step_number,
                _s.required_role,
                _s.status.label("step_status"),
                _s.reviewed_at,
                _s.reviewed_by,
                users.c.name,
                users.c.email,
            )
            .select_from(
                approval_requests.join(approval_steps, _r.id == _s.approval_request_id).outerjoin(
                    users, _s.reviewed_by == users.c.id
                )
            )
            .where(_r.resource_id == resource_id, _r.resource_type == resource_type)
            .order_by(_r.created_at, _r.id, _s.step_number)
        )

        async def run(conn: AsyncConnection) -> list[ChainLink]:
            return [_link(row) for row in await conn.execute(statement)]

        return await self._db.read("reading an approval chain", run)
