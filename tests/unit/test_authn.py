"""Where credentials are found, and which Origins may call."""

from __future__ import annotations

import pytest

from server.errors import AuthError
from server.identity.authentication import find_token, origin_allowed


def test_token_places_in_order() -> None:
    headers = {"authorization": "Bearer H", "cookie": "collab_session=C"}
    assert find_token(headers, "token=Q", "collab_session") == ("H", "header")
    assert find_token({"cookie": "collab_session=C"}, "token=Q", "collab_session") == (
        "Q",
        "query",
    )
    assert find_token({"cookie": "a=1; collab_session=C"}, "", "collab_session") == (
        "C",
        "cookie",
    )
    assert find_token({}, "events=1", "collab_session") is None
    assert find_token({"cookie": "garbage;;=="}, "", "collab_session") is None


@pytest.mark.parametrize("value", ["Basic abc", "Bearer", "Bearer   ", "token abc"])
def test_a_malformed_authorization_header_is_refused(value: str) -> None:
    with pytest.raises(AuthError):
        find_token({"authorization": value}, "", "collab_session")


@pytest.mark.parametrize(
    ("origin", "host", "allowed", "expected"),
    [
        (None, "h:1", [], True),  # non-browser client
        ("http://h:1", "h:1", [], True),  # same origin
        ("http://H:1/", "h:1", [], True),
        ("https://evil.example", "h:1", [], False),
        ("null", "h:1", [], False),
        ("https://app.example.com", "h:1", ["https://app.example.com"], True),
        ("https://app.example.com", "h:1", ["https://app.example.com/"], True),
        ("https://evil.example", "h:1", ["*"], True),
        ("http://h:2", "h:1", [], False),
        ("http://h:1", None, [], False),
    ],
)
def test_origins(origin: str | None, host: str | None, allowed: list[str], expected: bool) -> None:
    assert origin_allowed(origin, host, allowed) is expected
