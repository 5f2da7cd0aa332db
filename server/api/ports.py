"""What the REST handlers need from the app, as a protocol: ``server.app.Collab`` satisfies
it structurally, so ``api/`` never imports the app that mounts it (the layer order of
``docs/architecture.md``). It extends the ports of the features the handlers call."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from server.documents.ports import DocumentCollab
from server.review.ports import ReviewCollab

if TYPE_CHECKING:
    from persistence.coordinator.ports import Coordinator
    from persistence.rooms.ports import RoomStore
    from server.cms.catalog import Cms
    from server.documents.snapshots import Snapshotter
    from server.identity.authentication import Principal
    from server.settings import Settings


class ApiCollab(DocumentCollab, ReviewCollab, Protocol):
    """The app as the handlers see it (``collab_of(request)``)."""

    @property
    def settings(self) -> Settings:
        """The server's settings."""
        ...

    @property
    def cms(self) -> Cms:
        """The CMS services (projects, research, plans, opportunities, articles)."""
        ...

    @property
    def store(self) -> RoomStore:
        """The room store (journals and compacted states)."""
        ...

    @property
    def coordinator(self) -> Coordinator:
        """The coordinator (Redis or in-process)."""
        ...

    @property
    def snapshots(self) -> Snapshotter:
        """The snapshotter (journal -> derived content)."""
        ...

    async def limit(self, principal: Principal, action: str) -> None:
        """Count one ``action`` of the user; RateLimited when over the limit."""
        ...

    async def create_document(
        self, document_id: str, principal: Principal, fields: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Store the record of a new document owned by ``principal``; StorageConflict when
        the id is taken."""
        ...
