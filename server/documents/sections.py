"""Making the live rooms of a document hold a list of sections, the one way both the
documents API (create, replace the content) and revisions (restore) write content.

The CRDT rooms are the source of truth: sections are written only through the registry's
server-side edits, journaled first and then broadcast to every client like a client's own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from crdt.document import CrdtDoc
from crdt.ids import RoomName
from crdt.markdown import ContentSection
from crdt.outline import Outline, new_outline_update
from crdt.revisions import restore_outline
from crdt.section import set_section_text
from server.errors import RoomNotFound, RoomUnavailable, TooLargeError

if TYPE_CHECKING:
    from persistence.rooms.ports import RoomStore
    from server.realtime.registry import RoomRegistry


async def hold_sections(
    registry: RoomRegistry, document_id: str, sections: Sequence[ContentSection], reason: str
) -> None:
    """Make the live rooms of a document hold exactly ``sections`` (titles, order, texts).

    Sections the outline lists but ``sections`` lacks are emptied while still listed, then
    unlisted with the new outline; the texts of ``sections`` are written once the outline
    lists them (editing the room of an unlisted section would list it again, out of order).
    Not atomic: a failure part way leaves the rooms part way, each edit journaled.

    Raises :class:`RoomUnavailable` (titled "rooms unavailable") when a room cannot be
    loaded.
    """
    outline_room = RoomName(document_id)
    listed: list[str] = []

    def read_outline(doc: CrdtDoc) -> None:
        listed.extend(info.id for info in Outline(doc).sections())

    try:
        await registry.edit(outline_room, read_outline, reason)
        wanted = {section.id for section in sections}
        for section_id in listed:
            if section_id not in wanted:
                await registry.edit(RoomName(document_id, section_id), _setter(""), reason)
        await registry.edit(
            outline_room, lambda doc: restore_outline(Outline(doc), sections), reason
        )
        for section in sections:
            await registry.edit(RoomName(document_id, section.id), _setter(section.content), reason)
    except (RoomNotFound, RoomUnavailable) as exc:
        raise RoomUnavailable(str(exc), title="rooms unavailable") from exc


async def seed_outline(registry: RoomRegistry, store: RoomStore, document_id: str) -> None:
    """With creation on join off, the registry refuses to load an empty outline room (the
    document "does not exist"): give a new document's outline its first update, as the
    registry does when it creates one. Only for a room that is neither loaded nor stored."""
    key = str(RoomName(document_id))
    if registry.live_doc(key) is not None:
        return
    if not (await store.load(key)).is_empty:
        return
    created = datetime.now(UTC).isoformat(timespec="milliseconds")
    await store.append(key, new_outline_update(created))


def check_sizes(
    sections: Sequence[ContentSection], *, max_section_bytes: int, max_document_bytes: int
) -> None:
    """Raises :class:`TooLargeError` ("document too large") when a section's text is over
    ``max_section_bytes`` or all of them together over ``max_document_bytes`` (UTF-8
    bytes: a lower bound of the encoded CRDT state the socket caps measure)."""
    total = 0
    for section in sections:
        size = len(section.content.encode("utf-8", "surrogatepass"))
        if size > max_section_bytes:
            raise TooLargeError(
                f"section {section.id!r} is {size} bytes, over {max_section_bytes}",
                title="document too large",
            )
        total += size
    if total > max_document_bytes:
        raise TooLargeError(
            f"the sections total {total} bytes, over {max_document_bytes}",
            title="document too large",
        )


def _setter(text: str) -> Callable[[CrdtDoc], bool]:
    return lambda doc: set_section_text(doc, text)
