"""What the REST handlers need from the app, as a protocol: ``server.app.Collab`` satisfies
it structurally, so ``api/`` never imports the app that mounts it (the layer order of
``docs/architecture.md``). The handlers reach the feature services through it; the features
themselves never see the app (they are handed their own ports)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from persistence.content.ports import ContentStore
    from persistence.coordinator.ports import Coordinator
    from persistence.relational import RelationalStores
    from persistence.rooms.ports import RoomStore
    from server.admin.features import Features
    from server.admin.grants import GrantAdmin
    from server.admin.roles import RoleAdmin
    from server.admin.signins import SignIns
    from server.admin.stats import ActivityStats
    from server.admin.users import UserAdmin
    from server.cms.catalog import Cms
    from server.documents.revisions import Revisions
    from server.documents.snapshots import Snapshotter
    from server.documents.workflow import Workflow
    from server.hooks import Hooks
    from server.identity.audit import AuditTrail
    from server.identity.authentication import Authenticator, Principal
    from server.identity.rights import AccessControl
    from server.presence.locks import SectionLockService
    from server.presence.tracker import Presence
    from server.realtime.hub import Hub
    from server.realtime.registry import RoomRegistry
    from server.review.approvals import ApprovalService
    from server.review.comments import CommentService
    from server.review.notifications import Notifier
    from server.search.service import SearchService
    from server.settings import Settings


class ApiCollab(Protocol):
    """The app as the handlers see it (``collab_of(request)``): read-only members."""

    @property
    def settings(self) -> Settings: ...

    @property
    def cms(self) -> Cms:
        """The CMS services (projects, research, plans, opportunities, articles)."""
        ...

    @property
    def store(self) -> RoomStore:
        """The room store (journals and compacted states)."""
        ...

    @property
    def content(self) -> ContentStore:
        """The derived content (the MongoDB collections)."""
        ...

    @property
    def relational(self) -> RelationalStores:
        """Users, rights, audit, comments, approvals, notifications."""
        ...

    @property
    def coordinator(self) -> Coordinator:
        """The coordinator (Redis or in-process)."""
        ...

    @property
    def access(self) -> AccessControl:
        """The rights function, with its cache."""
        ...

    @property
    def authn(self) -> Authenticator:
        """Users, tokens and sessions."""
        ...

    @property
    def audit(self) -> AuditTrail: ...

    @property
    def hooks(self) -> Hooks: ...

    @property
    def hub(self) -> Hub:
        """This node's connections."""
        ...

    @property
    def registry(self) -> RoomRegistry:
        """This node's live rooms."""
        ...

    @property
    def snapshots(self) -> Snapshotter:
        """The snapshotter (journal -> derived content)."""
        ...

    @property
    def revisions(self) -> Revisions: ...

    @property
    def workflow(self) -> Workflow:
        """Documents' creation, status changes and per-document lock."""
        ...

    @property
    def search(self) -> SearchService:
        """Full-text search across the collections."""
        ...

    @property
    def comments(self) -> CommentService: ...

    @property
    def approvals(self) -> ApprovalService: ...

    @property
    def notifier(self) -> Notifier: ...

    @property
    def locks(self) -> SectionLockService: ...

    @property
    def presence(self) -> Presence: ...

    @property
    def users(self) -> UserAdmin:
        """Users administered (``/api/users``)."""
        ...

    @property
    def roles(self) -> RoleAdmin:
        """Roles administered (``/api/roles``)."""
        ...

    @property
    def grants(self) -> GrantAdmin:
        """Rows of the permissions table administered (``/api/permissions``)."""
        ...

    @property
    def features(self) -> Features:
        """Feature flags: the cached reads and the admins' changes."""
        ...

    @property
    def stats(self) -> ActivityStats:
        """Activity counters."""
        ...

    @property
    def signins(self) -> SignIns:
        """Sign-ins: ``last_login`` and the ``signins`` counter."""
        ...

    async def limit(self, principal: Principal, action: str) -> None:
        """Count one ``action`` of the user; RateLimited when over the limit."""
        ...
