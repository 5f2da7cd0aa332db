"""The freeze of a document's content while it is in review (``docs/comments.md``).

Moving a document into review must be atomic with its content: no edit is acknowledged after
the status change, on any node, and the revision cut at that moment holds everything
acknowledged before it. :class:`ContentFreeze` does that for the workflow
(``documents/workflow.py``): this node's connections of the document turn read-only at once,
the updates already accepted are waited for, then the change journal refuses every later
append of the document on every node (``DocumentFrozen``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final

from server.identity.rights import Right
from server.realtime.guard import apply_right

if TYPE_CHECKING:
    from persistence.coordinator.ports import ChangeJournal
    from server.identity.rights import AccessControl
    from server.realtime.hub import Hub
    from server.realtime.registry import RoomRegistry

# How long a node keeps a document it froze read-only by itself: longer than its cached
# document facts can lag behind the status change (COLLAB_ACCESS_CACHE_SECONDS is at most 4).
FREEZE_OVERLAP_SECONDS: Final = 5.0


class ContentFreeze:
    """Freezes and thaws documents' content for this node and, through the journal, for all."""

    def __init__(
        self, hub: Hub, registry: RoomRegistry, journal: ChangeJournal, access: AccessControl
    ) -> None:
        self._hub = hub
        self._registry = registry
        self._journal = journal
        self._access = access
        self._freezing: dict[str, float] = {}  # document -> until when (monotonic)

    async def freeze(self, document_id: str) -> None:
        """Freeze a document's content (it goes into review), before its status changes.

        Every open connection of the document on this node turns read-only at once (no
        await before that), the updates this node already accepted are waited for (they
        belong to the content under review), then the change journal refuses every later
        append of the document on every node (an update another node applied meanwhile is
        refused there, not acknowledged, and rebuilt away). Raises StorageError when the
        journal cannot be frozen; the connections are then writable again.
        """
        # Until the status change is visible to this node's rights checks (cached facts), this
        # node holds the document frozen itself.
        self._freezing[document_id] = time.monotonic() + FREEZE_OVERLAP_SECONDS
        self._set_frozen(document_id, True)
        try:
            for room in self._registry.rooms_of(document_id):
                await room.flushed()
            await self._journal.freeze(document_id)
        except BaseException:
            self._freezing.pop(document_id, None)
            self._access.forget(document_id)
            self._set_frozen(document_id, False)
            raise

    async def thaw(self, document_id: str) -> None:
        """End a freeze (the review ended, or the status change that froze it failed): the
        journal takes appends again and this node's connections get their rights back at
        once (other nodes' at their next rights check, within 5 s). StorageError when the
        journal cannot be reached (the document then stays frozen: retry the change)."""
        await self._journal.thaw(document_id)
        self._freezing.pop(document_id, None)
        self._access.forget(document_id)
        self._set_frozen(document_id, False)

    def frozen_here(self, document_id: str) -> bool:
        """Whether this node froze the document moments ago (its cached facts may not say
        so yet): the rights checks keep its connections read-only meanwhile."""
        deadline = self._freezing.get(document_id)
        if deadline is None:
            return False
        if deadline < time.monotonic():
            del self._freezing[document_id]
            return False
        return True

    def _set_frozen(self, document_id: str, frozen: bool) -> None:
        for conn in self._hub.of_document(document_id):
            apply_right(conn, Right(conn.right), frozen=frozen)
