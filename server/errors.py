"""One table from error types to WebSocket close codes and HTTP problem responses.

Close codes follow RFC 6455 section 7.4.1 (1000-1015) and the 4000-4999 private range for
application refusals, mirroring the HTTP status they correspond to (4401, 4403, 4404).
"""

from __future__ import annotations

from dataclasses import dataclass

from crdt.errors import InvalidUpdate
from crdt.ids import InvalidRoomName
from persistence.errors import (
    DocumentFrozen,
    DocumentNotFound,
    DocumentTooLarge,
    RecordNotFound,
    StorageConflict,
    StorageError,
    ValueTooLarge,
)
from protocol.errors import MalformedMessage, MessageTooLarge
from protocol.jsontext import JsonTooDeep
from server.identity.tokens import AuthError


class CollabError(Exception):
    """Base class of errors the server raises on purpose."""


class UnsupportedData(CollabError):
    """A text frame where only binary y-protocols frames are accepted."""


class RoomNotFound(CollabError):
    """The room does not exist and may not be created by this connection."""


class RoomUnavailable(CollabError):
    """The room's stored state could not be read: refuse rather than start from empty."""


class RoomUnavailableForNow(RoomUnavailable):
    """The room's stored state cannot be read now (its storage is unavailable): retrying
    in a few seconds may succeed (close 1013)."""


class SlowConsumer(CollabError):
    """The client fell further behind than the configured buffer allows."""


class Overloaded(CollabError):
    """The server cannot take this message now (a room rebuilding has too much queued)."""


class ServerShuttingDown(CollabError):
    """The server is restarting; reconnect later."""


class RateLimited(CollabError):
    """Too many actions of one kind by one user; ``retry_after`` seconds until allowed."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TooManySockets(CollabError):
    """The user already holds as many open sockets on this node as allowed."""


class ServiceUnavailable(CollabError):
    """A service this needs (the coordinator: Redis) is down and nothing local can stand in
    for it; ``retry_after`` seconds is a reasonable wait (close 1013, HTTP 503)."""

    def __init__(self, message: str, retry_after: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermissionDenied(CollabError):
    """The user is known but lacks the right this needs (HTTP 403, close 4403)."""


@dataclass(frozen=True, slots=True)
class ErrorKind:
    close_code: int
    http_status: int
    title: str


# Order matters: the first matching class wins (subclasses before their bases).
_TABLE: tuple[tuple[type[BaseException], ErrorKind], ...] = (
    (MessageTooLarge, ErrorKind(1009, 413, "message too large")),
    (JsonTooDeep, ErrorKind(1002, 422, "JSON nested too deeply")),
    (MalformedMessage, ErrorKind(1002, 400, "malformed message")),
    (InvalidUpdate, ErrorKind(1007, 400, "invalid CRDT update")),
    (UnsupportedData, ErrorKind(1003, 400, "unsupported data")),
    (InvalidRoomName, ErrorKind(4400, 400, "invalid room name")),
    (AuthError, ErrorKind(4401, 401, "unauthenticated")),
    (PermissionDenied, ErrorKind(4403, 403, "forbidden")),
    (RateLimited, ErrorKind(4429, 429, "too many requests")),
    (TooManySockets, ErrorKind(4430, 429, "too many open sockets")),
    (RoomNotFound, ErrorKind(4404, 404, "room not found")),
    (RoomUnavailableForNow, ErrorKind(1013, 503, "try again later")),
    (RoomUnavailable, ErrorKind(1011, 503, "room unavailable")),
    (DocumentFrozen, ErrorKind(4409, 409, "document in review")),
    (ServiceUnavailable, ErrorKind(1013, 503, "try again later")),
    (DocumentTooLarge, ErrorKind(1009, 413, "document too large")),
    (StorageError, ErrorKind(1011, 503, "storage unavailable")),
    (SlowConsumer, ErrorKind(1013, 503, "client too slow")),
    (Overloaded, ErrorKind(1013, 503, "overloaded")),
    (ServerShuttingDown, ErrorKind(1012, 503, "server restarting")),
)

UNEXPECTED = ErrorKind(1011, 500, "internal error")


def classify(exc: BaseException) -> ErrorKind:
    """The close code and HTTP status for an exception; unexpected ones map to 1011 / 500."""
    for kind, result in _TABLE:
        if isinstance(exc, kind):
            return result
    return UNEXPECTED


# What a client is told of a storage failure: its text names drivers, hosts and keys.
STORAGE_DETAIL = "a storage service is unavailable; retry shortly"

# Storage errors whose text is about the request (not found, conflict, too large): sent.
_TOLD = (DocumentNotFound, RecordNotFound, StorageConflict, ValueTooLarge, DocumentTooLarge)


def public_detail(exc: BaseException) -> str:
    """The detail of ``exc`` that may be sent to a client: its text for the errors the
    server raises on purpose and the storage errors about the request, nothing (``""``) for
    other storage errors and unexpected ones (their text stays in the log)."""
    if isinstance(exc, StorageError) and not isinstance(exc, _TOLD):
        return ""
    if classify(exc) is UNEXPECTED:
        return ""
    return str(exc)


def close_reason(exc: BaseException) -> str:
    """A close reason safe to send: the title plus :func:`public_detail`.

    RFC 6455 limits the close frame payload to 125 bytes, 2 of them the code.
    """
    kind = classify(exc)
    detail = public_detail(exc)
    reason = f"{kind.title}: {detail}" if detail else kind.title
    return reason.encode("utf-8")[:123].decode("utf-8", "ignore")
