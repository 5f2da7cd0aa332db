"""What a client is told of an error: never a driver's error text."""

from __future__ import annotations

import pytest

from persistence.errors import (
    DocumentNotFound,
    StorageConflict,
    StorageCorrupted,
    StorageError,
    StorageUnavailable,
)
from server.errors import (
    STORAGE_DETAIL,
    RateLimited,
    ServiceUnavailable,
    TooManySockets,
    classify,
    close_reason,
    public_detail,
)

DRIVER_TEXT = "redis session get: Error 111 connecting to 10.0.0.7:6379. Connection refused."


@pytest.mark.parametrize(
    "exc",
    [
        StorageUnavailable(DRIVER_TEXT),
        StorageCorrupted("malformed row in crdt_states"),
        StorageError(DRIVER_TEXT),
        RuntimeError(DRIVER_TEXT),
    ],
)
def test_storage_and_unexpected_errors_carry_no_detail(exc: Exception) -> None:
    assert public_detail(exc) == ""
    assert close_reason(exc) == classify(exc).title
    assert "10.0.0.7" not in close_reason(exc)


def test_errors_about_the_request_keep_their_text() -> None:
    assert public_detail(DocumentNotFound("no document 'plan'")) == "no document 'plan'"
    assert public_detail(StorageConflict("the id is taken")) == "the id is taken"
    assert close_reason(RateLimited("retry in 3 s", 3.0)) == "too many requests: retry in 3 s"


def test_the_new_refusals_have_their_codes() -> None:
    assert classify(ServiceUnavailable("retry in 5 s")).close_code == 1013
    assert close_reason(ServiceUnavailable("retry in 5 s")) == "try again later: retry in 5 s"
    assert classify(TooManySockets("3 open")).close_code == 4430
    assert STORAGE_DETAIL
