"""The documents API's vocabulary, request bodies and views (``docs/api.md``)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, Field, StringConstraints

from crdt.ids import MAX_ID_LENGTH, is_reserved_id
from persistence.content.ports import HEAVY_REVISION_FIELDS
from server.api.common import Model
from server.documents.slugs import SLUG_PATTERN

_SLUG: Final = SLUG_PATTERN

DocumentType = Literal[
    "strategy_plan",
    "market_analysis",
    "competitive_analysis",
    "case_study",
    "pitch_deck",
    "operational_guide",
    "research_report",
    "custom",
]
Sensitivity = Literal["public", "internal", "confidential", "restricted"]
Status = Literal["draft", "review", "approved", "published", "archived"]

# The fields PATCH may change (permissions change through PUT .../permissions only).
METADATA_FIELDS: Final = (
    "title",
    "slug",
    "category",
    "description",
    "tags",
    "sensitivity",
    "seo",
    "linkedDocuments",
    "linkedProjects",
)
SUMMARY_FIELDS: Final = (
    "documentId",
    "title",
    "slug",
    "type",
    "category",
    "description",
    "status",
    "version",
    "tags",
    "sensitivity",
    "owner",
    "createdAt",
    "updatedAt",
    "createdBy",
    "updatedBy",
    "lastReviewedAt",
    "lastReviewedBy",
)

# -- request bodies --------------------------------------------------------------------------

Text = Annotated[str, StringConstraints(min_length=1, max_length=300)]
LongText = Annotated[str, StringConstraints(max_length=5000)]
Slug = Annotated[str, StringConstraints(min_length=1, max_length=120, pattern=_SLUG)]
Tag = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f]+$")]
Ref = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f]+$")]


# 1-64 of [A-Za-z0-9_-], not starting with "__" (reserved for the server's own channels).
def _not_reserved(value: str) -> str:
    if is_reserved_id(value):
        raise ValueError("ids starting with '__' are reserved")
    return value


Id = Annotated[
    str,
    StringConstraints(pattern=rf"^[A-Za-z0-9_-]{{1,{MAX_ID_LENGTH}}}$"),
    AfterValidator(_not_reserved),
]
# Markdown is kept exactly as sent: no stripping.
Markdown = Annotated[str, StringConstraints(strip_whitespace=False, max_length=1_000_000)]


class Seo(Model):
    """``seo`` of the schema."""

    metaTitle: Annotated[str, StringConstraints(max_length=300)] | None = None
    metaDescription: LongText | None = None
    keywords: list[Tag] = Field(default_factory=list, max_length=50)


class PermissionLists(Model):
    """``permissions`` of the schema: user ids per level."""

    view: list[uuid.UUID] = Field(default_factory=list, max_length=500)
    edit: list[uuid.UUID] = Field(default_factory=list, max_length=500)
    comment: list[uuid.UUID] = Field(default_factory=list, max_length=500)

    def as_record(self) -> dict[str, list[str]]:
        return {
            level: list(dict.fromkeys(str(user) for user in users))
            for level, users in (
                ("view", self.view),
                ("edit", self.edit),
                ("comment", self.comment),
            )
        }


class SectionBody(Model):
    """One initial section: its id (generated when absent), title and markdown."""

    id: Id | None = None
    title: Annotated[str, StringConstraints(max_length=300)]
    content: Markdown = ""


class CreateBody(Model):
    """``POST /documents``."""

    documentId: Id | None = None
    title: Text
    slug: Slug | None = None
    type: DocumentType = "custom"
    category: Annotated[str, StringConstraints(max_length=100)] | None = None
    description: LongText | None = None
    tags: list[Tag] = Field(default_factory=list, max_length=50)
    sensitivity: Sensitivity = "internal"
    seo: Seo | None = None
    linkedDocuments: list[Id] = Field(default_factory=list, max_length=200)
    linkedProjects: list[Ref] = Field(default_factory=list, max_length=200)
    permissions: PermissionLists | None = None
    sections: list[SectionBody] = Field(default_factory=list, max_length=200)


class UpdateBody(Model):
    """``PATCH /documents/{id}``: only the fields given change (null clears the optional
    ones: slug, category, description, seo)."""

    title: Text | None = None
    slug: Slug | None = None
    category: Annotated[str, StringConstraints(max_length=100)] | None = None
    description: LongText | None = None
    tags: list[Tag] | None = Field(None, max_length=50)
    sensitivity: Sensitivity | None = None
    seo: Seo | None = None
    linkedDocuments: list[Id] | None = Field(None, max_length=200)
    linkedProjects: list[Ref] | None = Field(None, max_length=200)


class StatusBody(Model):
    """``POST /documents/{id}/status``."""

    status: Status


class SaveBody(Model):
    """``POST /documents/{id}/revisions`` (the body is optional)."""

    # One line: it becomes the revision's ``changes`` and appears in the server log.
    message: (
        Annotated[str, StringConstraints(min_length=1, max_length=500, pattern=r"^[^\x00-\x1f]+$")]
        | None
    ) = None


# -- conversions -----------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """Stored values as JSON: datetimes in ISO 8601, containers converted deeply."""
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds")
    if isinstance(value, Mapping):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    return value


def revision_summary(revision: Mapping[str, Any]) -> dict[str, Any]:
    return {k: jsonable(v) for k, v in revision.items() if k not in HEAVY_REVISION_FIELDS}


def document_view(record: Mapping[str, Any], *, content: bool = True) -> dict[str, Any]:
    """A stored record as the API shows it: inline revisions as summaries, dates in ISO
    8601, and ``content`` only when asked for."""
    view = {k: jsonable(v) for k, v in record.items() if k not in ("revisions", "content")}
    view["revisions"] = [revision_summary(r) for r in record.get("revisions") or []]
    if content:
        view["content"] = jsonable(record.get("content"))
    return view


def document_summary(record: Mapping[str, Any]) -> dict[str, Any]:
    """A list entry: the metadata of a record and its word count, without the content."""
    summary = {name: jsonable(record.get(name)) for name in SUMMARY_FIELDS}
    metadata = (record.get("content") or {}).get("metadata") or {}
    summary["wordCount"] = metadata.get("wordCount")
    summary["readingTime"] = metadata.get("readingTime")
    return summary


def sensitivity_of(record: Mapping[str, Any]) -> str | None:
    value = record.get("sensitivity")
    return value if isinstance(value, str) else None
