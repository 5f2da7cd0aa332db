"""What the administration services are handed by the wiring (``server/app.py``)."""

from __future__ import annotations

from dataclasses import dataclass

from persistence.relational import PermissionStore, RoleStore, UserStore
from server.identity.audit import AuditTrail
from server.identity.authentication import Authenticator
from server.identity.rights import AccessControl
from server.review.notifications import Notifier


@dataclass(frozen=True, slots=True)
class AdminPorts:
    """The stores the administration changes, the caches it must keep true (the
    authenticator's users, the rights function's roles and grants), the audit trail and the
    notifier (grants tell the user)."""

    users: UserStore
    roles: RoleStore
    permissions: PermissionStore
    authn: Authenticator
    access: AccessControl
    audit: AuditTrail
    notifier: Notifier
