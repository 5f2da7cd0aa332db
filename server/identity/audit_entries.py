"""The values of audit entries: the actions audited, the data accesses logged, and the
request context (:class:`AuditContext`) that builds entries carrying who acts, from where."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Final

from persistence.relational.records import AuditEntry, DataAccessEntry, check_ip

# The actions the server audits (``audit_logs.action``) and the data accesses it logs
# (``data_access_logs.access_type``); docs/audit.md says when each is recorded.
AUDITED_ACTIONS: Final = (
    "create",
    "update",
    "delete",
    "status_change",
    "permission_change",
    "restore",
    "revision_save",
    "export",
    "lock",
    "unlock",
    "comment",
    "approval",
    "edit",
    "join",
    "denied",
    "login",
    "logout",
)
ACCESS_TYPES: Final = ("join", "read", "export")

MAX_ERROR_MESSAGE: Final = 1000


@dataclass(frozen=True, slots=True)
class AuditContext:
    """Who acts, from where: builds entries that carry the request's context.

    An IP address that does not parse is dropped (None) rather than failing the request.
    """

    user_id: uuid.UUID
    ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None  # carried into each entry's changes as "requestId"

    def __post_init__(self) -> None:
        try:
            ip = check_ip(self.ip)
        except ValueError:
            ip = None
        object.__setattr__(self, "ip", ip)

    def entry(
        self,
        action: str,
        resource_type: str,
        resource_id: str | None = None,
        changes: Any = None,
        *,
        error: str | None = None,
    ) -> AuditEntry:
        """An audit entry: status ``success``, or ``failure`` with ``error`` as its message."""
        message = None
        if error is not None:
            message = error.replace("\0", "")[:MAX_ERROR_MESSAGE] or "failed"
        if self.request_id is not None:
            if changes is None:
                changes = {"requestId": self.request_id}
            elif isinstance(changes, dict) and "requestId" not in changes:
                changes = {**changes, "requestId": self.request_id}
        return AuditEntry(
            user_id=self.user_id,
            action=action,
            resource_type=resource_type,
            resource_id=resource_id,
            changes=changes,
            ip_address=self.ip,
            user_agent=self.user_agent,
            status="success" if error is None else "failure",
            error_message=message,
        )

    def access(
        self, document_id: str, access_type: str, sensitivity: str | None = None
    ) -> DataAccessEntry:
        """A data-access entry (``join``, ``read``, ``export``) of this user, with the
        request id."""
        return DataAccessEntry(
            user_id=self.user_id,
            document_id=document_id,
            access_type=access_type,
            data_sensitivity=sensitivity,
            request_id=self.request_id,
        )
