"""The one error table: every domain, storage, protocol, crdt and auth error maps to a close
code, an HTTP problem and a socket error event, the same for both surfaces."""

from __future__ import annotations

import pytest

from crdt.errors import InvalidUpdate
from persistence.errors import (
    DocumentFrozen,
    DocumentNotFound,
    RecordNotFound,
    StorageConflict,
    StorageUnavailable,
    ValueTooLarge,
)
from protocol.errors import MalformedMessage
from server.errors import (
    STORAGE_DETAIL,
    UNEXPECTED,
    AuthError,
    ConflictError,
    ForbiddenError,
    InvalidError,
    MalformedRequestError,
    NotFoundError,
    PermissionDenied,
    RateLimited,
    RoomUnavailable,
    ServiceUnavailable,
    TooLargeError,
    UnavailableError,
    classify,
    close_reason,
    failure_event,
    mapped_types,
    problem,
)


@pytest.mark.parametrize(
    ("exc", "close_code", "status", "title"),
    [
        (NotFoundError("no comment 7", what="comment"), 4404, 404, "comment not found"),
        (ForbiddenError("only the author"), 4403, 403, "forbidden"),
        (PermissionDenied("suspended"), 4403, 403, "forbidden"),
        (
            ConflictError("it is approved", title="invalid transition"),
            4409,
            409,
            "invalid transition",
        ),
        (ConflictError("taken"), 4409, 409, "conflict"),
        (InvalidError("too long", field="content"), 4422, 422, "invalid request"),
        (
            MalformedRequestError("limit", title="invalid query parameter"),
            4400,
            400,
            "invalid query parameter",
        ),
        (TooLargeError("past 1 MiB"), 1009, 413, "too large"),
        (UnavailableError("locks are down"), 1013, 503, "try again later"),
        (ServiceUnavailable("retry in 5 s"), 1013, 503, "try again later"),
        (RoomUnavailable("cannot be read"), 1011, 503, "room unavailable"),
        (RateLimited("retry in 2 s", 2.0), 4429, 429, "too many requests"),
        (DocumentFrozen("in review"), 4409, 409, "document in review"),
        (DocumentNotFound("no document 'x'"), 4404, 404, "not found"),
        (RecordNotFound("no user"), 4404, 404, "not found"),
        (StorageConflict("duplicate"), 4409, 409, "conflict"),
        (ValueTooLarge("past the cap"), 1009, 413, "too large"),
        (StorageUnavailable("redis down"), 1011, 503, "storage unavailable"),
        (MalformedMessage("truncated"), 1002, 400, "malformed message"),
        (InvalidUpdate("bad bytes"), 1007, 400, "invalid CRDT update"),
        (AuthError("no token"), 4401, 401, "unauthenticated"),
    ],
)
def test_each_error_has_one_row(exc: Exception, close_code: int, status: int, title: str) -> None:
    assert classify(exc).close_code == close_code
    found = problem(exc)
    assert (found.status, found.title) == (status, title)
    event = failure_event(exc, "r1")
    assert event.type == "error"
    assert (event.get("code"), event.get("title"), event.get("requestId")) == (status, title, "r1")
    assert event.get("fatal") is False
    assert close_reason(exc).startswith(title)


def test_every_mapped_type_is_a_row() -> None:
    assert NotFoundError in mapped_types()
    assert all(isinstance(kind, type) for kind in mapped_types())
    assert classify(RuntimeError("boom")) is UNEXPECTED


def test_an_invalid_field_is_named_in_the_problem_and_the_event() -> None:
    exc = InvalidError("must not be blank", field="content")
    found = problem(exc)
    assert found.detail == "content: must not be blank"
    assert found.extra["errors"] == [{"field": "content", "message": "must not be blank"}]
    assert failure_event(exc, 3).get("errors") == found.extra["errors"]


def test_waiting_helps_says_how_long() -> None:
    assert problem(UnavailableError("down", 7.4)).headers["Retry-After"] == "7"
    assert problem(RateLimited("slow down", 2.2)).headers["Retry-After"] == "3"
    assert problem(RateLimited("slow down", 2.2)).extra["retryAfter"] == 2.2
    assert problem(AuthError("no token")).headers["WWW-Authenticate"] == "Bearer"


def test_a_store_failure_sends_no_driver_text() -> None:
    found = problem(StorageUnavailable("Error 111 connecting to 10.0.0.7:6379"))
    assert found.detail == STORAGE_DETAIL
    assert found.headers["Retry-After"] == "5"
    assert "10.0.0.7" not in str(failure_event(StorageUnavailable("10.0.0.7"), None).fields)


def test_an_unexpected_error_says_nothing() -> None:
    found = problem(RuntimeError("secret path /etc/x"))
    assert (found.status, found.title, found.detail) == (500, "internal error", "")


def test_a_conflict_carries_its_extra_fields() -> None:
    exc = ConflictError("pending", title="approval pending", extra={"pendingRequest": "r"})
    assert problem(exc).extra == {"pendingRequest": "r"}
