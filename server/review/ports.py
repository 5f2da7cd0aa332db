"""What the review features (comments, approvals) need from the app, as a protocol:
``server.app.Collab`` satisfies it structurally, so ``review/`` never imports the app that
wires it (the layer order of ``docs/architecture.md``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from persistence.content.ports import ContentStore
    from persistence.relational import RelationalStores
    from server.documents.revisions import Revisions
    from server.hooks import Hooks
    from server.identity.audit import AuditTrail
    from server.identity.authentication import Authenticator
    from server.identity.rights import AccessControl
    from server.realtime.hub import Hub
    from server.realtime.registry import RoomRegistry


class ReviewCollab(Protocol):
    """The collaborators of comments and approvals: stores, rights, authentication, the
    audit trail, revisions, the live rooms, the hooks and the connection hub."""

    @property
    def content(self) -> ContentStore:
        """The derived content (the documents' records)."""
        ...

    @property
    def relational(self) -> RelationalStores:
        """Comments, approvals, users and notifications."""
        ...

    @property
    def access(self) -> AccessControl:
        """The rights function, with its cache."""
        ...

    @property
    def authn(self) -> Authenticator:
        """Users and their accounts."""
        ...

    @property
    def audit(self) -> AuditTrail:
        """The audit trail."""
        ...

    @property
    def revisions(self) -> Revisions:
        """The revisions of documents."""
        ...

    @property
    def registry(self) -> RoomRegistry:
        """The live rooms of this node."""
        ...

    @property
    def hooks(self) -> Hooks:
        """The app's hooks (comments take their socket events there)."""
        ...

    @property
    def hub(self) -> Hub:
        """This node's connections; events go out through it."""
        ...
