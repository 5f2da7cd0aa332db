"""The status workflow of business documents: draft -> review -> approved -> published ->
archived, review -> draft, any -> archived (``docs/api.md``).

Moving into review freezes the content (no edit is acknowledged after the status change,
on any node) and cuts a revision of it; leaving review thaws it. Status changes, revision
cuts and restores of one document run one at a time: :func:`serialized` is the document's
lock, taken by the documents API and the approval flow alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from server.errors import ConflictError, NotFoundError
from server.identity.rights import DOCUMENTS, RESOURCE_TYPE

if TYPE_CHECKING:
    from server.documents.ports import DocumentCollab
    from server.identity.authentication import Principal

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


class KeyedLocks:
    """One asyncio lock per key, dropped when nobody holds or awaits it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Hold the key's lock for the block (FIFO among waiters; cancellation-safe)."""
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


_locks: weakref.WeakKeyDictionary[DocumentCollab, KeyedLocks] = weakref.WeakKeyDictionary()


def serialized(
    collab: DocumentCollab, document_id: str
) -> contextlib.AbstractAsyncContextManager[None]:
    """The document's lock: mutations that cut revisions (save, status, restore, approval
    decisions) run one at a time per document, on this node."""
    locks = _locks.get(collab)
    if locks is None:
        locks = _locks[collab] = KeyedLocks()
    return locks.hold(document_id)


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


async def document_record(collab: DocumentCollab, document_id: str) -> dict[str, Any]:
    """The document's record; raises :class:`NotFoundError` ("document not found")."""
    record = await collab.content.get(DOCUMENTS, document_id)
    if record is None:
        raise NotFoundError(f"no document {document_id!r}", what="document")
    return record


async def set_status(
    collab: DocumentCollab, actor: Principal, document_id: str, target: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Move the document to ``target`` and cut a revision; returns the record and the
    revision summary. Run it under :func:`serialized`.

    Raises :class:`NotFoundError` for a document without a record, :class:`ConflictError`
    for a transition the workflow does not allow; nothing changes then. A storage error
    after a freeze thaws the content again before it propagates.
    """
    record = await document_record(collab, document_id)
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
        await collab.freeze_content(document_id)
    try:
        await collab.content.update(DOCUMENTS, document_id, fields)
    except BaseException:
        if freezing:
            await collab.thaw_content(document_id)
        raise
    collab.access.forget(document_id)  # sockets follow the review state at the next check
    if current == "review" and target != "review":
        await collab.thaw_content(document_id)
    revision = await collab.revisions.save(
        document_id, actor.user_id, reason=f"status {current} -> {target}"
    )
    collab.audit.record(
        actor.context.entry(
            "status_change",
            RESOURCE_TYPE,
            document_id,
            {"from": current, "to": target, "revision": revision["revisionId"]},
        )
    )
    return await document_record(collab, document_id), revision
