"""The values the relational ports take and return, and the checks every adapter shares.

Everything here is pure (no I/O). Input is checked when a value is built, so an adapter never
sends the database something one backend would take and the other refuse: strings longer
than their column, NUL characters (PostgreSQL refuses them in text), naive datetimes, JSON
that is not JSON. A check that fails raises ValueError.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import ipaddress
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

T = TypeVar("T")

MAX_PAGE_SIZE = 200
USER_STATUSES = ("active", "invited", "suspended", "deactivated")
PERMISSION_LEVELS = ("view", "comment", "edit", "approve", "admin")
# A grant on (resource_type, ANY_RESOURCE) applies to every resource of that type.
ANY_RESOURCE = "*"
USER_SORTS = ("email", "name", "created_at")
MAX_USER_AGENT = 500


class Unset(enum.Enum):
    """The type of :data:`UNSET`: "leave this field as it is" in a partial update."""

    UNSET = "UNSET"


UNSET = Unset.UNSET


def utc_now() -> datetime:
    return datetime.now(UTC)


# -- checks ----------------------------------------------------------------------------------


def check_text(value: object, what: str, max_length: int) -> str:
    """A non-empty string of at most ``max_length`` characters, without NUL."""
    if not isinstance(value, str) or not 0 < len(value) <= max_length or "\0" in value:
        raise ValueError(f"{what} must be a string of 1..{max_length} characters without NUL")
    return value


def check_optional_text(value: object, what: str, max_length: int) -> str | None:
    return None if value is None else check_text(value, what, max_length)


def check_uuid(value: object, what: str) -> uuid.UUID:
    if not isinstance(value, uuid.UUID):
        raise ValueError(f"{what} must be a uuid.UUID, not {type(value).__name__}")
    return value


def check_moment(value: object, what: str) -> datetime:
    """An aware datetime, converted to UTC (microseconds kept: both backends store them)."""
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime")
    return value.astimezone(UTC)


def check_optional_moment(value: object, what: str) -> datetime | None:
    return None if value is None else check_moment(value, what)


def check_email(value: object) -> str:
    """Stripped and lowercased: ``Alice@Example.com`` and ``alice@example.com`` are one user."""
    if not isinstance(value, str):
        raise ValueError("email must be a string")
    email = check_text(value.strip().lower(), "email", 255)
    local, at, domain = email.partition("@")
    if not at or not local or not domain or "@" in domain or any(c.isspace() for c in email):
        raise ValueError(f"{value!r} is not an email address")
    return email


def check_status(value: object) -> str:
    if value not in USER_STATUSES:
        raise ValueError(f"status must be one of {USER_STATUSES}")
    assert isinstance(value, str)
    return value


def check_level(value: object) -> str:
    if value not in PERMISSION_LEVELS:
        raise ValueError(f"permission level must be one of {PERMISSION_LEVELS}")
    assert isinstance(value, str)
    return value


def check_permission_strings(values: Iterable[str]) -> tuple[str, ...]:
    """Permission strings of a role, each once, in the order first given."""
    if isinstance(values, str):
        raise ValueError("permissions must be a collection of strings, not one string")
    checked = [check_text(value, "permission", 100) for value in values]
    return tuple(dict.fromkeys(checked))


def check_json(value: object, what: str) -> object:
    """A JSON value (dict/list/str/int/float/bool/None, finite floats, string keys)."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be JSON: {exc}") from None
    if _has_nul(value):
        raise ValueError(f"{what} must not contain NUL characters")
    return value


def _has_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\0" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(item) for item in value)
    return False


def check_ip(value: object) -> str | None:
    """An IPv4 or IPv6 address in canonical text form (what PostgreSQL's INET gives back)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("ip_address must be a string")
    canonical = _canonical_ip(value.strip())
    if canonical is None:
        raise ValueError(f"{value!r} is not an IP address")
    return canonical


@functools.lru_cache(maxsize=4096)
def _canonical_ip(text: str) -> str | None:
    """Cached: every row and context of a connection's life parses the same address."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def check_limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"limit must be an int in 1..{MAX_PAGE_SIZE}")
    return limit


def check_offset(offset: object) -> int:
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError("offset must be an int >= 0")
    return offset


def _set(instance: object, name: str, value: object) -> None:
    object.__setattr__(instance, name, value)


# -- pages -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of rows and how many rows match in all (ignoring limit and offset)."""

    items: list[T]
    total: int


@dataclass(frozen=True, slots=True)
class CursorPage(Generic[T]):
    """One page of a log, newest first; ``next_cursor`` (None on the last page) gets the next.

    Keyset pagination: rows appended while a reader pages through never shift its pages.
    """

    items: list[T]
    next_cursor: str | None


def encode_cursor(moment: datetime, row_id: uuid.UUID) -> str:
    raw = f"{moment.astimezone(UTC).isoformat()}|{row_id.hex}".encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The position a cursor names; ValueError for anything :func:`encode_cursor` did not make."""
    try:
        moment_text, _, id_hex = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        moment, row_id = datetime.fromisoformat(moment_text), uuid.UUID(hex=id_hex)
    except (ValueError, binascii.Error, UnicodeError) as exc:
        raise ValueError(f"invalid cursor: {exc}") from None
    return check_moment(moment, "cursor"), row_id


# -- users -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewUser:
    """A user to add. ``email`` is normalised (stripped, lowercased)."""

    email: str
    name: str
    role: str
    department: str | None = None
    status: str = "active"
    id: uuid.UUID = field(default_factory=uuid.uuid4)

    def __post_init__(self) -> None:
        _set(self, "email", check_email(self.email))
        check_text(self.name, "name", 255)
        check_text(self.role, "role", 50)
        check_optional_text(self.department, "department", 100)
        check_status(self.status)
        check_uuid(self.id, "id")


@dataclass(frozen=True, slots=True)
class User:
    id: uuid.UUID
    email: str
    name: str
    role: str
    department: str | None
    status: str
    last_login: datetime | None
    suspended_at: datetime | None  # set while status is "suspended", None otherwise
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class UserChanges:
    """A partial update of a user: the fields left :data:`UNSET` keep their value."""

    name: str | Unset = UNSET
    role: str | Unset = UNSET
    status: str | Unset = UNSET
    department: str | Unset | None = UNSET

    def __post_init__(self) -> None:
        if not isinstance(self.name, Unset):
            check_text(self.name, "name", 255)
        if not isinstance(self.role, Unset):
            check_text(self.role, "role", 50)
        if not isinstance(self.status, Unset):
            check_status(self.status)
        if not isinstance(self.department, Unset):
            check_optional_text(self.department, "department", 100)
        if not self.values():
            raise ValueError("nothing to change")

    def values(self) -> dict[str, Any]:
        """The fields to set (column name -> value)."""
        names = ("name", "role", "status", "department")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not UNSET}


@dataclass(frozen=True, slots=True)
class UserQuery:
    """A page of users. Each filter given is an exact match; filters are ANDed.

    Sorted on ``sort`` (email, name or created_at), the id breaking ties; ``limit`` 1..200.
    """

    role: str | None = None
    status: str | None = None
    department: str | None = None
    sort: str = "email"
    descending: bool = False
    limit: int = 50
    offset: int = 0

    def __post_init__(self) -> None:
        check_optional_text(self.role, "role", 255)
        check_optional_text(self.status, "status", 255)
        check_optional_text(self.department, "department", 255)
        if self.sort not in USER_SORTS:
            raise ValueError(f"users are sorted on one of {USER_SORTS}")
        check_limit(self.limit)
        check_offset(self.offset)


# -- roles -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Role:
    id: uuid.UUID
    name: str
    description: str | None
    permissions: tuple[str, ...]
    created_at: datetime


# -- permissions -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Grant:
    """A user's permission on one resource (``resource_id`` :data:`ANY_RESOURCE`: all of a type)."""

    id: uuid.UUID
    user_id: uuid.UUID
    resource_type: str
    resource_id: str
    permission_level: str
    granted_by: uuid.UUID | None
    granted_at: datetime
    expires_at: datetime | None

    def active_at(self, now: datetime) -> bool:
        """Unexpired at ``now``: a grant expiring exactly at ``now`` no longer applies."""
        return self.expires_at is None or self.expires_at > now


# -- audit -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One ``audit_logs`` row: who did what to which resource, and how it went.

    ``changes`` is any JSON value; ``ip_address`` is normalised to its canonical text form;
    ``user_agent`` is cut to 500 characters (a client's header never makes logging fail).
    """

    user_id: uuid.UUID
    action: str
    resource_type: str
    resource_id: str | None = None
    changes: Any = None
    ip_address: str | None = None
    user_agent: str | None = None
    status: str = "success"
    error_message: str | None = None
    created_at: datetime = field(default_factory=utc_now)
    id: uuid.UUID = field(default_factory=uuid.uuid4)

    def __post_init__(self) -> None:
        check_uuid(self.user_id, "user_id")
        check_text(self.action, "action", 100)
        check_text(self.resource_type, "resource_type", 100)
        check_optional_text(self.resource_id, "resource_id", 255)
        check_json(self.changes, "changes")
        _set(self, "ip_address", check_ip(self.ip_address))
        if self.user_agent is not None:
            if not isinstance(self.user_agent, str):
                raise ValueError("user_agent must be a string")
            agent = self.user_agent.replace("\0", "")[:MAX_USER_AGENT]
            _set(self, "user_agent", agent or None)
        check_text(self.status, "status", 50)
        if self.error_message is not None:
            check_text(self.error_message, "error_message", 1_000_000)
        _set(self, "created_at", check_moment(self.created_at, "created_at"))
        check_uuid(self.id, "id")


@dataclass(frozen=True, slots=True)
class DataAccessEntry:
    """One ``data_access_logs`` row: a user viewed, downloaded or exported a document."""

    user_id: uuid.UUID
    document_id: str
    access_type: str
    data_sensitivity: str | None = None
    accessed_at: datetime = field(default_factory=utc_now)
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    request_id: str | None = None  # the X-Request-ID of the request that read it

    def __post_init__(self) -> None:
        check_uuid(self.user_id, "user_id")
        check_text(self.document_id, "document_id", 255)
        check_text(self.access_type, "access_type", 50)
        check_optional_text(self.data_sensitivity, "data_sensitivity", 50)
        check_optional_text(self.request_id, "request_id", 128)
        _set(self, "accessed_at", check_moment(self.accessed_at, "accessed_at"))
        check_uuid(self.id, "id")


def _check_range(since: datetime | None, until: datetime | None) -> None:
    check_optional_moment(since, "since")
    check_optional_moment(until, "until")
    if since is not None and until is not None and since > until:
        raise ValueError("since must not be after until")


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Audit rows, newest first. Filters given are exact matches, ANDed.

    ``since`` is inclusive and ``until`` exclusive (``since <= created_at < until``).
    """

    user_id: uuid.UUID | None = None
    action: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 50
    cursor: str | None = None

    def __post_init__(self) -> None:
        if self.user_id is not None:
            check_uuid(self.user_id, "user_id")
        check_optional_text(self.action, "action", 255)
        check_optional_text(self.resource_type, "resource_type", 255)
        check_optional_text(self.resource_id, "resource_id", 255)
        _check_range(self.since, self.until)
        check_limit(self.limit)
        if self.cursor is not None:
            decode_cursor(self.cursor)


@dataclass(frozen=True, slots=True)
class AccessQuery:
    """Data-access rows, newest first; same conventions as :class:`AuditQuery`."""

    user_id: uuid.UUID | None = None
    document_id: str | None = None
    access_type: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 50
    cursor: str | None = None

    def __post_init__(self) -> None:
        if self.user_id is not None:
            check_uuid(self.user_id, "user_id")
        check_optional_text(self.document_id, "document_id", 255)
        check_optional_text(self.access_type, "access_type", 255)
        _check_range(self.since, self.until)
        check_limit(self.limit)
        if self.cursor is not None:
            decode_cursor(self.cursor)
