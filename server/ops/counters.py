"""Plain counters for what no component counted yet: socket closes by code, refusals by
status and title. One dictionary increment where a socket closes or a request is refused,
never per frame; read by :mod:`server.ops.metrics` at scrape time. Process-wide (every app
of the process adds to them), like the process's CPU and memory."""

from __future__ import annotations

from collections import Counter

from server.errors import classify, title_of

closes: Counter[int] = Counter()  # sockets this process closed, by close code
refusals: Counter[tuple[int, str]] = Counter()  # errors answered, by HTTP status and title


def refused(exc: BaseException) -> None:
    """Count one request or socket refused (or closed) because of ``exc``."""
    refusals[(classify(exc).http_status, title_of(exc))] += 1


def refused_with(status: int, title: str) -> None:
    """Count one refusal decided without an exception (a WebSocket upgrade refused)."""
    refusals[(status, title)] += 1
