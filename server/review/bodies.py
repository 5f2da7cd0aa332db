"""The bodies of comment requests, the same over REST and over the socket."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from crdt.ids import MAX_ID_LENGTH
from persistence.relational.review_records import MAX_MENTIONS

MAX_CONTENT_CHARS: Final = 10_000
MAX_ANCHOR_CHARS: Final = 10_000


class Model(BaseModel):
    """Base of request bodies: unknown fields are an error, strings are stripped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


SectionId = Annotated[
    str, StringConstraints(pattern=rf"^[A-Za-z0-9_-]{{1,{MAX_ID_LENGTH}}}$", strip_whitespace=False)
]
Content = Annotated[str, StringConstraints(min_length=1, max_length=MAX_CONTENT_CHARS)]
Offset = Annotated[int, Field(ge=0, le=2**31)]


def _no_nul(value: str) -> str:
    if "\0" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _strip_no_nul(value: str) -> str:
    value = _no_nul(value).strip()
    if not value:
        raise ValueError("must not be blank")
    return value


class CreateBody(Model):
    """A new comment (``POST .../comments``, ``comment.create``).

    ``start`` / ``end`` are code-point offsets in the section's text as the client sees it;
    ``quote``, when given, is the text they enclose there: if the server's text moved
    meanwhile (concurrent edits the client has not seen yet), the occurrence of the quote
    nearest to ``start`` is anchored instead, and a quote no longer in the text is a 409.
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    id: uuid.UUID | None = None
    section: SectionId | None = None
    start: Offset | None = None
    end: Offset | None = None
    quote: Annotated[str, StringConstraints(min_length=1, max_length=MAX_ANCHOR_CHARS)] | None = (
        None
    )
    content: Content
    parentId: uuid.UUID | None = None
    mentions: list[uuid.UUID] = Field(default_factory=list, max_length=MAX_MENTIONS)

    @field_validator("content")
    @classmethod
    def _check_content(cls, value: str) -> str:
        return _strip_no_nul(value)


class EditBody(Model):
    """New content for a comment (``PATCH /comments/{id}``, ``comment.edit``); the mentions
    are replaced only when given."""

    content: Content
    mentions: list[uuid.UUID] | None = Field(None, max_length=MAX_MENTIONS)

    @field_validator("content")
    @classmethod
    def _check_content(cls, value: str) -> str:
        return _no_nul(value)


class TargetBody(Model):
    """The comment a socket request acts on."""

    id: uuid.UUID


class SocketEditBody(EditBody):
    id: uuid.UUID


@dataclass(frozen=True, slots=True)
class ListQuery:
    """Filters of a listing (``GET /documents/{id}/comments``)."""

    section: str | None = None
    unresolved: bool = False
    thread: uuid.UUID | None = None
    deleted: bool = False
    limit: int = 50
    offset: int = 0
