"""Slugs of business documents and ids of their sections, made from titles."""

from __future__ import annotations

import re
import unicodedata
import uuid
from typing import Final

from persistence.content.ports import ContentStore, Query
from server.identity.rights import DOCUMENTS

SLUG_PATTERN: Final = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
_NON_SLUG: Final = re.compile(r"[^a-z0-9]+")


def slugify(title: str, fallback: str = "document", length: int = 80) -> str:
    """A URL-friendly slug of a title (ASCII letters and digits joined by dashes, at most
    ``length`` characters); ``fallback`` when the title has no such character."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    slug = _NON_SLUG.sub("-", ascii_title.lower()).strip("-")[:length].strip("-")
    return slug or fallback


def section_id_of(title: str, taken: set[str]) -> str:
    base = slugify(title, "section", 56)
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}-{n}"
    return candidate


async def slug_owner(content: ContentStore, slug: str) -> str | None:
    """The id of the document using ``slug``, None when it is free."""
    page = await content.find(DOCUMENTS, Query(filters={"slug": slug}, limit=1))
    return str(page.items[0]["documentId"]) if page.items else None


async def free_slug(content: ContentStore, base: str) -> str:
    """``base``, or ``base-2``, ``base-3``... : the first slug no document uses."""
    for n in range(1, 50):
        candidate = base if n == 1 else f"{base[:110]}-{n}"
        if await slug_owner(content, candidate) is None:
            return candidate
    return f"{base[:100]}-{uuid.uuid4().hex[:8]}"
