"""Plain counters for what no component counted yet: socket closes by code (by the server,
and by clients), refusals by status and title, and the sockets' traffic. A dictionary
increment where a socket closes or a request is refused; for the traffic, an integer added
to a slot where a message is already handled (:class:`Traffic`). Read by
:mod:`server.ops.metrics` at scrape time. Process-wide (every app of the process adds to
them), like the process's CPU and memory."""

from __future__ import annotations

from collections import Counter

from server.errors import classify, title_of

closes: Counter[int] = Counter()  # sockets this process closed, by close code
# Sockets the client closed (its close frame's code; 1006 when the connection was lost
# without one), by code.
client_closes: Counter[int] = Counter()
refusals: Counter[tuple[int, str]] = Counter()  # errors answered, by HTTP status and title
auth_failures: Counter[str] = Counter()  # 401 and 403, by reason (a short fixed label)

# What an authentication error's text starts with -> its reason label (few, fixed: a label
# per message would let clients grow the metric without bound).
_AUTH_REASONS = (
    ("token expired", "expired"),
    ("missing or oversized token", "missing_token"),
    ("authentication required", "missing_token"),
    ("malformed token", "malformed_token"),
    ("invalid token", "invalid_token"),
    ("token algorithm", "algorithm"),
    ("no key of the identity provider", "unknown_key"),
    ("the identity provider's keys", "jwks_unavailable"),
    ("the token's user does not exist", "unknown_user"),
    ("this session has ended", "session_ended"),
    ("the sessions of this user were revoked", "revoked"),
    ("your sessions were revoked", "revoked"),
    ("user account is", "inactive_user"),
    ("the authorization header", "bad_header"),
    ("origin", "origin"),
)


class Traffic:
    """What the WebSockets carried: messages received, and payload bytes in and out (the
    y-protocols messages, without the WebSocket framing). Slots, so that counting is one
    attribute store where the message is handled anyway."""

    __slots__ = ("bytes_in", "bytes_out", "frames_in")

    def __init__(self) -> None:
        self.frames_in = 0  # complete messages received (text ones too, which are refused)
        self.bytes_in = 0
        self.bytes_out = 0  # written (or queued) to a client, each recipient counted


traffic = Traffic()


def client_closed(code: int | None) -> None:
    """Count a socket the client closed (``code`` None: lost without a close frame)."""
    client_closes[1006 if code is None else code] += 1


def auth_reason(status: int, title: str, detail: str) -> str:
    """The reason label of a 401 or 403 refusal."""
    text = detail.lower()
    for prefix, reason in _AUTH_REASONS:
        if text.startswith(prefix):
            return reason
    return "forbidden" if status == 403 else "other"


def refused(exc: BaseException) -> None:
    """Count one request or socket refused (or closed) because of ``exc``."""
    refused_with(classify(exc).http_status, title_of(exc), str(exc))


def refused_with(status: int, title: str, detail: str = "") -> None:
    """Count one refusal (a WebSocket upgrade refused before it happens has no exception)."""
    refusals[(status, title)] += 1
    if status in (401, 403):
        auth_failures[auth_reason(status, title, detail)] += 1
