"""Document revisions: cut on explicit save, status change, restore, and on a time policy
while editing (never per keystroke); listed, fetched, compared and restored.

A revision stores the derived content (markdown and sections) with the schema's fields
(revisionId, version, timestamp, author, changes, content). The content store keeps the most
recent ``keep_inline`` revisions inside the document and archives older ones, so no document
nears MongoDB's 16 MB limit.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from crdt.markdown import BusinessContent, ContentSection
from crdt.revisions import (
    SectionDiff,
    diff_sections,
    sections_from_dicts,
    summarize_changes,
)
from persistence.content.ports import ContentStore
from persistence.errors import DocumentNotFound
from server.documents.sections import hold_sections
from server.documents.snapshots import Snapshotter
from server.errors import NotFoundError
from server.realtime.registry import RoomRegistry

log = logging.getLogger(__name__)

DOCUMENTS = "business_documents"


# What a business record may hold: its content plus the inline revisions' contents, kept
# well under the stores' 16 MiB (JSON escaping and the other fields take the rest).
RECORD_BUDGET_BYTES = 12 * 1024 * 1024


def inline_revisions(content: BusinessContent, wanted: int) -> int:
    """How many revisions of a document of this size to keep inline (at most ``wanted``, at
    least 1): the record holds the content once (markdown and sections) and once more per
    inline revision, and must stay under :data:`RECORD_BUDGET_BYTES`; the others move to
    the revisions archive."""
    size = len(content.markdown.encode("utf-8", "surrogatepass")) + sum(
        len(section.content.encode("utf-8", "surrogatepass")) for section in content.sections
    )
    if size == 0:
        return wanted
    return max(1, min(wanted, (RECORD_BUDGET_BYTES - size) // size))


class RevisionNotFound(NotFoundError, LookupError):
    """No such revision of that document (404 "revision not found")."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, what="revision")


class Revisions:
    """Cuts, lists, compares and restores revisions of business documents."""

    def __init__(
        self,
        content: ContentStore,
        registry: RoomRegistry,
        snapshots: Snapshotter,
        *,
        keep_inline: int,
        interval: float,
    ) -> None:
        self._content = content
        self._registry = registry
        self._snapshots = snapshots
        self._keep_inline = keep_inline
        self._interval = interval
        self._last_cut: dict[str, float] = {}

    async def save(
        self, document_id: str, author: str | None, reason: str = "save"
    ) -> dict[str, Any]:
        """Cut a revision of the document as the rooms hold it now; returns it (without its
        heavy fields). Raises DocumentNotFound for a document that has no record."""
        content = await self._snapshots.write_now(document_id)
        record = await self._content.get(DOCUMENTS, document_id)
        if record is None:
            raise DocumentNotFound(document_id)
        previous = await self._latest_sections(document_id)
        now = datetime.now(UTC)
        version = int(record.get("version") or 0) + 1
        changes = summarize_changes(previous, content.sections)
        revision = {
            "revisionId": uuid.uuid4().hex,
            "version": version,
            "timestamp": now,
            "author": author,
            "changes": changes if reason == "save" else f"{reason}: {changes}",
            "content": content.markdown,
            "sections": [section.to_dict() for section in content.sections],
        }
        keep_inline = inline_revisions(content, self._keep_inline)
        await self._content.add_revision(document_id, revision, keep_inline=keep_inline)
        await self._content.update(
            DOCUMENTS,
            document_id,
            {"updatedAt": now, "updatedBy": author},
            expected_version=int(record.get("version") or 0),
        )
        self._last_cut[document_id] = time.monotonic()
        log.info("document %s: revision %d cut (%s)", document_id, version, reason)
        return {k: v for k, v in revision.items() if k not in ("content", "sections")}

    async def on_snapshot(self, document_id: str) -> None:
        """Time policy: after a snapshot, cut a revision if the last is ``interval`` old."""
        last = self._last_cut.setdefault(document_id, time.monotonic())
        if time.monotonic() - last >= self._interval:
            await self.save(document_id, None, reason="autosave")

    async def _latest_sections(self, document_id: str) -> tuple[ContentSection, ...] | None:
        listed = await self._content.list_revisions(document_id, limit=1)
        if not listed:
            return None
        latest = await self._content.get_revision(document_id, listed[0]["revisionId"])
        return sections_from_dicts(latest.get("sections", [])) if latest else None

    async def get(self, document_id: str, revision_id: str) -> dict[str, Any]:
        revision = await self._content.get_revision(document_id, revision_id)
        if revision is None:
            raise RevisionNotFound(f"revision {revision_id} of {document_id}")
        return revision

    async def diff(self, document_id: str, before_id: str, after_id: str) -> list[SectionDiff]:
        before = await self.get(document_id, before_id)
        after = await self.get(document_id, after_id)
        return diff_sections(
            sections_from_dicts(before.get("sections", [])),
            sections_from_dicts(after.get("sections", [])),
            (f"v{before['version']}", f"v{after['version']}"),
        )

    async def restore(
        self, document_id: str, revision_id: str, author: str | None
    ) -> dict[str, Any]:
        """Bring the live rooms to a revision with forward CRDT edits
        (:func:`server.documents.sections.hold_sections`), then record it. Raises
        :class:`RevisionNotFound`, or :class:`server.errors.RoomUnavailable` when a room
        cannot be loaded."""
        revision = await self.get(document_id, revision_id)
        target = sections_from_dicts(revision.get("sections", []))
        await hold_sections(self._registry, document_id, target, "restore")
        return await self.save(document_id, author, reason=f"restored v{revision['version']}")
