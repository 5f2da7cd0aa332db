"""The review ports: comments, notifications, approval workflows.

One SQL adapter implements each for both backends (:mod:`.comments`,
:mod:`.notifications`, :mod:`.approvals`); both pass
``tests/contract/test_contract_review.py``. The whole design (anchors, the approval state
machine) is in ``docs/comments.md``.

Every adapter gives the guarantees of :mod:`.ports` (input checked before any I/O, bound
parameters only, aware UTC timestamps, one committed transaction per write, driver errors
translated into :mod:`persistence.errors`, reads retried on connection failures). Beside
those errors the review stores raise, from :mod:`.review_records`:

* :class:`~.review_records.NotPermittedError` (also a ``PermissionError``): the acting user
  may not change that row;
* :class:`~.review_records.InvalidTransitionError` (a ``StorageConflict``): the row is not in
  a state that allows the change.

A call that raises changes nothing. A user id that is not stored, where one is written,
raises StorageConflict (a foreign key).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Protocol

from persistence.relational.records import UNSET, Page, Unset
from persistence.relational.review_records import (
    ApprovalQuery,
    ApprovalRequest,
    ChainLink,
    Comment,
    CommentQuery,
    NewApprovalRequest,
    NewComment,
    NewNotification,
    NewWorkflow,
    Notification,
    NotificationCounts,
    Workflow,
)


class CommentStore(Protocol):
    """The ``comments`` table: threads of comments on documents, optionally anchored.

    * ``add`` stores a comment (created_at = updated_at = now). A reply (``parent_id``) must
      answer a live top-level comment of the same document (threads are one level deep);
      otherwise, or when its parent is not stored, StorageConflict. A reply is stored in its
      thread's section. The author and every mentioned user must be stored (StorageConflict).
      StorageConflict also when the id is taken.
    * ``get`` returns the comment, deleted ones included (as placeholders), or None.
    * ``edit`` replaces the content (and the mentions, if given) and stamps ``edited_at`` and
      ``updated_at``. Only the author may edit (NotPermittedError); RecordNotFound for an
      unknown or deleted comment.
    * ``resolve`` marks a thread resolved by ``by`` now; idempotent (a resolved thread keeps
      its first resolver and time). ``reopen`` clears the three fields; idempotent. Both act
      on top-level comments only (InvalidTransitionError for a reply: a thread is resolved as
      a whole) and raise RecordNotFound for an unknown or deleted comment.
    * ``delete`` is a soft delete by its author or an admin (NotPermittedError otherwise):
      the row stays so the thread keeps its shape, with ``deleted_at`` set and its content
      and mentions cleared. True if it deleted, False if it was deleted already;
      RecordNotFound for an unknown id.
    * ``find`` returns a :class:`Page` of a document's comments per :class:`CommentQuery`,
      oldest first (creation time, then id), with the total matching.
    """

    async def add(self, comment: NewComment) -> Comment: ...

    async def get(self, comment_id: uuid.UUID) -> Comment | None: ...

    async def edit(
        self,
        comment_id: uuid.UUID,
        *,
        acting_user_id: uuid.UUID,
        content: str,
        mentions: Sequence[uuid.UUID] | Unset = UNSET,
    ) -> Comment: ...

    async def resolve(self, comment_id: uuid.UUID, *, by: uuid.UUID) -> Comment: ...

    async def reopen(self, comment_id: uuid.UUID) -> Comment: ...

    async def delete(
        self, comment_id: uuid.UUID, *, acting_user_id: uuid.UUID, acting_is_admin: bool = False
    ) -> bool: ...

    async def find(self, query: CommentQuery) -> Page[Comment]: ...


class NotificationStore(Protocol):
    """The ``notifications`` table: what each user is told, read or not.

    * ``add`` stores notifications (created_at = now) in one transaction: all or none, at
      most 1000 per call; StorageConflict (nothing written) when one names a user that is
      not stored. Idempotent per notification id: a notification already stored is kept as
      it is (so a retry after an unknown outcome never notifies twice); the adapter retries
      by itself. Returns the stored notifications in the order given.
    * ``list_for_user`` returns a :class:`Page` of one user's notifications: unread first,
      then newest first (ties broken by id); ``unread_only`` leaves out the read ones.
    * ``count`` returns how many notifications the user has, and how many are unread.
    * ``mark_read`` stamps ``read_at`` on one notification of ``user_id``; True if it
      changed it, False if it was read already, is not stored, or is someone else's (which
      is left as it is).
    * ``mark_all_read`` marks every unread notification of the user; returns how many.
    * Deleting a user (not offered by these ports) deletes their notifications (CASCADE).
    """

    async def add(self, notifications: Sequence[NewNotification]) -> list[Notification]: ...

    async def list_for_user(
        self, user_id: uuid.UUID, *, unread_only: bool = False, limit: int = 50, offset: int = 0
    ) -> Page[Notification]: ...

    async def count(self, user_id: uuid.UUID) -> NotificationCounts: ...

    async def mark_read(self, notification_id: uuid.UUID, *, user_id: uuid.UUID) -> bool: ...

    async def mark_all_read(self, user_id: uuid.UUID) -> int: ...


class ApprovalStore(Protocol):
    """The ``approval_workflows``, ``approval_requests`` and ``approval_steps`` tables.

    State machine (``docs/comments.md``): a request is created ``pending`` with its steps
    copied in order from its workflow, step 1 ``pending`` and the others ``waiting``. Only the
    current (pending) step may be decided. Approving it makes the next step ``pending``, or
    approves the request if it was the last; rejecting it rejects the request and marks the
    steps still ``waiting`` as ``skipped``. A decided request (``completed_at`` set) never
    changes again; a rejected one is resubmitted as a new request (a new round).

    * ``create_workflow`` stores an ``active`` workflow; StorageConflict for an unknown
      ``created_by`` or a taken id. ``get_workflow`` returns it or None;
      ``list_workflows`` returns those of a resource type, oldest first.
    * ``create_request`` stores a request and its steps in one transaction and returns it.
      RecordNotFound for an unknown workflow; InvalidTransitionError for a workflow that is
      not active or is for another resource type; StorageConflict for an unknown requestor.
    * ``decide`` records ``decision`` ("approve" / "reject") on step ``step_number`` by
      ``reviewer_id`` with an optional comment, and returns the request as it is after.
      RecordNotFound for an unknown request; InvalidTransitionError when the request is not
      pending or the step is not its current step (so of two reviewers deciding one step at
      once, one wins and the other gets InvalidTransitionError). Who may decide (the step's
      ``required_role``, the requestor's own request) is the caller's policy: the store
      records who did.
    * ``resubmit`` starts a new round for a rejected request: a new pending request on the
      same resource and workflow (steps from the workflow as it is now), naming the rejected
      one in ``previous_request_id``, for ``revision_id`` (None: the rejected request's
      revision). The rejected request stays as it was, history intact. A request is
      resubmitted at most once (InvalidTransitionError after that, or when it is not
      rejected); RecordNotFound for an unknown id.
    * ``get_request`` returns a request with its steps, or None. ``find_requests`` returns a
      :class:`Page` of requests (with steps) per :class:`ApprovalQuery`, newest first.
    * ``approval_chain`` is the schema's approval-chain query: every step of every request on
      the resource, with the name and email of who decided it, ordered by request (oldest
      first) then step number.
    """

    async def create_workflow(self, workflow: NewWorkflow) -> Workflow: ...

    async def get_workflow(self, workflow_id: uuid.UUID) -> Workflow | None: ...

    async def list_workflows(self, resource_type: str) -> list[Workflow]: ...

    async def create_request(self, request: NewApprovalRequest) -> ApprovalRequest: ...

    async def decide(
        self,
        request_id: uuid.UUID,
        step_number: int,
        *,
        reviewer_id: uuid.UUID,
        decision: str,
        comment: str | None = None,
    ) -> ApprovalRequest: ...

    async def resubmit(
        self, request_id: uuid.UUID, *, requestor_id: uuid.UUID, revision_id: str | None = None
    ) -> ApprovalRequest: ...

    async def get_request(self, request_id: uuid.UUID) -> ApprovalRequest | None: ...

    async def find_requests(self, query: ApprovalQuery) -> Page[ApprovalRequest]: ...

    async def approval_chain(self, resource_type: str, resource_id: str) -> list[ChainLink]: ...
