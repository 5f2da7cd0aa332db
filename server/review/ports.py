"""What the review features (comments, approvals) work with, handed to them by the wiring
(``server/app.py``): the stores, rights, users, the audit trail, the document workflow,
revisions, the live rooms, the connection hub and the notifier. Nothing here is the app."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from persistence.content.ports import ContentStore
    from persistence.relational import RelationalStores
    from server.documents.revisions import Revisions
    from server.documents.workflow import Workflow
    from server.identity.audit import AuditTrail
    from server.identity.authentication import Authenticator
    from server.identity.rights import AccessControl
    from server.realtime.hub import Hub
    from server.realtime.registry import RoomRegistry
    from server.review.notifications import Notifier


@dataclass(frozen=True, slots=True)
class ReviewPorts:
    """The collaborators of comments and approvals."""

    content: ContentStore  # the documents' records
    relational: RelationalStores  # comments, approvals, users
    access: AccessControl  # the rights function, with its cache
    authn: Authenticator  # users and their accounts
    audit: AuditTrail
    workflow: Workflow  # the document lock and status changes (approval decisions)
    revisions: Revisions
    registry: RoomRegistry  # the live rooms (comment anchors on the live text)
    hub: Hub  # this node's connections: events go out through it
    notifier: Notifier
    # Counts an activity (``"comments"``) in memory (server.admin.stats); no I/O.
    counted: Callable[[str], None] = lambda kind: None
