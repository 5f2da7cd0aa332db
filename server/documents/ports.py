"""What the document features need from the app, as a protocol: ``server.app.Collab``
satisfies it structurally, so ``documents/`` (and the features above it) never import the
app that wires them (the layer order of ``docs/architecture.md``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from persistence.content.ports import ContentStore
    from server.documents.revisions import Revisions
    from server.identity.audit import AuditTrail
    from server.identity.rights import AccessControl


class DocumentCollab(Protocol):
    """The collaborators of the status workflow (``workflow.py``): the content store, the
    rights function, the revisions, the audit trail and the freeze of a document's content."""

    @property
    def content(self) -> ContentStore:
        """The derived content (the documents' records)."""
        ...

    @property
    def access(self) -> AccessControl:
        """The rights function, with its cache."""
        ...

    @property
    def revisions(self) -> Revisions:
        """The revisions of documents."""
        ...

    @property
    def audit(self) -> AuditTrail:
        """The audit trail."""
        ...

    async def freeze_content(self, document_id: str) -> None:
        """Stop acknowledging edits of ``document_id`` (on every node)."""
        ...

    async def thaw_content(self, document_id: str) -> None:
        """Acknowledge edits of ``document_id`` again."""
        ...
