"""Who may do what to a document: one function decides, every socket and endpoint asks it.

A user's right on a business document is the highest of four sources:

* the role (``users.role``): the ``documents:*`` strings of the role's row in the ``roles``
  table (:mod:`server.identity.roles`; built in: admin -> admin on every document, manager ->
  approve on every document, analyst and viewer -> nothing by role alone);
* ownership (``business_documents.owner``) -> admin on that document;
* the document's own lists: ``permissions.view`` -> view, ``permissions.comment`` ->
  comment, ``permissions.edit`` (and ``contributors``) -> edit;
* unexpired rows of the ``permissions`` table on the document (or on every document,
  resource id ``*``): view, edit, approve, admin.

Rights are ordered: none < view < comment < edit < approve < admin; each includes the ones
below it. A suspended or deactivated user has no right at all. Creating documents is a role
right (``documents:create``; built in: admin, manager and analyst may, viewer may not).

:func:`decide` is pure (a table of cases tests it); :class:`AccessControl` gathers its inputs
from the stores, with a short cache so that a burst of requests does not hit the database
each time while a change still reaches open connections within seconds.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from persistence.content.ports import ContentStore
from persistence.relational import Grant, PermissionStore
from server.flights import Flights
from server.identity.roles import BUILT_IN_RIGHTS, NO_RIGHTS, Right, RoleBook, RoleRights

__all__ = [
    "CREATOR_ROLES",
    "DOCUMENTS",
    "GRANT_RIGHTS",
    "RESOURCE_TYPE",
    "ROLE_RIGHTS",
    "AccessControl",
    "DocumentFacts",
    "Right",
    "Subject",
    "decide",
    "may_create",
    "visibility_filter",
]

DOCUMENTS: Final = "business_documents"
RESOURCE_TYPE: Final = "business_document"


# The built-in roles' rights (the roles table says what every role may do: RoleBook).
ROLE_RIGHTS: Final[Mapping[str, Right]] = {
    name: rights.document for name, rights in BUILT_IN_RIGHTS.items()
}
CREATOR_ROLES: Final = frozenset(name for name, r in BUILT_IN_RIGHTS.items() if r.create)
GRANT_RIGHTS: Final[Mapping[str, Right]] = {
    "view": Right.VIEW,
    "edit": Right.EDIT,
    "approve": Right.APPROVE,
    "admin": Right.ADMIN,
}


@dataclass(frozen=True, slots=True)
class Subject:
    """The facts about a user that rights depend on."""

    user_id: str
    role: str
    active: bool = True


@dataclass(frozen=True, slots=True)
class DocumentFacts:
    """The facts about a document that rights depend on (from its stored record)."""

    owner: str | None = None
    view: frozenset[str] = frozenset()
    comment: frozenset[str] = frozenset()
    edit: frozenset[str] = frozenset()
    sensitivity: str | None = None
    status: str | None = None
    # The approve right by naming (a strategic plan's ``approvers``); documents have none.
    approve: frozenset[str] = frozenset()

    @property
    def under_review(self) -> bool:
        """While a document is in review its content is frozen: every socket is read-only
        and REST refuses content changes, until the review ends (approved, rejected back to
        draft, or withdrawn to draft)."""
        return self.status == "review"

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> DocumentFacts:
        """Read the owner and permission lists of a ``business_documents`` record."""
        permissions = record.get("permissions") or {}

        def ids(values: object) -> frozenset[str]:
            if not isinstance(values, list):
                return frozenset()
            return frozenset(str(v) for v in values if v is not None)

        owner = record.get("owner")
        contributors = ids(record.get("contributors"))
        return cls(
            owner=str(owner) if owner is not None else None,
            view=ids(permissions.get("view")),
            comment=ids(permissions.get("comment")),
            edit=ids(permissions.get("edit")) | contributors,
            status=status if isinstance(status := record.get("status"), str) else None,
            sensitivity=sensitivity
            if isinstance(sensitivity := record.get("sensitivity"), str)
            else None,
        )


def decide(
    subject: Subject,
    document: DocumentFacts | None,
    grants: Iterable[Grant] = (),
    *,
    now: datetime | None = None,
    role: RoleRights | None = None,
) -> Right:
    """The user's right on a document (``document`` None: a document not yet created);
    ``role``: what the user's role allows (default: the built-in roles)."""
    if not subject.active:
        return Right.NONE
    right = _role(subject, role).document
    if document is not None:
        user = subject.user_id
        if document.owner == user:
            right = max(right, Right.ADMIN)
        if user in document.approve:
            right = max(right, Right.APPROVE)
        elif user in document.edit:
            right = max(right, Right.EDIT)
        elif user in document.comment:
            right = max(right, Right.COMMENT)
        elif user in document.view:
            right = max(right, Right.VIEW)
    moment = now or datetime.now(UTC)
    for grant in grants:
        if grant.expires_at is not None and grant.expires_at <= moment:
            continue
        right = max(right, GRANT_RIGHTS.get(grant.permission_level, Right.NONE))
    return right


def _role(subject: Subject, role: RoleRights | None) -> RoleRights:
    return role if role is not None else BUILT_IN_RIGHTS.get(subject.role, NO_RIGHTS)


def may_create(subject: Subject, role: RoleRights | None = None) -> bool:
    """Whether the user may create documents (and so create rooms by joining them);
    ``role``: what the user's role allows (default: the built-in roles)."""
    return subject.active and _role(subject, role).create


def visibility_filter(subject: Subject, role: RoleRights | None = None) -> dict[str, Any] | None:
    """The schema's accessible-documents query for a user (None: every document).

    Documents reachable only through rows of the ``permissions`` table are added by the
    caller (:meth:`AccessControl.granted_documents`).
    """
    if _role(subject, role).document >= Right.VIEW:
        return None
    user = subject.user_id
    return {
        "$or": [
            {"owner": user},
            {"permissions.view": user},
            {"permissions.edit": user},
            {"permissions.comment": user},
            {"contributors": user},
        ]
    }


class _Cached:
    __slots__ = ("expires", "value")

    def __init__(self, value: object, expires: float) -> None:
        self.value = value
        self.expires = expires


class AccessControl:
    """Gathers what :func:`decide` needs from the stores, caching it for ``ttl`` seconds.

    ``forget`` drops what is cached about a document (after its permissions change through
    this server); changes made elsewhere are seen once the cache entry expires.
    """

    def __init__(
        self,
        content: ContentStore,
        permissions: PermissionStore,
        *,
        roles: RoleBook | None = None,
        ttl: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._content = content
        self._permissions = permissions
        self.roles = roles if roles is not None else RoleBook(None)
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[tuple[str, ...], _Cached] = {}
        self._inflight: Flights[tuple[str, ...], Any] = Flights()

    async def document(self, document_id: str) -> DocumentFacts | None:
        """The document's facts, None when it has no record (not created yet)."""

        async def load() -> DocumentFacts | None:
            record = await self._content.get(DOCUMENTS, document_id)
            return None if record is None else DocumentFacts.of(record)

        result: DocumentFacts | None = await self._cached(("doc", document_id), load)
        return result

    async def grants(self, user_id: str, document_id: str) -> Sequence[Grant]:
        """The unexpired grants of the user on the document (or on every document)."""
        try:
            user = uuid.UUID(user_id)
        except ValueError:
            return ()

        async def load() -> Sequence[Grant]:
            now = datetime.now(UTC)
            return tuple(
                await self._permissions.effective_grants(user, RESOURCE_TYPE, document_id, now)
            )

        result: Sequence[Grant] = await self._cached(("grants", user_id, document_id), load)
        return result

    async def right(self, subject: Subject, document_id: str) -> Right:
        """The subject's right on the document."""
        if not subject.active:
            return Right.NONE
        role = await self.roles.rights(subject.role)
        if role.document is Right.ADMIN:
            return Right.ADMIN
        document, grants = await asyncio.gather(
            self.document(document_id), self.grants(subject.user_id, document_id)
        )
        return decide(subject, document, grants, role=role)

    async def may_create(self, subject: Subject) -> bool:
        """Whether the user's role may create documents (the roles table says)."""
        return may_create(subject, await self.roles.rights(subject.role))

    async def visibility(self, subject: Subject) -> dict[str, Any] | None:
        """:func:`visibility_filter` with the user's role as the roles table says."""
        return visibility_filter(subject, await self.roles.rights(subject.role))

    async def allows(self, subject: Subject, permission: str) -> bool:
        """Whether the user's role holds a permission string (``users:manage``...)."""
        return subject.active and await self.roles.allows(subject.role, permission)

    async def granted_documents(self, subject: Subject) -> list[str]:
        """Ids of the documents the permissions table opens to the user (besides the
        document's own lists); ``["*"]`` when a grant covers every document."""
        return await self.granted_ids(subject, RESOURCE_TYPE)

    async def resource_right(
        self, subject: Subject, resource_type: str, resource_id: str, facts: DocumentFacts | None
    ) -> Right:
        """The subject's right on a record of another resource type (a project, a plan...)
        whose facts the caller read: :func:`decide` with the unexpired ``permissions`` rows
        on that resource type (uncached: these records are read once per request)."""
        if not subject.active:
            return Right.NONE
        role = await self.roles.rights(subject.role)
        if role.document is Right.ADMIN:
            return Right.ADMIN
        try:
            user = uuid.UUID(subject.user_id)
        except ValueError:
            return decide(subject, facts, role=role)
        grants = await self._permissions.effective_grants(
            user, resource_type, resource_id, datetime.now(UTC)
        )
        return decide(subject, facts, grants, role=role)

    async def granted_ids(self, subject: Subject, resource_type: str) -> list[str]:
        """Ids of the records of ``resource_type`` the permissions table opens to the user;
        ``["*"]`` when a grant covers every record of that type."""
        try:
            user = uuid.UUID(subject.user_id)
        except ValueError:
            return []
        grants = await self._permissions.for_user(user, now=datetime.now(UTC))
        return [g.resource_id for g in grants if g.resource_type == resource_type]

    async def document_rights(
        self, subject: Subject, records: Sequence[Mapping[str, Any]]
    ) -> dict[str, Right]:
        """The subject's right on each of these business documents (records as stored),
        with one read of the user's grants for all of them."""
        ids = [str(record.get("documentId")) for record in records]
        if not subject.active:
            return dict.fromkeys(ids, Right.NONE)
        role = await self.roles.rights(subject.role)
        if role.document is Right.ADMIN:
            return dict.fromkeys(ids, Right.ADMIN)
        grants: list[Grant] = []
        try:
            user = uuid.UUID(subject.user_id)
        except ValueError:
            user = None
        if user is not None and records:
            everything = await self._permissions.for_user(user, now=datetime.now(UTC))
            grants = [g for g in everything if g.resource_type == RESOURCE_TYPE]
        now = datetime.now(UTC)
        return {
            doc_id: decide(
                subject,
                DocumentFacts.of(record),
                [g for g in grants if g.resource_id in (doc_id, "*")],
                now=now,
                role=role,
            )
            for doc_id, record in zip(ids, records, strict=True)
        }

    def forget(self, document_id: str) -> None:
        """Drop what is cached about one document (its record and its grants)."""
        for key in [k for k in self._cache if k[-1] == document_id]:
            del self._cache[key]

    def remember(self, document_id: str, record: Mapping[str, Any]) -> None:
        """Cache the facts of a document record this node just stored (its creation): the
        joins waiting on it need not read it back."""
        facts = DocumentFacts.of(record)
        self.forget(document_id)
        self._cache["doc", document_id] = _Cached(facts, self._clock() + self._ttl)

    def forget_user(self, user_id: str) -> None:
        """Drop the cached grants of one user (after a grant or a revocation made here)."""
        for key in [k for k in self._cache if k[0] == "grants" and k[1] == user_id]:
            del self._cache[key]

    async def _cached(self, key: tuple[str, ...], load: Callable[[], Awaitable[Any]]) -> Any:
        hit = self._cache.get(key)
        if hit is not None and hit.expires > self._clock():
            return hit.value
        return await self._inflight.run(key, lambda: self._load_into_cache(key, load))

    async def _load_into_cache(
        self, key: tuple[str, ...], load: Callable[[], Awaitable[Any]]
    ) -> Any:
        now = self._clock()
        value = await load()
        if len(self._cache) > 50_000:
            self._cache.clear()
        self._cache[key] = _Cached(value, now + self._ttl)
        return value
