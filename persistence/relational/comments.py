"""SQL adapter of :class:`.review_ports.CommentStore` (both backends).

Anchors are stored in the ``anchor`` JSON column as ``{"v": 1, "start": <base64>, "end":
<base64>}`` (the encoded sticky indexes, byte for byte) and their quote in ``quoted_text``;
mentions as a JSON array of user-id strings.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from crdt.anchors import Anchor
from persistence.errors import RecordNotFound, StorageConflict, StorageCorrupted
from persistence.relational.engine import SqlDatabase
from persistence.relational.records import (
    UNSET,
    Page,
    Unset,
    check_moment,
    check_text,
    check_uuid,
)
from persistence.relational.review_records import (
    MAX_COMMENT_CHARS,
    MAX_MENTIONS,
    Comment,
    CommentQuery,
    InvalidTransitionError,
    NewComment,
    NotPermittedError,
    check_user_ids,
)
from persistence.relational.schema import comments, users
from persistence.relational.users import Clock, required

ANCHOR_FORMAT = 1
_c = comments.c


def anchor_to_json(anchor: Anchor | None) -> dict[str, Any] | None:
    if anchor is None:
        return None
    return {
        "v": ANCHOR_FORMAT,
        "start": base64.b64encode(anchor.start).decode("ascii"),
        "end": base64.b64encode(anchor.end).decode("ascii"),
    }


def anchor_from_row(row: sa.Row[Any]) -> Anchor | None:
    """The anchor of a comment row; StorageCorrupted if another writer left something else."""
    raw = row.anchor
    if raw is None:
        return None
    try:
        if raw["v"] != ANCHOR_FORMAT:
            raise ValueError(f"unknown anchor format {raw['v']!r}")
        start = base64.b64decode(raw["start"], validate=True)
        end = base64.b64decode(raw["end"], validate=True)
        return Anchor(start, end, row.quoted_text or "")
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise StorageCorrupted(f"the anchor of comment {row.id} is malformed: {exc}") from exc


def _mentions(row: sa.Row[Any]) -> tuple[uuid.UUID, ...]:
    try:
        return tuple(uuid.UUID(value) for value in row.mentions or ())
    except (TypeError, ValueError, AttributeError) as exc:
        raise StorageCorrupted(f"the mentions of comment {row.id} are malformed") from exc


def _comment(row: sa.Row[Any]) -> Comment:
    return Comment(
        id=row.id,
        document_id=row.document_id,
        section_id=row.section_id,
        author_id=row.author_id,
        content=row.content,
        parent_id=row.parent_comment_id,
        anchor=anchor_from_row(row),
        mentions=_mentions(row),
        resolved=bool(row.resolved),
        resolved_by=row.resolved_by,
        resolved_at=row.resolved_at,
        created_at=required(row, "created_at"),
        updated_at=required(row, "updated_at"),
        edited_at=row.edited_at,
        deleted_at=row.deleted_at,
    )


def _unresolved(table: sa.FromClause) -> sa.ColumnElement[bool]:
    return table.c.resolved.is_not(True)  # NULL (never set) counts as unresolved


async def _require_users(conn: AsyncConnection, ids: Sequence[uuid.UUID], what: str) -> None:
    if not ids:
        return
    statement = sa.select(sa.func.count()).select_from(users).where(users.c.id.in_(ids))
    if await conn.scalar(statement) != len(ids):
        raise StorageConflict(f"{what} name users that are not stored")


class SqlCommentStore:
    """Comments in the ``comments`` table. Guarantees: :class:`.review_ports.CommentStore`."""

    def __init__(self, db: SqlDatabase, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def add(self, comment: NewComment) -> Comment:
        if not isinstance(comment, NewComment):
            raise ValueError(f"expected NewComment, not {type(comment).__name__}")
        now = check_moment(self._clock(), "clock")
        values = {
            "id": comment.id,
            "document_id": comment.document_id,
            "author_id": comment.author_id,
            "content": comment.content,
            "parent_comment_id": comment.parent_id,
            "resolved": False,
            "created_at": now,
            "updated_at": now,
            "anchor": anchor_to_json(comment.anchor),
            "quoted_text": None if comment.anchor is None else comment.anchor.quote,
            "mentions": [str(user_id) for user_id in comment.mentions],
        }

        async def run(conn: AsyncConnection) -> Comment:
            section_id = comment.section_id
            if comment.parent_id is not None:
                section_id = await self._thread_section(conn, comment)
            await _require_users(conn, comment.mentions, "mentions")
            statement = comments.insert().values({**values, "section_id": section_id})
            return _comment((await conn.execute(statement.returning(*comments.c))).one())

        return await self._db.write("adding a comment", run)

    async def _thread_section(self, conn: AsyncConnection, reply: NewComment) -> str | None:
        """The section of the thread a reply joins; StorageConflict if it cannot join it."""
        statement = sa.select(
            _c.document_id, _c.parent_comment_id, _c.deleted_at, _c.section_id
        ).where(_c.id == reply.parent_id)
        parent = (await conn.execute(statement)).one_or_none()
        if parent is None:
            raise StorageConflict(f"parent comment {reply.parent_id} is not stored")
        if parent.document_id != reply.document_id:
            raise StorageConflict(f"parent comment {reply.parent_id} is in another document")
        if parent.parent_comment_id is not None:
            raise StorageConflict("a reply answers a thread's first comment, not a reply")
        if parent.deleted_at is not None:
            raise StorageConflict(f"parent comment {reply.parent_id} is deleted")
        section: str | None = parent.section_id
        return section

    async def get(self, comment_id: uuid.UUID) -> Comment | None:
        check_uuid(comment_id, "comment_id")

        async def run(conn: AsyncConnection) -> Comment | None:
            row = await self._row(conn, comment_id)
            return None if row is None else _comment(row)

        return await self._db.read("getting a comment", run)

    @staticmethod
    async def _row(conn: AsyncConnection, comment_id: uuid.UUID) -> sa.Row[Any] | None:
        return (await conn.execute(sa.select(comments).where(_c.id == comment_id))).one_or_none()

    async def edit(
        self,
        comment_id: uuid.UUID,
        *,
        acting_user_id: uuid.UUID,
        content: str,
        mentions: Sequence[uuid.UUID] | Unset = UNSET,
    ) -> Comment:
        check_uuid(comment_id, "comment_id")
        check_uuid(acting_user_id, "acting_user_id")
        now = check_moment(self._clock(), "clock")
        values: dict[str, Any] = {
            "content": check_text(content, "content", MAX_COMMENT_CHARS),
            "edited_at": now,
            "updated_at": now,
        }
        mentioned: tuple[uuid.UUID, ...] = ()
        if not isinstance(mentions, Unset):
            mentioned = check_user_ids(mentions, "mentions", MAX_MENTIONS)
            values["mentions"] = [str(user_id) for user_id in mentioned]
        statement = (
            comments.update()
            .where(_c.id == comment_id, _c.author_id == acting_user_id, _c.deleted_at.is_(None))
            .values(values)
            .returning(*comments.c)
        )

        async def run(conn: AsyncConnection) -> Comment:
            await _require_users(conn, mentioned, "mentions")
            row = (await conn.execute(statement)).one_or_none()
            if row is not None:
                return _comment(row)
            current = await self._live_row(conn, comment_id)
            raise NotPermittedError(
                f"only the author may edit comment {comment_id} (author {current.author_id})"
            )

        return await self._db.write("editing a comment", run)

    async def _live_row(self, conn: AsyncConnection, comment_id: uuid.UUID) -> sa.Row[Any]:
        row = await self._row(conn, comment_id)
        if row is None:
            raise RecordNotFound(f"comment {comment_id} not found")
        if row.deleted_at is not None:
            raise RecordNotFound(f"comment {comment_id} is deleted")
        return row

    async def resolve(self, comment_id: uuid.UUID, *, by: uuid.UUID) -> Comment:
        check_uuid(comment_id, "comment_id")
        check_uuid(by, "by")
        now = check_moment(self._clock(), "clock")
        changes = {"resolved": True, "resolved_by": by, "resolved_at": now, "updated_at": now}
        return await self._set_resolution(comment_id, _unresolved(comments), changes, "resolving")

    async def reopen(self, comment_id: uuid.UUID) -> Comment:
        check_uuid(comment_id, "comment_id")
        now = check_moment(self._clock(), "clock")
        changes = {"resolved": False, "resolved_by": None, "resolved_at": None, "updated_at": now}
        return await self._set_resolution(comment_id, _c.resolved.is_(True), changes, "reopening")

    async def _set_resolution(
        self,
        comment_id: uuid.UUID,
        unless_done: sa.ColumnElement[bool],
        changes: dict[str, Any],
        verb: str,
    ) -> Comment:
        statement = (
            comments.update()
            .where(
                _c.id == comment_id,
                _c.parent_comment_id.is_(None),
                _c.deleted_at.is_(None),
                unless_done,
            )
            .values(changes)
            .returning(*comments.c)
        )

        async def run(conn: AsyncConnection) -> Comment:
            row = (await conn.execute(statement)).one_or_none()
            if row is not None:
                return _comment(row)
            current = await self._live_row(conn, comment_id)
            if current.parent_comment_id is not None:
                raise InvalidTransitionError(
                    f"comment {comment_id} is a reply: its thread is resolved as a whole"
                )
            return _comment(current)  # already in that state: idempotent

        return await self._db.write(f"{verb} a comment", run)

    async def delete(
        self, comment_id: uuid.UUID, *, acting_user_id: uuid.UUID, acting_is_admin: bool = False
    ) -> bool:
        check_uuid(comment_id, "comment_id")
        check_uuid(acting_user_id, "acting_user_id")
        if not isinstance(acting_is_admin, bool):
            raise ValueError("acting_is_admin must be a bool")
        now = check_moment(self._clock(), "clock")
        allowed = sa.true() if acting_is_admin else _c.author_id == acting_user_id
        statement = (
            comments.update()
            .where(_c.id == comment_id, _c.deleted_at.is_(None), allowed)
            .values(deleted_at=now, updated_at=now, content="", mentions=[])
            .returning(_c.id)
        )

        async def run(conn: AsyncConnection) -> bool:
            if (await conn.execute(statement)).one_or_none() is not None:
                return True
            current = await self._row(conn, comment_id)
            if current is None:
                raise RecordNotFound(f"comment {comment_id} not found")
            if not acting_is_admin and current.author_id != acting_user_id:
                raise NotPermittedError(f"only the author or an admin may delete {comment_id}")
            return False  # deleted already

        return await self._db.write("deleting a comment", run)

    async def find(self, query: CommentQuery) -> Page[Comment]:
        if not isinstance(query, CommentQuery):
            raise ValueError(f"expected CommentQuery, not {type(query).__name__}")
        conditions: list[sa.ColumnElement[bool]] = [_c.document_id == query.document_id]
        if query.section_id is not None:
            conditions.append(_c.section_id == query.section_id)
        if query.thread_of is not None:
            conditions.append(
                sa.or_(_c.id == query.thread_of, _c.parent_comment_id == query.thread_of)
            )
        if query.unresolved_only:
            threads = comments.alias("threads")
            open_threads = sa.select(threads.c.id).where(
                threads.c.document_id == query.document_id,
                threads.c.parent_comment_id.is_(None),
                _unresolved(threads),
            )
            conditions.append(
                sa.or_(
                    sa.and_(_c.parent_comment_id.is_(None), _unresolved(comments)),
                    _c.parent_comment_id.in_(open_threads),
                )
            )
        if not query.include_deleted:
            conditions.append(_c.deleted_at.is_(None))
        count = sa.select(sa.func.count()).select_from(comments).where(*conditions)
        page = (
            sa.select(comments)
            .where(*conditions)
            .order_by(_c.created_at, _c.id)
            .limit(query.limit)
            .offset(query.offset)
        )

        async def run(conn: AsyncConnection) -> Page[Comment]:
            total = await conn.scalar(count)
            rows = await conn.execute(page)
            return Page([_comment(row) for row in rows], int(total or 0))

        return await self._db.read("listing comments", run)
