"""Comment anchors on the live text of a section (:mod:`crdt.anchors`).

A comment's range is given in code points of its section's text as the client sees it and
kept as CRDT sticky indexes, resolved against the live text whenever the comment is shown.
:class:`LiveText` reaches that text through the room registry: a section's room is loaded
for it when no client has it open.
"""

from __future__ import annotations

import collections
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from crdt.anchors import Anchor, InvalidAnchor, Orphaned, create_anchor, resolve_anchors
from crdt.document import CrdtDoc, CrdtText
from crdt.ids import RoomName
from crdt.outline import Outline
from crdt.section import section_content
from persistence.relational import Comment
from server.errors import ConflictError, InvalidError, RoomNotFound, RoomUnavailable
from server.review.bodies import MAX_ANCHOR_CHARS

if TYPE_CHECKING:
    from crdt.document import RoomDoc
    from server.realtime.registry import RoomRegistry
    from server.realtime.rooms import Room

log = logging.getLogger(__name__)


class LiveText:
    """The live text of a document's sections, for anchoring comments and showing where
    they lie now. Raises :class:`InvalidError` for a range that cannot be anchored,
    :class:`ConflictError` for a quote no longer in the text, :class:`RoomUnavailable` when
    the section's room cannot be loaded."""

    def __init__(self, registry: RoomRegistry) -> None:
        self._registry = registry

    async def anchor(
        self,
        document_id: str,
        section: str | None,
        start: int | None,
        end: int | None,
        quote: str | None = None,
    ) -> tuple[Anchor, Stamp | None] | None:
        """The anchor of a new comment (None without one), made on the live text, and a
        stamp of where it lies in that text (reused while the text is unchanged)."""
        if start is None and end is None:
            if quote is not None:
                raise InvalidError(field="quote", message="a quote goes with start and end")
            return None
        if start is None or end is None:
            raise InvalidError(field="start", message="an anchor needs both start and end")
        if section is None:
            raise InvalidError(
                field="section", message="an anchor needs the section its text is in"
            )
        if end - start > MAX_ANCHOR_CHARS:
            raise InvalidError(
                field="end", message=f"an anchor spans at most {MAX_ANCHOR_CHARS} characters"
            )
        doc = await self.section_doc(document_id, section)
        if doc is None:
            raise InvalidError(
                field="section", message=f"document {document_id} has no section {section!r}"
            )
        # No await from here on: the anchor is made on the text as it is at this instant.
        text = section_content(doc)
        if quote is not None:
            start, end = _locate_quote(str(text), start, end, quote)
        try:
            anchor = create_anchor(text, start, end)
        except ValueError as exc:
            raise InvalidError(str(exc), field="start", title="anchor out of range") from exc
        position = {"start": start, "end": end, "text": anchor.quote}
        return anchor, self._stamp(document_id, section, position)

    def _stamp(self, document_id: str, section_id: str, position: dict[str, Any]) -> Stamp | None:
        room = self._registry.room(str(RoomName(document_id, section_id)))
        if room is None:
            return None
        return Stamp(room, room.doc, room.updates_applied, position)

    def _still(self, stamp: Stamp) -> dict[str, Any] | None:
        """The stamped position if the room's text has not changed since (same room, same
        document, no update applied): resolving again would give the same answer."""
        room = stamp.room
        current = self._registry.room(room.key)
        if current is room and room.doc is stamp.doc and room.updates_applied == stamp.version:
            return stamp.position
        return None

    async def listed(self, document_id: str, section_id: str) -> bool:
        """Whether the document's outline lists the section (loads the outline if needed)."""
        registry = self._registry
        live = registry.live_doc(str(RoomName(document_id)))
        if live is not None:
            return section_id in Outline(live.doc)
        found: list[bool] = []
        try:
            await registry.edit(
                RoomName(document_id),
                lambda doc: found.append(section_id in Outline(doc)),
                "comments: read the outline",
            )
        except (RoomNotFound, RoomUnavailable) as exc:
            raise RoomUnavailable(str(exc)) from exc
        return bool(found and found[0])

    async def section_doc(self, document_id: str, section_id: str) -> CrdtDoc | None:
        """The live document of a listed section (its room loaded if nobody has it open);
        None when the outline does not list it. Use it before the next await."""
        registry = self._registry
        key = str(RoomName(document_id, section_id))
        live = registry.live_doc(key)
        if live is not None:
            return live.doc
        if not await self.listed(document_id, section_id):
            return None
        try:
            await registry.edit(RoomName(document_id, section_id), _nothing, "comments: load")
        except (RoomNotFound, RoomUnavailable) as exc:
            raise RoomUnavailable(str(exc)) from exc
        live = registry.live_doc(key)
        if live is None:
            raise RoomUnavailable(f"room {key} could not be loaded")
        return live.doc

    async def positions(
        self, comments: Sequence[Comment], known: Mapping[uuid.UUID, Stamp] | None = None
    ) -> dict[uuid.UUID, dict[str, Any]]:
        """Where each anchored comment's range lies in the live text now."""
        groups: dict[tuple[str, str], list[Comment]] = collections.defaultdict(list)
        positions: dict[uuid.UUID, dict[str, Any]] = {}
        for comment in comments:
            if comment.anchor is None or not comment.section_id or comment.deleted:
                continue
            stamp = known.get(comment.id) if known else None
            still = self._still(stamp) if stamp is not None else None
            if still is not None:
                positions[comment.id] = still
            else:
                groups[(comment.document_id, comment.section_id)].append(comment)
        for (document_id, section_id), group in groups.items():
            try:
                doc = await self.section_doc(document_id, section_id)
            except RoomUnavailable:
                positions.update({c.id: {"unavailable": True} for c in group})
                continue
            if doc is None:  # the section was removed: nothing left to point at
                positions.update({c.id: {"orphaned": True} for c in group})
                continue
            positions.update(_resolve(section_content(doc), group))
        return positions


@dataclass(frozen=True, slots=True)
class Stamp:
    """Where a range lay in a room's text, and the room's version then."""

    room: Room
    doc: RoomDoc
    version: int
    position: dict[str, Any]


def _locate_quote(text: str, start: int, end: int, quote: str) -> tuple[int, int]:
    """The range of ``quote`` in ``text``: ``[start, end)`` if it holds it, else the
    occurrence nearest to ``start``; 409 when the text holds it nowhere."""
    if text[start:end] == quote:
        return start, end
    best: int | None = None
    found = text.find(quote)
    while found != -1:
        if best is None or abs(found - start) < abs(best - start):
            best = found
        found = text.find(quote, found + 1)
    if best is None:
        raise ConflictError(
            "the quoted text is no longer in the section: the text changed meanwhile",
            title="quote not found",
        )
    return best, best + len(quote)


def _nothing(doc: CrdtDoc) -> None:
    """A server-side "edit" that changes nothing: loads a room through the registry."""


def _resolve(text: CrdtText, group: Sequence[Comment]) -> dict[uuid.UUID, dict[str, Any]]:
    anchors = [c.anchor for c in group if c.anchor is not None]
    try:
        results = resolve_anchors(text, anchors)
    except InvalidAnchor:
        # One bad anchor must not hide the others: resolve them one by one.
        results = []
        for anchor in anchors:
            try:
                results.extend(resolve_anchors(text, [anchor]))
            except InvalidAnchor as exc:
                log.warning("an anchor does not resolve in its section: %s", exc)
                results.append(Orphaned(anchor.quote))
    positions: dict[uuid.UUID, dict[str, Any]] = {}
    for comment, result in zip(group, results, strict=True):
        if isinstance(result, Orphaned):
            positions[comment.id] = {"orphaned": True}
        else:
            positions[comment.id] = {
                "start": result.start,
                "end": result.end,
                "text": result.content,
            }
    return positions
