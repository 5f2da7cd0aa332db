"""One table from error types to WebSocket close codes, HTTP problems and socket error events.

Domain code (everything outside ``server/api/`` and the wiring) raises the typed errors of
this module (:class:`NotFoundError`, :class:`ForbiddenError`, :class:`ConflictError`,
:class:`InvalidError`, :class:`MalformedRequestError`, :class:`TooLargeError`,
:class:`UnavailableError`, :class:`RateLimited`...) or lets the storage, protocol, CRDT and
authentication errors it does not handle through. The edge maps each, once, through
:data:`TABLE`: the REST handlers (:mod:`server.api.common`) with :func:`problem`, a socket
close with :func:`classify` and :func:`close_reason`, a non-fatal socket ``error`` event with
:func:`failure_event`.

Close codes follow RFC 6455 section 7.4.1 (1000-1015) and the 4000-4999 private range for
application refusals, mirroring the HTTP status they correspond to (4401, 4403, 4404).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import ValidationError

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
from protocol.events import AppEvent
from protocol.jsontext import JsonTooDeep


class AuthError(Exception):
    """The credentials are missing, malformed, forged or expired (HTTP 401, close 4401).

    Raised by token verification (``server/identity/tokens.py``, which re-exports it);
    defined here, at the bottom of the server's layers, so the error table needs no import
    of ``identity/``."""


class CollabError(Exception):
    """Base class of errors the server raises on purpose."""


class DomainError(CollabError):
    """A refusal by domain code, said in its own terms: whose fault and what kind.

    ``detail`` is sent to the client; ``title``, when given, replaces the table's short
    title (``"comment not found"``); ``extra`` holds fields added to the problem+json body
    and the socket ``error`` event (``{"pendingRequest": ...}``).
    """

    def __init__(
        self,
        detail: str = "",
        *,
        title: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.title = title
        self.extra: dict[str, Any] = dict(extra or {})


class NotFoundError(DomainError):
    """What was addressed does not exist, or the caller may not know it does (404, 4404).

    ``what`` names it in the title: ``NotFoundError("no comment 7", what="comment")`` is
    titled "comment not found".
    """

    def __init__(
        self, detail: str = "", *, what: str = "resource", extra: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(detail, title=f"{what} not found", extra=extra)


class ForbiddenError(DomainError):
    """The caller is known but lacks the right this needs (403, 4403)."""


class PermissionDenied(ForbiddenError):
    """The user is known but lacks the right this needs (HTTP 403, close 4403)."""


class ConflictError(DomainError):
    """The request contradicts the current state: a transition not allowed from here, an id
    taken, a pending request (409, 4409). ``title`` says which."""


class InvalidError(DomainError):
    """The request is well-formed but its content is refused (422, 4422).

    With ``field``, the detail is ``"field: message"`` and the problem lists the field in
    ``errors`` (``[{"field", "message"}]``), as request-body validation does.
    """

    def __init__(self, message: str, *, field: str | None = None, title: str | None = None) -> None:
        if field is None:
            super().__init__(message, title=title)
        else:
            super().__init__(
                f"{field}: {message}",
                title=title,
                extra={"errors": [{"field": field, "message": message}]},
            )
        self.field = field


def invalid_body(exc: ValidationError) -> InvalidError:
    """A request body that does not fit its model, as one :class:`InvalidError` listing
    every field error (the detail summarises the first five)."""
    errors = [
        {"field": ".".join(str(p) for p in error["loc"]) or "(body)", "message": error["msg"]}
        for error in exc.errors(include_url=False, include_input=False)
    ]
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
    found = InvalidError(summary)
    found.extra["errors"] = errors
    return found


class MalformedRequestError(DomainError):
    """A parameter of the request cannot be read as what it must be (400, 4400)."""


class TooLargeError(DomainError):
    """The request or what it would make exceeds a size limit (413, 1009)."""


class UnavailableError(DomainError):
    """Something this needs is unavailable for now; ``retry_after`` seconds is a reasonable
    wait (503 with Retry-After, close 1013)."""

    def __init__(
        self,
        detail: str = "",
        retry_after: float = 5.0,
        *,
        title: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail, title=title, extra=extra)
        self.retry_after = retry_after


class UnsupportedData(CollabError):
    """A text frame where only binary y-protocols frames are accepted."""


class RoomNotFound(CollabError):
    """The room does not exist and may not be created by this connection."""


class RoomUnavailable(UnavailableError):
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


class RateLimited(DomainError):
    """Too many actions of one kind by one user; ``retry_after`` seconds until allowed."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, extra={"retryAfter": retry_after})
        self.retry_after = retry_after


class TooManySockets(CollabError):
    """The user already holds as many open sockets on this node as allowed."""


class ServiceUnavailable(UnavailableError):
    """A service this needs (the coordinator: Redis) is down and nothing local can stand in
    for it; ``retry_after`` seconds is a reasonable wait (close 1013, HTTP 503)."""


@dataclass(frozen=True, slots=True)
class ErrorKind:
    close_code: int
    http_status: int
    title: str


# Order matters: the first matching class wins (subclasses before their bases).
TABLE: Final[tuple[tuple[type[BaseException], ErrorKind], ...]] = (
    # protocol and CRDT: the remote's bytes
    (MessageTooLarge, ErrorKind(1009, 413, "message too large")),
    (JsonTooDeep, ErrorKind(1002, 422, "JSON nested too deeply")),
    (MalformedMessage, ErrorKind(1002, 400, "malformed message")),
    (InvalidUpdate, ErrorKind(1007, 400, "invalid CRDT update")),
    (UnsupportedData, ErrorKind(1003, 400, "unsupported data")),
    (InvalidRoomName, ErrorKind(4400, 400, "invalid room name")),
    # who is asking
    (AuthError, ErrorKind(4401, 401, "unauthenticated")),
    (ForbiddenError, ErrorKind(4403, 403, "forbidden")),
    (RateLimited, ErrorKind(4429, 429, "too many requests")),
    (TooManySockets, ErrorKind(4430, 429, "too many open sockets")),
    # what is asked
    (RoomNotFound, ErrorKind(4404, 404, "room not found")),
    (NotFoundError, ErrorKind(4404, 404, "not found")),
    (ConflictError, ErrorKind(4409, 409, "conflict")),
    (InvalidError, ErrorKind(4422, 422, "invalid request")),
    (MalformedRequestError, ErrorKind(4400, 400, "malformed request")),
    (TooLargeError, ErrorKind(1009, 413, "too large")),
    # storage: the request's own fault first, then the store's
    (DocumentFrozen, ErrorKind(4409, 409, "document in review")),
    (DocumentNotFound, ErrorKind(4404, 404, "not found")),
    (RecordNotFound, ErrorKind(4404, 404, "not found")),
    (StorageConflict, ErrorKind(4409, 409, "conflict")),
    (ValueTooLarge, ErrorKind(1009, 413, "too large")),
    (DocumentTooLarge, ErrorKind(1009, 413, "document too large")),
    (StorageError, ErrorKind(1011, 503, "storage unavailable")),
    # the server's state
    (RoomUnavailableForNow, ErrorKind(1013, 503, "try again later")),
    (RoomUnavailable, ErrorKind(1011, 503, "room unavailable")),
    (UnavailableError, ErrorKind(1013, 503, "try again later")),
    (SlowConsumer, ErrorKind(1013, 503, "client too slow")),
    (Overloaded, ErrorKind(1013, 503, "overloaded")),
    (ServerShuttingDown, ErrorKind(1012, 503, "server restarting")),
)

UNEXPECTED = ErrorKind(1011, 500, "internal error")

# Seconds a client is told to wait after a storage failure (Retry-After).
STORAGE_RETRY_AFTER: Final = 5


def classify(exc: BaseException) -> ErrorKind:
    """The close code and HTTP status for an exception; unexpected ones map to 1011 / 500."""
    for kind, result in TABLE:
        if isinstance(exc, kind):
            return result
    return UNEXPECTED


def mapped_types() -> tuple[type[BaseException], ...]:
    """Every error type :data:`TABLE` maps (the REST edge installs one handler for each)."""
    return tuple(kind for kind, _ in TABLE)


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
    if isinstance(exc, DomainError):
        return exc.detail
    return str(exc)


def title_of(exc: BaseException) -> str:
    """The short title for ``exc``: its own when a domain error names one, else the table's."""
    if isinstance(exc, DomainError) and exc.title:
        return exc.title
    return classify(exc).title


def close_reason(exc: BaseException) -> str:
    """A close reason safe to send: the title plus :func:`public_detail`.

    RFC 6455 limits the close frame payload to 125 bytes, 2 of them the code.
    """
    title = title_of(exc)
    detail = public_detail(exc)
    reason = f"{title}: {detail}" if detail else title
    return reason.encode("utf-8")[:123].decode("utf-8", "ignore")


@dataclass(frozen=True, slots=True)
class Problem:
    """What a client is told of an error over HTTP (RFC 9457) or in a socket ``error``
    event: no framework types, the edge renders it."""

    status: int
    title: str
    detail: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)


def problem(exc: BaseException) -> Problem:
    """The problem for ``exc`` through :data:`TABLE`: its status, title, the detail that
    may be sent (:data:`STORAGE_DETAIL` for a store's failure, nothing for an unexpected
    error), Retry-After when waiting helps, WWW-Authenticate for a missing identity."""
    kind = classify(exc)
    headers: dict[str, str] = {}
    extra: dict[str, Any] = {}
    detail = public_detail(exc)
    if isinstance(exc, DomainError):
        extra.update(exc.extra)
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(max(1, round(exc.retry_after + 0.5)))
    elif isinstance(exc, UnavailableError):
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    elif isinstance(exc, AuthError):
        headers["WWW-Authenticate"] = "Bearer"
    elif isinstance(exc, StorageError) and kind.http_status == 503:
        detail = STORAGE_DETAIL
        headers["Retry-After"] = str(STORAGE_RETRY_AFTER)
    return Problem(kind.http_status, title_of(exc), detail, headers, extra)


def failure_event(exc: BaseException, request_id: str | int | None) -> AppEvent:
    """The non-fatal socket ``error`` event answering a request that failed with ``exc``
    (``code`` is the HTTP status, as over REST; the connection stays open)."""
    found = problem(exc)
    fields: dict[str, Any] = {
        "code": found.status,
        "title": found.title,
        "detail": found.detail,
        "fatal": False,
        "requestId": request_id,
    }
    if "errors" in found.extra:
        fields["errors"] = found.extra["errors"]
    return AppEvent("error", fields)
