"""What the review features count, as ``/metrics`` reads it (:mod:`server.ops.metrics`):
comment operations by kind, notifications delivered and failed. The services keep plain
integers; nothing here runs until a scrape."""

from __future__ import annotations

from collections.abc import Mapping

from server.ops.observe import Counted
from server.review.comments import CommentService
from server.review.notifications import Notifier


def review_counters(comments: CommentService, notifier: Notifier) -> Mapping[str, Counted]:
    return {
        "comment_operations": (
            "comment operations (REST and socket), by operation",
            "op",
            lambda: dict(comments.operations),
        ),
        "notifications": (
            "notifications, by outcome (delivered: stored and pushed; failed: given up)",
            "outcome",
            lambda: {"delivered": notifier.delivered, "failed": notifier.failed},
        ),
    }
