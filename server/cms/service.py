"""The records of one CMS collection: create, read, update, delete, list, with rights and audit.

:class:`CmsService` is the generic part every collection shares; ``projects.py``,
``plans.py``, ``opportunities.py``, ``research.py`` and ``articles.py`` subclass it with
what their collection needs beyond CRUD. No HTTP here: refusals are the domain errors of
:mod:`server.errors` (422 names the field).

Rights come from the one rights function (:func:`server.identity.rights.decide`), fed with
the record's facts: its owner field (``owner``, or ``author``) gives admin, the users its
kind names give edit (a project's stakeholders, an opportunity's account manager) or
approve (a plan's approvers), ``createdBy`` gives view, plus the ``permissions`` rows on
the record's resource type and the roles (admins and managers see everything; viewers may
not create). A caller who may not view a record gets 404 (its existence is not disclosed).

Every change queues an audit row (``create``, ``update``, ``delete``, ``status_change``...)
on the record's resource type; every read of a record queues a data-access row whose
``document_id`` is ``{resourceType}:{id}``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from persistence.content.cms_ports import CmsQueries
from persistence.content.ports import (
    MAX_PAGE_SIZE,
    MAX_QUERY_IDS,
    Bound,
    ContentStore,
    Page,
    Query,
    collection_spec,
)
from persistence.coordinator.ports import StatsCounters
from persistence.errors import DocumentNotFound, StorageConflict
from persistence.keyed import Hold, KeyedLocks
from persistence.relational import NewNotification, User
from persistence.relational.review_ports import ApprovalStore
from server.cms.schema import Flag, Number, Refs, check_record_id, jsonable, patch_value
from server.cms.tables import Kind
from server.errors import ConflictError, ForbiddenError, InvalidError, NotFoundError
from server.identity.audit import AuditTrail
from server.identity.authentication import Principal
from server.identity.rights import (
    AccessControl,
    DocumentFacts,
    Right,
)

MAX_TEXT_QUERY: Final = 200


class UserDirectory(Protocol):
    """Who the users are (the authenticator's cached lookup)."""

    async def user(self, user_id: str) -> User | None: ...


def _no_notification(notifications: Sequence[NewNotification]) -> None:
    """The default of :attr:`CmsPorts.notify`: nobody is told."""


@dataclass(frozen=True, slots=True)
class CmsPorts:
    """What the CMS services need: the content store and its CMS queries, the rights, the
    users, the audit trail, the approval store (plans), the stats counters, and ``notify``
    (sends notifications in the background; the app's notifier)."""

    content: ContentStore
    queries: CmsQueries
    access: AccessControl
    users: UserDirectory
    audit: AuditTrail
    approvals: ApprovalStore
    stats: StatsCounters
    notify: Callable[[Sequence[NewNotification]], None] = _no_notification


@dataclass(frozen=True, slots=True)
class Listing:
    """One page of a list request, checked by the HTTP layer for shape (names, integers)."""

    filters: Mapping[str, str] = field(default_factory=dict)
    ranges: Mapping[str, tuple[str | None, str | None]] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    text: str | None = None
    sort: str | None = None
    descending: bool = True
    limit: int = 20
    offset: int = 0


def _values_at(record: Mapping[str, Any], path: str) -> set[str]:
    """The string values at ``field`` or ``array.field`` of a record."""
    head, _, tail = path.partition(".")
    value = record.get(head)
    if not tail:
        items = value if isinstance(value, list) else [value]
        return {v for v in items if isinstance(v, str)}
    if not isinstance(value, list):
        return set()
    return {v for item in value if isinstance(item, dict) and isinstance(v := item.get(tail), str)}


def now_ms() -> datetime:
    moment = datetime.now(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


class CmsService:
    """The records of ``kind.collection`` (see the module docstring)."""

    def __init__(self, ports: CmsPorts, kind: Kind) -> None:
        self.ports = ports
        self.kind = kind
        self._locks: KeyedLocks[str] = KeyedLocks()

    # -- rights ----------------------------------------------------------------------------------

    def facts(self, record: Mapping[str, Any]) -> DocumentFacts:
        kind = self.kind
        owner = record.get(kind.owner_field)
        edit: set[str] = set()
        for path in kind.edit_fields:
            edit |= _values_at(record, path)
        approve: set[str] = set()
        for path in kind.approve_fields:
            approve |= _values_at(record, path)
        status = record.get(kind.status_field)
        return DocumentFacts(
            owner=owner if isinstance(owner, str) else None,
            view=frozenset(_values_at(record, "createdBy")),
            edit=frozenset(edit),
            approve=frozenset(approve),
            status=status if isinstance(status, str) else None,
        )

    async def right(self, actor: Principal, record: Mapping[str, Any]) -> Right:
        if actor.documents is not None:
            return Right.NONE  # a token scoped to documents opens no other resource
        record_id = str(record.get(self.kind.id_field))
        return await self.ports.access.resource_right(
            actor.subject, self.kind.resource_type, record_id, self.facts(record)
        )

    async def fetch(self, actor: Principal, record_id: str, needed: Right) -> dict[str, Any]:
        """The record, if the actor has ``needed`` on it: 404 when they may not view it (or
        it does not exist), 403 when they may view it but lack ``needed``."""
        check_record_id(record_id, self.kind.id_field)
        record = await self.ports.content.get(self.kind.collection, record_id)
        missing = NotFoundError(f"no {self.kind.label} {record_id!r}", what=self.kind.label)
        if record is None:
            raise missing
        right = await self.right(actor, record)
        if right < Right.VIEW:
            raise missing
        if right < needed:
            self.audit(actor, "denied", record_id, {"needs": needed.label}, error="forbidden")
            raise ForbiddenError(
                f"this needs the {needed.label} right on the {self.kind.label}; "
                f"you have {right.label}"
            )
        return record

    # -- audit -----------------------------------------------------------------------------------

    def audit(
        self,
        actor: Principal,
        action: str,
        record_id: str,
        changes: Any = None,
        *,
        error: str | None = None,
    ) -> None:
        self.ports.audit.record(
            actor.context.entry(
                action, self.kind.resource_type, record_id, jsonable(changes), error=error
            )
        )

    def accessed(self, actor: Principal, record_id: str, access_type: str = "read") -> None:
        key = f"{self.kind.resource_type}:{record_id}"
        self.ports.audit.access(actor.context.access(key, access_type))

    def lock(self, record_id: str) -> Hold[str]:
        """The lock serialising read-modify-write changes of one record on this node
        (``async with``; :mod:`persistence.keyed`)."""
        return self._locks.hold(record_id)

    # -- references ------------------------------------------------------------------------------

    async def check_refs(self, refs: Refs) -> None:
        """422 naming the field of the first unknown user or record referenced."""
        for user_id, path in refs.users.items():
            if await self.ports.users.user(user_id) is None:
                raise InvalidError(f"no user {user_id}", field=path)
        for collection, ids in refs.records.items():
            wanted = list(ids)
            for start in range(0, len(wanted), MAX_PAGE_SIZE):
                chunk = tuple(wanted[start : start + MAX_PAGE_SIZE])
                page = await self.ports.content.find(
                    collection, Query(ids=chunk, limit=MAX_PAGE_SIZE)
                )
                id_field = _id_field(collection)
                found = {item.get(id_field) for item in page.items}
                for record_id in chunk:
                    if record_id not in found:
                        raise InvalidError(
                            f"no {collection} record {record_id!r}", field=ids[record_id]
                        )

    # -- create ----------------------------------------------------------------------------------

    def _refuse_server_fields(self, body: Mapping[str, Any]) -> None:
        for name in body:
            if name in self.kind.server_fields:
                raise InvalidError("is set by the server", field=name)

    async def create(self, actor: Principal, body: Mapping[str, Any]) -> dict[str, Any]:
        """Store a new record from a request body; its id is generated when absent."""
        kind = self.kind
        if actor.documents is not None or not await self.ports.access.may_create(actor.subject):
            raise ForbiddenError(f"the {actor.role} role may not create a {kind.label}")
        self._refuse_server_fields(body)
        refs = Refs()
        record: dict[str, Any] = kind.shape.check(body, "", refs)
        record_id = record.get(kind.id_field) or uuid.uuid4().hex
        record[kind.id_field] = check_record_id(record_id, kind.id_field)
        record = {name: value for name, value in record.items() if value is not None}
        record.setdefault(kind.owner_field, actor.user_id)
        status = record.setdefault(kind.status_field, kind.initial_status)
        if kind.transitions is not None and status != kind.initial_status:
            raise InvalidError(
                f"a new {kind.label} starts as {kind.initial_status!r}", field=kind.status_field
            )
        await self.check_refs(refs)
        moment = now_ms()
        stamps = {"createdAt": moment, kind.updated_field: moment, "createdBy": actor.user_id}
        record.update({k: v for k, v in stamps.items() if k in kind.server_fields})
        await self.before_create(actor, record)
        try:
            stored = await self.ports.content.insert(kind.collection, record)
        except StorageConflict as exc:
            if await self.ports.content.get(kind.collection, record[kind.id_field]) is None:
                # Not the id: the other unique key, the slug (taken since it was checked).
                raise ConflictError(
                    f"slug {record.get('slug')!r} is taken", title="slug taken"
                ) from exc
            raise ConflictError(
                f"{kind.id_field} {record[kind.id_field]!r} is taken", title=f"{kind.label} exists"
            ) from exc
        self.audit(actor, "create", stored[kind.id_field], {"after": stored})
        return stored

    async def before_create(self, actor: Principal, record: dict[str, Any]) -> None:
        """What a collection adds to a new record (a slug, a stage history...)."""

    # -- read ------------------------------------------------------------------------------------

    async def read(self, actor: Principal, record_id: str) -> dict[str, Any]:
        record = await self.fetch(actor, record_id, Right.VIEW)
        self.accessed(actor, record_id)
        return record

    # -- update ----------------------------------------------------------------------------------

    async def update(
        self, actor: Principal, record_id: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """A partial update: each field given replaces the stored one, a keyed array may be
        edited by key instead (:func:`server.cms.schema.patch_value`)."""
        kind = self.kind
        if not body:
            raise InvalidError("nothing to change", field="(body)")
        self._refuse_server_fields(body)
        if kind.id_field in body:
            raise InvalidError("cannot be changed", field=kind.id_field)
        async with self.lock(record_id):
            record = await self.fetch(actor, record_id, Right.EDIT)
            changes = await self._changes(actor, record, body)
            if not changes:
                return record
            await self.before_update(actor, record, changes)
            before = {name: record.get(name) for name in changes}
            stamped = {**changes}
            if kind.updated_field in kind.server_fields:
                stamped[kind.updated_field] = now_ms()
            stored = await self._store_update(record_id, stamped)
        action = "status_change" if kind.status_field in changes else "update"
        self.audit(actor, action, record_id, {"before": before, "after": changes})
        return stored

    async def _changes(
        self, actor: Principal, record: Mapping[str, Any], body: Mapping[str, Any]
    ) -> dict[str, Any]:
        kind = self.kind
        refs = Refs()
        changes: dict[str, Any] = {}
        for name, value in body.items():
            field_type = kind.shape.fields.get(name)
            if field_type is None:
                raise InvalidError("unknown field", field=name)
            if value is None and name in (
                *kind.shape.required,
                kind.status_field,
                kind.owner_field,
            ):
                raise InvalidError("may not be null", field=name)
            new = patch_value(field_type, record.get(name), value, name, refs)
            if new != record.get(name):
                changes[name] = new
        await self.check_refs(refs)
        privileged = {kind.owner_field, *(f.partition(".")[0] for f in kind.approve_fields)}
        if privileged & set(changes) and await self.right(actor, record) < Right.ADMIN:
            raise ForbiddenError(
                f"changing {sorted(privileged & set(changes))} needs the admin right"
            )
        if kind.status_field in changes:
            self.check_transition(record.get(kind.status_field), changes[kind.status_field])
        return changes

    def check_transition(self, current: object, target: object) -> None:
        moves = self.kind.transitions
        if moves is None:
            return
        if not isinstance(current, str) or target not in moves.get(current, frozenset()):
            raise ConflictError(
                f"a {self.kind.label} cannot go from {current!r} to {target!r} this way",
                title="invalid status transition",
                extra={"currentStatus": current},
            )

    async def before_update(
        self, actor: Principal, record: Mapping[str, Any], changes: dict[str, Any]
    ) -> None:
        """What a collection adds to a change (a stage history entry, a close date...)."""

    async def _store_update(self, record_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        try:
            return await self.ports.content.update(self.kind.collection, record_id, fields)
        except DocumentNotFound as exc:
            raise NotFoundError(
                f"no {self.kind.label} {record_id!r}", what=self.kind.label
            ) from exc

    async def set_fields(
        self, actor: Principal, record_id: str, fields: Mapping[str, Any], action: str
    ) -> dict[str, Any]:
        """Store server-made changes (a workflow's) with the updated stamp, audited."""
        stamped = dict(fields)
        if self.kind.updated_field in self.kind.server_fields:
            stamped[self.kind.updated_field] = now_ms()
        stored = await self._store_update(record_id, stamped)
        self.audit(actor, action, record_id, {"after": dict(fields)})
        return stored

    # -- delete ----------------------------------------------------------------------------------

    async def delete(self, actor: Principal, record_id: str, *, hard: bool) -> str:
        """Archive the record where its collection has an archived status, else delete it;
        ``hard`` deletes (admins only). Returns ``"archive"`` or ``"hard"``."""
        kind = self.kind
        if hard and actor.role != "admin":
            raise ForbiddenError("only admins delete for good")
        async with self.lock(record_id):
            record = await self.fetch(actor, record_id, Right.ADMIN)
            if hard or kind.archive_status is None:
                await self.ports.content.delete(kind.collection, record_id)
                mode = "hard"
            else:
                mode = "archive"
                if record.get(kind.status_field) != kind.archive_status:
                    await self._store_update(record_id, {kind.status_field: kind.archive_status})
        self.audit(actor, "delete", record_id, {"mode": mode})
        return mode

    # -- list ------------------------------------------------------------------------------------

    async def visible(self, actor: Principal) -> dict[str, Any]:
        """The Query arguments that keep a listing to what the actor may view."""
        if actor.documents is not None:
            return {"ids": ()}
        subject = actor.subject
        if await self.ports.access.visibility(subject) is None:  # a role that sees everything
            return {}
        granted = await self.ports.access.granted_ids(subject, self.kind.resource_type)
        if "*" in granted:
            return {}
        return {
            "accessible_to": actor.user_id,
            "accessible_ids": tuple(sorted(set(granted)))[:MAX_QUERY_IDS],
        }

    def query(self, listing: Listing, visible: Mapping[str, Any]) -> Query:
        kind = self.kind
        filters: dict[str, Any] = {}
        for param, value in listing.filters.items():
            name = kind.filters.get(param)
            if name is None:
                raise InvalidError("cannot filter on this", field=param)
            filters[name] = self._filter_value(name, value, param)
        ranges = {
            name: self._bounds(name, low, high) for name, (low, high) in listing.ranges.items()
        }
        sort = listing.sort or kind.default_sort
        if sort not in kind.sorts:
            raise InvalidError(f"one of {sorted(kind.sorts)}", field="sort")
        if listing.tags and not kind.tags:
            raise InvalidError(f"a {kind.label} has no tags", field="tag")
        if listing.text is not None and len(listing.text) > MAX_TEXT_QUERY:
            raise InvalidError(f"at most {MAX_TEXT_QUERY} characters", field="q")
        try:
            return Query(
                filters=filters,
                ranges=ranges,
                tags_all=listing.tags,
                text=listing.text or None,
                sort=sort,
                descending=listing.descending,
                limit=listing.limit,
                offset=listing.offset,
                **visible,
            )
        except ValueError as exc:
            raise InvalidError(str(exc), field="query") from exc

    def _filter_value(self, name: str, value: str, param: str) -> Any:
        field_type = self.kind.shape.fields.get(name)
        refs = Refs()
        try:
            if isinstance(field_type, Number):
                return field_type.check(float(value) if "." in value else int(value), param, refs)
            if isinstance(field_type, Flag):
                return field_type.check(
                    {"true": True, "false": False}.get(value, value), param, refs
                )
            if field_type is not None:
                return field_type.check(value, param, refs)
        except ValueError:
            raise InvalidError("must be a number", field=param) from None
        return value

    def _bounds(self, name: str, low: str | None, high: str | None) -> tuple[Bound, Bound]:
        field_type = self.kind.shape.fields.get(name)
        refs = Refs()

        def one(raw: str | None, suffix: str) -> Bound:
            if raw is None:
                return None
            where = f"{name}{suffix}"
            if isinstance(field_type, Number):
                try:
                    number = float(raw)
                except ValueError:
                    raise InvalidError("must be a number", field=where) from None
                checked: Bound = field_type.check(number, where, refs)
                return checked
            assert field_type is not None
            moment: Bound = field_type.check(raw, where, refs)
            return moment

        bounds = (one(low, "From"), one(high, "To"))
        if bounds[0] is not None and bounds[1] is not None and bounds[0] > bounds[1]:  # type: ignore[operator]
            raise InvalidError(f"{name}From is after {name}To", field=f"{name}From")
        return bounds

    async def list(self, actor: Principal, listing: Listing) -> Page:
        query = self.query(listing, await self.visible(actor))
        return await self.ports.content.find(self.kind.collection, query)


def _id_field(collection: str) -> str:
    return collection_spec(collection).id_field


def without(record: Mapping[str, Any], hidden: Sequence[str]) -> dict[str, Any]:
    return {key: value for key, value in record.items() if key not in hidden}
