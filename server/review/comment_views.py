"""Comments as JSON: the view the API and the events show (see ``docs/api.md``)."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping
from typing import Any, Final

from persistence.relational import Comment
from protocol.events import MAX_EVENT_BYTES, AppEvent, encode_event
from server.review.notifications import iso

# Events must stay under the clients' 64 KiB decoding limit: past this size the quote and
# the resolved text are cut (``truncated: true``); the REST view always has them whole.
EVENT_BUDGET: Final = MAX_EVENT_BYTES - 4096
EVENT_TEXT_CHARS: Final = 1_000


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def comment_view(
    comment: Comment,
    names: Mapping[uuid.UUID, str | None],
    position: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """One comment as JSON (see ``docs/api.md``)."""
    anchor = comment.anchor if not comment.deleted else None
    resolved = None
    if comment.resolved and comment.resolved_by is not None:
        resolved = {
            "by": {"id": str(comment.resolved_by), "name": names.get(comment.resolved_by)},
            "at": iso(comment.resolved_at),
        }
    return {
        "id": str(comment.id),
        "documentId": comment.document_id,
        "section": comment.section_id,
        "parentId": str(comment.parent_id) if comment.parent_id is not None else None,
        "author": {"id": str(comment.author_id), "name": names.get(comment.author_id)},
        "content": comment.content,
        "mentions": [str(user_id) for user_id in comment.mentions],
        "resolved": resolved,
        "createdAt": iso(comment.created_at),
        "updatedAt": iso(comment.updated_at),
        "editedAt": iso(comment.edited_at),
        "deleted": comment.deleted,
        "deletedAt": iso(comment.deleted_at),
        "quote": anchor.quote if anchor is not None else None,
        "anchor": dict(position) if anchor is not None and position is not None else None,
        "sticky": {"start": _b64(anchor.start), "end": _b64(anchor.end)} if anchor else None,
    }


def fit_event(view: Mapping[str, Any]) -> dict[str, Any]:
    """The view, with the quote and resolved text cut if the event would pass the clients'
    64 KiB limit (``truncated: true`` then; the REST view has them whole)."""
    fitted = dict(view)
    anchor = fitted.get("anchor")
    texts = [fitted.get("content"), fitted.get("quote")]
    if isinstance(anchor, Mapping):
        texts.append(anchor.get("text"))
    if sum(len(t) for t in texts if isinstance(t, str)) * 4 <= EVENT_BUDGET // 2:
        return fitted  # small enough whatever the characters: no need to measure
    if len(encode_event(AppEvent("comment", {"comment": fitted}))) <= EVENT_BUDGET:
        return fitted
    if isinstance(fitted.get("quote"), str):
        fitted["quote"] = fitted["quote"][:EVENT_TEXT_CHARS]
    if isinstance(anchor, Mapping) and isinstance(anchor.get("text"), str):
        fitted["anchor"] = {**anchor, "text": anchor["text"][:EVENT_TEXT_CHARS]}
    fitted["truncated"] = True
    return fitted
