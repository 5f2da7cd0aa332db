"""Logging setup: plain text (the default) or one JSON object per line.

``COLLAB_LOG_FORMAT=json`` writes every record as a JSON object on one line: ``time`` (ISO
8601, UTC), ``level``, ``logger``, ``message``, ``exc_info`` when there is a traceback, and
the context of :mod:`server.ops.context` that is set where the line was logged:
``request_id``, ``connection_id``, ``user_id``, ``document``, ``room`` and ``node``. Text
stays the default (for a terminal); its lines carry the request id when there is one.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any, Final, TextIO

from pythonjsonlogger.json import JsonFormatter

from server.ops import context

TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class ContextFilter(logging.Filter):
    """Copies the context variables onto every record (``record.request_id``...)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in context.current().items():
            setattr(record, name, value)
        return True


class _Json(JsonFormatter):
    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_data, record, message_dict)
        log_data["time"] = datetime.fromtimestamp(record.created, UTC).isoformat(
            timespec="milliseconds"
        )
        log_data["level"] = record.levelname
        log_data["logger"] = record.name
        for name in (*context.FIELDS, "node"):
            value = getattr(record, name, None)
            if value is not None:
                log_data[name] = value


class _Text(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        return f"{line} [request {request_id}]" if request_id else line


class _Handler(logging.StreamHandler[TextIO]):
    """The handler :func:`configure` installs (told apart from others by its class)."""


def json_formatter() -> logging.Formatter:
    # Only the message from the record's own fields: the rest is added above.
    return _Json("%(message)s", json_ensure_ascii=False)


def configure(level: str, fmt: str, stream: TextIO | None = None) -> logging.Handler:
    """Install a handler on the root logger writing ``fmt`` (``text`` or ``json``) at
    ``level`` to ``stream`` (stderr), in place of the one an earlier call installed (other
    handlers, a test's capture for one, stay). Returns the handler."""
    handler = _Handler(stream or sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(json_formatter() if fmt == "json" else _Text(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, _Handler):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
