"""A business document's life: its creation, the status workflow (draft -> review ->
approved -> published -> archived, review -> draft, any -> archived; ``docs/api.md``) and the
per-document lock.

Moving into review freezes the content (no edit is acknowledged after the status change,
on any node: ``freeze.py``) and cuts a revision of it; leaving review thaws it. Status
changes, revision cuts and restores of one document run one at a time:
:meth:`Workflow.serialized` is the document's lock, taken by the documents API and the
approval flow alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from persistence.errors import StorageConflict
from persistence.keyed import Hold, KeyedLocks
from server.documents.snapshots import new_document
from server.errors import ConflictError, NotFoundError
from server.flights import Flights
from server.hooks import PermissionChange
from server.identity.rights import DOCUMENTS, RESOURCE_TYPE

if TYPE_CHECKING:
    from persistence.content.ports import ContentStore
    from server.documents.freeze import ContentFreeze
    from server.documents.revisions import Revisions
    from server.documents.snapshots import Snapshotter
    from server.hooks import Hooks
    from server.identity.audit import AuditTrail
    from server.identity.authentication import Principal
    from server.identity.rights import AccessControl

# The workflow: the states each status may move to.
TRANSITIONS: Final[Mapping[str, tuple[str, ...]]] = {
    "draft": ("review", "archived"),
    "review": ("approved", "draft", "archived"),
    "approved": ("published", "archived"),
    "published": ("archived",),
    "archived": (),
}
# Target states that need the approve right (the others need edit).
APPROVAL_STATES: Final = frozenset({"approved", "published"})


def check_transition(current: str, target: str) -> None:
    """Raises :class:`ConflictError` ("invalid status transition", with ``currentStatus``
    and ``allowed``) unless the workflow allows ``current`` -> ``target``."""
    allowed = TRANSITIONS.get(current, ("archived",))
    if target not in allowed:
        listed = ", ".join(allowed) if allowed else "none"
        raise ConflictError(
            f"a {current} document cannot become {target}; allowed next states: {listed}",
            title="invalid status transition",
            extra={"currentStatus": current, "allowed": list(allowed)},
        )


@dataclass(frozen=True, slots=True)
class WorkflowPorts:
    """What the workflow works with: the documents' records, the rights cache, revisions,
    the snapshotter (a new document's first content), the freeze, the audit trail and the
    hooks (``on_permission_change`` when a document is created)."""

    content: ContentStore
    access: AccessControl
    revisions: Revisions
    snapshots: Snapshotter
    freeze: ContentFreeze
    audit: AuditTrail
    hooks: Hooks


class Workflow:
    """Creation and status changes of business documents. Every method raises the domain
    errors of :mod:`server.errors` (or lets a storage error through): the edge maps them."""

    def __init__(self, ports: WorkflowPorts) -> None:
        self._ports = ports
        self._locks: KeyedLocks[str] = KeyedLocks()
        self._first_joins: Flights[str, dict[str, Any]] = Flights()

    def serialized(self, document_id: str) -> Hold[str]:
        """The document's lock (``async with``): mutations that cut revisions (save, status,
        restore, approval decisions) run one at a time per document, on this node."""
        return self._locks.hold(document_id)

    async def record(self, document_id: str) -> dict[str, Any]:
        """The document's record; raises :class:`NotFoundError` ("document not found")."""
        record = await self._ports.content.get(DOCUMENTS, document_id)
        if record is None:
            raise NotFoundError(f"no document {document_id!r}", what="document")
        return record

    async def create(
        self, document_id: str, principal: Principal, fields: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Store the record of a new document owned by ``principal`` (with ``fields`` over
        the defaults) and return it. StorageConflict when the id is taken and ``fields`` were
        given; without them (a first join), the existing record is returned instead."""
        ports = self._ports
        now = datetime.now(UTC)
        record = new_document(document_id, await ports.snapshots.render(document_id), now)
        record.update(
            owner=principal.user_id,
            createdBy=principal.user_id,
            updatedBy=principal.user_id,
            contributors=[],
            permissions={"view": [], "edit": [], "comment": []},
        )
        record.update(fields or {})
        try:
            stored = await ports.content.insert(DOCUMENTS, record)
        except StorageConflict:
            ports.access.forget(document_id)
            if fields is not None:
                raise
            existing = await ports.content.get(DOCUMENTS, document_id)
            if existing is None:
                raise
            return dict(existing)
        except BaseException:
            ports.access.forget(document_id)
            raise
        ports.access.remember(document_id, stored)
        context = principal.context
        ports.audit.record(
            context.entry(
                "create", "business_document", document_id, {"title": record.get("title")}
            )
        )
        ports.hooks.on_permission_change(
            PermissionChange(
                document_id,
                context.user_id,
                None,
                stored.get("permissions") or {},
                created=True,
            )
        )
        return dict(stored)

    async def create_on_join(self, document_id: str, principal: Principal) -> None:
        """Create the record of a document that its first joiner opens (``principal`` owns
        it). Concurrent first joins of one document, a herd, share one creation: the others
        wait for it rather than each render and insert a record that then conflicts (one
        flight: its error, if any, is every waiter's; a waiter cancelled does not cancel
        it)."""
        await self._first_joins.run(document_id, lambda: self.create(document_id, principal))

    async def set_status(
        self, actor: Principal, document_id: str, target: str
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Move the document to ``target`` and cut a revision; returns the record and the
        revision summary. Run it under :meth:`serialized`.

        Raises :class:`NotFoundError` for a document without a record, :class:`ConflictError`
        for a transition the workflow does not allow; nothing changes then. A storage error
        after a freeze thaws the content again before it propagates.
        """
        ports = self._ports
        record = await self.record(document_id)
        current = str(record.get("status") or "draft")
        check_transition(current, target)
        now = datetime.now(UTC)
        fields: dict[str, Any] = {"status": target, "updatedAt": now, "updatedBy": actor.user_id}
        if current == "review":
            fields.update(lastReviewedAt=now, lastReviewedBy=actor.user_id)
        freezing = target == "review" and current != "review"
        if freezing:
            # Atomic with the status change: no edit is acknowledged after this, on any node,
            # and the revision cut below holds everything acknowledged before it.
            await ports.freeze.freeze(document_id)
        try:
            await ports.content.update(DOCUMENTS, document_id, fields)
        except BaseException:
            if freezing:
                await ports.freeze.thaw(document_id)
            raise
        ports.access.forget(document_id)  # sockets follow the review state at the next check
        if current == "review" and target != "review":
            await ports.freeze.thaw(document_id)
        revision = await ports.revisions.save(
            document_id, actor.user_id, reason=f"status {current} -> {target}"
        )
        ports.audit.record(
            actor.context.entry(
                "status_change",
                RESOURCE_TYPE,
                document_id,
                {"from": current, "to": target, "revision": revision["revisionId"]},
            )
        )
        return await self.record(document_id), revision
