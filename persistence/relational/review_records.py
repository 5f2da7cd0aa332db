"""The values the review ports take and return: comments, notifications, approvals.

Pure code (no I/O), like :mod:`.records`: every input type checks itself when built, so an
adapter never sends the database a value one backend would take and the other refuse (too
long for its column, NUL characters, naive datetimes). A failed check raises ValueError.

The errors the review stores add to :mod:`persistence.errors` are here too:
:class:`NotPermittedError` (the acting user may not do this to the row) and
:class:`InvalidTransitionError` (the row is not in a state that allows it).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from crdt.anchors import Anchor
from persistence.errors import StorageConflict, StorageError
from persistence.relational.records import (
    check_limit,
    check_offset,
    check_optional_text,
    check_text,
    check_uuid,
)

MAX_COMMENT_CHARS: Final = 100_000
MAX_QUOTE_CHARS: Final = 1_000_000
MAX_MESSAGE_CHARS: Final = 100_000
MAX_ANCHOR_BYTES: Final = 64  # an encoded sticky index is at most 22 bytes
MAX_MENTIONS: Final = 100
MAX_NOTIFICATIONS_PER_CALL: Final = 1000
MAX_WORKFLOW_STEPS: Final = 20

WORKFLOW_ACTIVE: Final = "active"
REQUEST_STATUSES: Final = ("pending", "approved", "rejected", "withdrawn")
STEP_STATUSES: Final = ("waiting", "pending", "approved", "rejected", "skipped")
DECISIONS: Final = ("approve", "reject")


class NotPermittedError(StorageError, PermissionError):
    """The acting user may not do this to the row (not its author, not an admin).

    Nothing was changed. Also a ``PermissionError``, so a server maps it to 403.
    """


class InvalidTransitionError(StorageConflict):
    """The row is not in a state that allows the change (deciding a step that is not the
    current one, resubmitting a request that was not rejected, resolving a reply...).

    Nothing was changed. A ``StorageConflict``: retrying the same call fails again.
    """


def _set(instance: object, name: str, value: object) -> None:
    object.__setattr__(instance, name, value)


def check_user_ids(values: Iterable[uuid.UUID], what: str, limit: int) -> tuple[uuid.UUID, ...]:
    """User ids, each once, in the order first given; at most ``limit``."""
    if isinstance(values, str | bytes):
        raise ValueError(f"{what} must be a collection of user ids")
    ids = tuple(dict.fromkeys(check_uuid(value, what) for value in values))
    if len(ids) > limit:
        raise ValueError(f"at most {limit} {what}")
    return ids


def check_anchor(anchor: object) -> Anchor | None:
    """An anchor to store: short opaque edges and a quote a text column can hold."""
    if anchor is None:
        return None
    if not isinstance(anchor, Anchor):
        raise ValueError(f"anchor must be a crdt.anchors.Anchor, not {type(anchor).__name__}")
    for edge in (anchor.start, anchor.end):
        if not 0 < len(edge) <= MAX_ANCHOR_BYTES:
            raise ValueError(f"anchor edges must be 1..{MAX_ANCHOR_BYTES} bytes")
    check_text(anchor.quote, "anchor quote", MAX_QUOTE_CHARS)
    return anchor


# -- comments --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewComment:
    """A comment to add: a thread's first comment, or a reply (``parent_id`` set).

    A top-level comment may sit in a section (``section_id``, the ``S`` of room ``D/S``) and
    be anchored to a range of its text (``anchor``, which needs ``section_id``). A reply
    belongs where its thread is: it carries neither (the store copies the thread's section).
    ``mentions`` are user ids, kept once each in order.
    """

    document_id: str
    author_id: uuid.UUID
    content: str
    section_id: str | None = None
    anchor: Anchor | None = None
    parent_id: uuid.UUID | None = None
    mentions: tuple[uuid.UUID, ...] = ()
    id: uuid.UUID = field(default_factory=uuid.uuid4)

    def __post_init__(self) -> None:
        check_text(self.document_id, "document_id", 255)
        check_uuid(self.author_id, "author_id")
        check_text(self.content, "content", MAX_COMMENT_CHARS)
        check_optional_text(self.section_id, "section_id", 255)
        check_anchor(self.anchor)
        if self.anchor is not None and self.section_id is None:
            raise ValueError("an anchored comment needs the section_id its anchor lives in")
        if self.parent_id is not None:
            check_uuid(self.parent_id, "parent_id")
            if self.section_id is not None or self.anchor is not None:
                raise ValueError("a reply takes its thread's place: no section_id or anchor")
        _set(self, "mentions", check_user_ids(self.mentions, "mentions", MAX_MENTIONS))
        check_uuid(self.id, "id")


@dataclass(frozen=True, slots=True)
class Comment:
    """A stored comment. A deleted one (``deleted_at`` set) keeps its place in its thread,
    with its content and mentions cleared."""

    id: uuid.UUID
    document_id: str
    section_id: str | None
    author_id: uuid.UUID
    content: str
    parent_id: uuid.UUID | None
    anchor: Anchor | None
    mentions: tuple[uuid.UUID, ...]
    resolved: bool
    resolved_by: uuid.UUID | None
    resolved_at: datetime | None
    created_at: datetime
    updated_at: datetime
    edited_at: datetime | None
    deleted_at: datetime | None

    @property
    def is_reply(self) -> bool:
        return self.parent_id is not None

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None


@dataclass(frozen=True, slots=True)
class CommentQuery:
    """Comments of one document, oldest first (creation time, then id). Filters are ANDed.

    * ``section_id``: only those of that section (exact match);
    * ``unresolved_only``: only threads that are not resolved (their replies included);
    * ``thread_of``: only that thread, its first comment and its replies;
    * ``include_deleted``: keep deleted comments (as content-less placeholders).
    """

    document_id: str
    section_id: str | None = None
    unresolved_only: bool = False
    thread_of: uuid.UUID | None = None
    include_deleted: bool = False
    limit: int = 50
    offset: int = 0

    def __post_init__(self) -> None:
        check_text(self.document_id, "document_id", 255)
        check_optional_text(self.section_id, "section_id", 255)
        if self.thread_of is not None:
            check_uuid(self.thread_of, "thread_of")
        check_limit(self.limit)
        check_offset(self.offset)


# -- notifications ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewNotification:
    """A notification to deliver to one user, optionally about a resource.

    ``type`` names the event (``comment_mentioned``, ``approval_request``...); the resource
    (e.g. ``("comment", "<id>")``) is what a client opens when the notification is clicked.
    """

    user_id: uuid.UUID
    type: str
    title: str
    message: str
    resource_type: str | None = None
    resource_id: str | None = None
    id: uuid.UUID = field(default_factory=uuid.uuid4)

    def __post_init__(self) -> None:
        check_uuid(self.user_id, "user_id")
        check_text(self.type, "type", 100)
        check_text(self.title, "title", 255)
        check_text(self.message, "message", MAX_MESSAGE_CHARS)
        check_optional_text(self.resource_type, "resource_type", 100)
        check_optional_text(self.resource_id, "resource_id", 255)
        if self.resource_id is not None and self.resource_type is None:
            raise ValueError("a resource_id needs its resource_type")
        check_uuid(self.id, "id")


@dataclass(frozen=True, slots=True)
class Notification:
    id: uuid.UUID
    user_id: uuid.UUID
    type: str
    title: str
    message: str
    resource_type: str | None
    resource_id: str | None
    read_at: datetime | None
    created_at: datetime

    @property
    def read(self) -> bool:
        return self.read_at is not None


@dataclass(frozen=True, slots=True)
class NotificationCounts:
    total: int
    unread: int


# -- approvals -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkflowStep:
    """One step of an approval chain: who may decide it (a role name) and an optional label."""

    required_role: str
    name: str | None = None

    def __post_init__(self) -> None:
        check_text(self.required_role, "required_role", 100)
        check_optional_text(self.name, "step name", 255)


@dataclass(frozen=True, slots=True)
class NewWorkflow:
    """An approval workflow for one resource type: 1..20 steps, decided in order."""

    name: str
    resource_type: str
    steps: tuple[WorkflowStep, ...]
    description: str | None = None
    created_by: uuid.UUID | None = None
    id: uuid.UUID = field(default_factory=uuid.uuid4)

    def __post_init__(self) -> None:
        check_text(self.name, "name", 255)
        check_text(self.resource_type, "resource_type", 100)
        steps = tuple(self.steps)
        if not 1 <= len(steps) <= MAX_WORKFLOW_STEPS:
            raise ValueError(f"a workflow has 1..{MAX_WORKFLOW_STEPS} steps")
        if not all(isinstance(step, WorkflowStep) for step in steps):
            raise ValueError("workflow steps must be WorkflowStep values")
        _set(self, "steps", steps)
        check_optional_text(self.description, "description", MAX_MESSAGE_CHARS)
        if self.created_by is not None:
            check_uuid(self.created_by, "created_by")
        check_uuid(self.id, "id")


@dataclass(frozen=True, slots=True)
class Workflow:
    id: uuid.UUID
    name: str
    description: str | None
    resource_type: str
    status: str
    steps: tuple[WorkflowStep, ...]
    created_at: datetime
    created_by: uuid.UUID | None


@dataclass(frozen=True, slots=True)
class NewApprovalRequest:
    """A request to approve one revision of a resource through a workflow.

    ``resource_type`` must be the workflow's (the store checks); ``revision_id`` names the
    revision under review (None for resources without revisions).
    """

    workflow_id: uuid.UUID
    resource_type: str
    resource_id: str
    requestor_id: uuid.UUID
    revision_id: str | None = None
    id: uuid.UUID = field(default_factory=uuid.uuid4)

    def __post_init__(self) -> None:
        check_uuid(self.workflow_id, "workflow_id")
        check_text(self.resource_type, "resource_type", 100)
        check_text(self.resource_id, "resource_id", 255)
        check_uuid(self.requestor_id, "requestor_id")
        check_optional_text(self.revision_id, "revision_id", 255)
        check_uuid(self.id, "id")


@dataclass(frozen=True, slots=True)
class ApprovalStep:
    id: uuid.UUID
    request_id: uuid.UUID
    step_number: int  # 1-based
    required_role: str
    assigned_to: uuid.UUID | None
    status: str  # one of STEP_STATUSES
    reviewed_at: datetime | None
    reviewed_by: uuid.UUID | None
    review_comments: str | None


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    """A request and its steps, in step order."""

    id: uuid.UUID
    workflow_id: uuid.UUID | None
    resource_type: str
    resource_id: str
    revision_id: str | None
    requestor_id: uuid.UUID
    status: str  # one of REQUEST_STATUSES
    current_step: int
    total_steps: int
    created_at: datetime
    completed_at: datetime | None
    previous_request_id: uuid.UUID | None  # the rejected request this one resubmits
    steps: tuple[ApprovalStep, ...]

    @property
    def pending_step(self) -> ApprovalStep | None:
        """The step awaiting a decision (None once the request is decided)."""
        return next((step for step in self.steps if step.status == "pending"), None)


@dataclass(frozen=True, slots=True)
class ApprovalQuery:
    """Approval requests, newest first. Filters given are exact matches, ANDed."""

    resource_type: str | None = None
    resource_id: str | None = None
    status: str | None = None
    limit: int = 50
    offset: int = 0

    def __post_init__(self) -> None:
        check_optional_text(self.resource_type, "resource_type", 255)
        check_optional_text(self.resource_id, "resource_id", 255)
        check_optional_text(self.status, "status", 255)
        if self.resource_id is not None and self.resource_type is None:
            raise ValueError("a resource_id filter needs its resource_type")
        check_limit(self.limit)
        check_offset(self.offset)


@dataclass(frozen=True, slots=True)
class ChainLink:
    """One row of a resource's approval chain (``cms-schema.md`` section 4.1): a step of a
    request with its reviewer, if it was decided."""

    request_id: uuid.UUID
    request_status: str
    current_step: int
    revision_id: str | None
    step_number: int
    required_role: str
    step_status: str
    reviewed_at: datetime | None
    reviewer_id: uuid.UUID | None
    reviewer_name: str | None
    reviewer_email: str | None


def check_decision(decision: object) -> str:
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {DECISIONS}")
    assert isinstance(decision, str)
    return decision


def check_step_number(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("step_number must be an int >= 1")
    return value
