"""The relational ports' contract (UserStore, RoleStore, PermissionStore, AuditStore).

Run against every backend of the SQL adapter: SQLite (a copy of a migrated file per test)
and PostgreSQL (a database per test, cloned from a migrated template, on the throwaway
server of ``conftest.py`` or on ``COLLAB_TEST_POSTGRES_URL``).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from persistence.errors import RecordNotFound, StorageConflict
from persistence.relational import (
    ANY_RESOURCE,
    AccessQuery,
    AuditEntry,
    AuditQuery,
    DataAccessEntry,
    NewUser,
    User,
    UserChanges,
    UserQuery,
)
from tests.services.postgres import T0, Relational

HOUR = timedelta(hours=1)
# Strings that would change a query's meaning if they were spliced into SQL.
INJECTIONS = [
    "' OR '1'='1",
    "' OR 1=1 --",
    "'; DROP TABLE users; --",
    '" OR ""="',
    "admin'--",
    "1; SELECT pg_sleep(5)",
    "%",
    "_",
    "\\",
    "*/ OR /*",
    ") OR (1=1",
]


async def add_user(rel: Relational, name: str, **fields: object) -> User:
    values: dict[str, object] = {"email": f"{name}@example.com", "name": name, "role": "viewer"}
    values.update(fields)
    return await rel.stores.users.add(NewUser(**values))  # type: ignore[arg-type]


# -- users -----------------------------------------------------------------------------------


async def test_add_then_get_returns_the_user(relational: Relational) -> None:
    users = relational.stores.users
    added = await users.add(
        NewUser(email="  Alice@Example.COM ", name="Älice “A” 🚀", role="admin", department="HQ")
    )
    assert added.email == "alice@example.com"
    assert (added.name, added.role, added.department) == ("Älice “A” 🚀", "admin", "HQ")
    assert (added.status, added.last_login, added.suspended_at) == ("active", None, None)
    assert added.created_at == added.updated_at == T0
    assert added.created_at.utcoffset() == timedelta(0)
    assert await users.get(added.id) == added
    assert await users.get_by_email("ALICE@example.com") == added
    assert await users.get(uuid.uuid4()) is None
    assert await users.get_by_email("nobody@example.com") is None
    assert await users.get_by_email("not an email") is None


async def test_timestamps_keep_microseconds_and_come_back_in_utc(relational: Relational) -> None:
    relational.clock.now = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=timezone(HOUR))
    user = await add_user(relational, "alice")
    expected = datetime(2026, 3, 1, 11, 0, 0, 123456, tzinfo=UTC)
    stored = await relational.stores.users.get(user.id)
    assert stored is not None
    assert stored.created_at == expected
    assert stored.created_at.tzinfo == UTC


async def test_duplicate_email_conflicts_whatever_its_case(relational: Relational) -> None:
    first = await add_user(relational, "alice")
    with pytest.raises(StorageConflict):
        await relational.stores.users.add(NewUser("ALICE@example.com", "Other", "viewer"))
    with pytest.raises(StorageConflict):  # the same id again
        await relational.stores.users.add(NewUser("bob@example.com", "Bob", "viewer", id=first.id))
    page = await relational.stores.users.find(UserQuery())
    assert [user.id for user in page.items] == [first.id]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"email": "no-at-sign"}, "not an email"),
        ({"email": "two@@example.com"}, "not an email"),
        ({"email": "a b@example.com"}, "not an email"),
        ({"email": "x" * 250 + "@example.com"}, "email must be"),
        ({"name": ""}, "name must be"),
        ({"name": "x" * 256}, "name must be"),
        ({"name": "nul\0byte"}, "name must be"),
        ({"role": "r" * 51}, "role must be"),
        ({"department": "d" * 101}, "department must be"),
        ({"status": "sleeping"}, "status must be one of"),
    ],
)
def test_new_user_is_checked_before_any_io(fields: dict[str, str], message: str) -> None:
    values: dict[str, Any] = {"email": "a@example.com", "name": "A", "role": "viewer", **fields}
    with pytest.raises(ValueError, match=message):
        NewUser(**values)


async def seed_users(rel: Relational) -> dict[str, User]:
    specs = [
        ("alice", "admin", "Sales", "active"),
        ("bob", "analyst", "Sales", "active"),
        ("carol", "analyst", "Research", "invited"),
        ("dave", "viewer", None, "active"),
        ("erin", "analyst", "Sales", "deactivated"),
    ]
    seeded = {}
    for name, role, department, status in specs:
        rel.clock.advance(minutes=1)
        seeded[name] = await add_user(rel, name, role=role, department=department, status=status)
    return seeded


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (UserQuery(), ["alice", "bob", "carol", "dave", "erin"]),
        (UserQuery(role="analyst"), ["bob", "carol", "erin"]),
        (UserQuery(department="Sales"), ["alice", "bob", "erin"]),
        (UserQuery(status="active"), ["alice", "bob", "dave"]),
        (UserQuery(role="analyst", department="Sales", status="active"), ["bob"]),
        (UserQuery(role="ANALYST"), []),  # exact match
        (UserQuery(sort="name", descending=True), ["erin", "dave", "carol", "bob", "alice"]),
        (UserQuery(sort="created_at", descending=True, limit=2), ["erin", "dave"]),
    ],
)
async def test_find_users_filters_and_sorts(
    relational: Relational, query: UserQuery, expected: list[str]
) -> None:
    await seed_users(relational)
    page = await relational.stores.users.find(query)
    assert [user.name for user in page.items] == expected
    assert page.total == (5 if query.limit == 2 else len(expected))


async def test_find_users_pages_with_a_total(relational: Relational) -> None:
    await seed_users(relational)
    seen: list[str] = []
    for offset in (0, 2, 4, 6):
        page = await relational.stores.users.find(UserQuery(limit=2, offset=offset))
        assert page.total == 5
        seen += [user.name for user in page.items]
    assert seen == ["alice", "bob", "carol", "dave", "erin"]


@pytest.mark.parametrize(
    "query",
    [
        {"limit": 0},
        {"limit": 201},
        {"offset": -1},
        {"sort": "password"},
        {"role": ""},
        {"department": "nul\0"},
    ],
)
def test_user_query_out_of_range_is_refused(query: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"must|sorted"):
        UserQuery(**query)  # type: ignore[arg-type]


async def test_update_sets_the_fields_given(relational: Relational) -> None:
    user = await add_user(relational, "alice", department="Sales")
    later = relational.clock.advance(hours=1)
    updated = await relational.stores.users.update(
        user.id, UserChanges(name="Alice B.", role="manager", department=None)
    )
    assert (updated.name, updated.role, updated.department) == ("Alice B.", "manager", None)
    assert (updated.email, updated.status, updated.created_at) == (
        user.email,
        "active",
        user.created_at,
    )
    assert updated.updated_at == later
    assert await relational.stores.users.get(user.id) == updated


async def test_update_unknown_user_is_not_found(relational: Relational) -> None:
    users = relational.stores.users
    with pytest.raises(RecordNotFound):
        await users.update(uuid.uuid4(), UserChanges(name="x"))
    with pytest.raises(RecordNotFound):
        await users.suspend(uuid.uuid4())
    with pytest.raises(RecordNotFound):
        await users.reactivate(uuid.uuid4())
    with pytest.raises(RecordNotFound):
        await users.record_login(uuid.uuid4(), T0)
    with pytest.raises(ValueError, match="nothing to change"):
        UserChanges()


async def test_suspend_and_reactivate(relational: Relational) -> None:
    users = relational.stores.users
    user = await add_user(relational, "alice")
    suspended_at = relational.clock.advance(hours=1)
    suspended = await users.suspend(user.id)
    assert (suspended.status, suspended.suspended_at) == ("suspended", suspended_at)
    relational.clock.advance(hours=1)
    again = await users.suspend(user.id)  # idempotent: the first suspension's time stays
    assert (again.status, again.suspended_at) == ("suspended", suspended_at)
    back = await users.reactivate(user.id)
    assert (back.status, back.suspended_at) == ("active", None)
    assert await users.reactivate(user.id) == await users.get(user.id)
    via_update = await users.update(user.id, UserChanges(status="suspended"))
    assert via_update.suspended_at == relational.clock.now
    gone = await users.update(user.id, UserChanges(status="deactivated"))
    assert (gone.status, gone.suspended_at) == ("deactivated", None)
    page = await users.find(UserQuery(status="deactivated"))
    assert [item.id for item in page.items] == [user.id]


async def test_record_login_sets_last_login_only(relational: Relational) -> None:
    user = await add_user(relational, "alice")
    login = datetime(2026, 2, 1, 8, 0, 0, 5, tzinfo=UTC)
    await relational.stores.users.record_login(user.id, login)
    stored = await relational.stores.users.get(user.id)
    assert stored is not None
    assert stored.last_login == login
    assert stored.updated_at == user.updated_at
    with pytest.raises(ValueError, match="timezone-aware"):
        await relational.stores.users.record_login(user.id, datetime(2026, 2, 1))


# -- roles -----------------------------------------------------------------------------------


# The roles the migrations seed (revision 0003; tests/unit/test_roles.py); the tests below
# look only at the others (the PostgreSQL database of these tests is emptied between tests).
SEEDED_ROLES = ("admin", "analyst", "manager", "viewer")


async def _custom(roles: Any) -> list[str]:
    return [role.name for role in await roles.list_all() if role.name not in SEEDED_ROLES]


async def test_roles_create_get_list(relational: Relational) -> None:
    roles = relational.stores.roles
    editor = await roles.create(
        "editor",
        description="Edits documents",
        permissions=["document:view", "document:edit", "document:view"],
    )
    assert editor.permissions == ("document:view", "document:edit")
    assert (editor.name, editor.description, editor.created_at) == (
        "editor",
        "Edits documents",
        T0,
    )
    viewer = await roles.create("reader")
    assert (viewer.permissions, viewer.description) == ((), None)
    assert await roles.get(editor.id) == editor
    assert await roles.get_by_name("reader") == viewer
    assert await roles.get(uuid.uuid4()) is None
    assert await roles.get_by_name("Reader") is None
    assert await _custom(roles) == ["editor", "reader"]


async def test_role_names_are_unique(relational: Relational) -> None:
    roles = relational.stores.roles
    await roles.create("editor")
    other = await roles.create("reviewer")
    with pytest.raises(StorageConflict):
        await roles.create("editor", permissions=["x"])
    with pytest.raises(StorageConflict):
        await roles.update(other.id, name="editor")
    assert await _custom(roles) == ["editor", "reviewer"]


async def test_role_update_and_delete(relational: Relational) -> None:
    roles = relational.stores.roles
    role = await roles.create("editor", description="d", permissions=["a"])
    renamed = await roles.update(role.id, name="author", permissions=["b", "c"])
    assert (renamed.name, renamed.description, renamed.permissions) == ("author", "d", ("b", "c"))
    cleared = await roles.update(role.id, description=None, permissions=[])
    assert (cleared.description, cleared.permissions) == (None, ())
    assert await roles.get(role.id) == cleared
    with pytest.raises(RecordNotFound):
        await roles.update(uuid.uuid4(), name="x")
    with pytest.raises(ValueError, match="nothing to change"):
        await roles.update(role.id)
    with pytest.raises(ValueError, match="not one string"):
        await roles.update(role.id, permissions="document:edit")
    assert await roles.delete(role.id) is True
    assert await roles.delete(role.id) is False
    assert await _custom(roles) == []


# -- permissions -----------------------------------------------------------------------------


async def test_grant_and_list(relational: Relational) -> None:
    perms = relational.stores.permissions
    alice = await add_user(relational, "alice")
    bob = await add_user(relational, "bob")
    until = T0 + 24 * HOUR
    first = await perms.grant(alice.id, "document", "d2", "edit", granted_by=bob.id)
    second = await perms.grant(alice.id, "document", "d1", "view", expires_at=until)
    relational.clock.advance(minutes=1)
    third = await perms.grant(bob.id, "document", "d1", "admin")
    assert (first.granted_by, first.granted_at, first.expires_at) == (bob.id, T0, None)
    assert second.expires_at == until
    assert await perms.for_user(alice.id) == [second, first]  # by resource
    assert await perms.for_resource("document", "d1") == [second, third]  # by grant time
    assert await perms.for_user(uuid.uuid4()) == []
    assert await perms.for_resource("project", "d1") == []


async def test_grant_is_an_upsert_on_user_and_resource(relational: Relational) -> None:
    perms = relational.stores.permissions
    alice = await add_user(relational, "alice")
    first = await perms.grant(alice.id, "document", "d1", "view", expires_at=T0 + HOUR)
    later = relational.clock.advance(hours=2)
    second = await perms.grant(alice.id, "document", "d1", "edit")
    assert second.id == first.id
    assert (second.permission_level, second.granted_at, second.expires_at) == ("edit", later, None)
    assert await perms.for_user(alice.id) == [second]


async def test_concurrent_grants_of_one_key_leave_one_row(relational: Relational) -> None:
    perms = relational.stores.permissions
    alice = await add_user(relational, "alice")
    levels = ["view", "comment", "edit", "approve", "admin"]
    await asyncio.gather(*(perms.grant(alice.id, "document", "d1", level) for level in levels))
    stored = await perms.for_user(alice.id)
    assert len(stored) == 1
    assert stored[0].permission_level in levels


async def test_grants_referencing_unknown_users_conflict(relational: Relational) -> None:
    perms = relational.stores.permissions
    alice = await add_user(relational, "alice")
    with pytest.raises(StorageConflict):
        await perms.grant(uuid.uuid4(), "document", "d1", "view")
    with pytest.raises(StorageConflict):
        await perms.grant(alice.id, "document", "d1", "view", granted_by=uuid.uuid4())
    assert await perms.for_resource("document", "d1") == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("document", "d1", "owner"), "permission level"),
        (("", "d1", "view"), "resource_type"),
        (("document", "x" * 256, "view"), "resource_id"),
    ],
)
async def test_grant_checks_its_input(
    relational: Relational, args: tuple[str, str, str], message: str
) -> None:
    alice = await add_user(relational, "alice")
    with pytest.raises(ValueError, match=message):
        await relational.stores.permissions.grant(alice.id, *args)
    with pytest.raises(ValueError, match="timezone-aware"):
        await relational.stores.permissions.grant(
            alice.id, "document", "d1", "view", expires_at=datetime(2030, 1, 1)
        )


async def test_effective_grants_honour_expiry_and_type_wide_grants(
    relational: Relational,
) -> None:
    perms = relational.stores.permissions
    alice = await add_user(relational, "alice")
    bob = await add_user(relational, "bob")
    now = T0 + 10 * HOUR
    exact = await perms.grant(alice.id, "document", "d1", "edit", expires_at=now + HOUR)
    wide = await perms.grant(alice.id, "document", ANY_RESOURCE, "view")
    await perms.grant(alice.id, "document", "d2", "admin", expires_at=now)  # expired at now
    await perms.grant(alice.id, "project", "d1", "admin")  # another type
    await perms.grant(bob.id, "document", "d1", "admin")  # another user
    assert await perms.effective_grants(alice.id, "document", "d1", now) == [exact, wide]
    assert await perms.effective_grants(alice.id, "document", "d2", now) == [wide]
    d2 = (await perms.for_resource("document", "d2"))[0]
    assert await perms.effective_grants(alice.id, "document", "d2", now - HOUR) == [d2, wide]
    later = now + HOUR  # the d1 grant expires exactly then: no longer effective
    assert await perms.effective_grants(alice.id, "document", "d1", later) == [wide]
    assert await perms.effective_grants(alice.id, "strategy", "d1", now) == []
    live = [(g.resource_type, g.resource_id) for g in await perms.for_user(alice.id, now=later)]
    assert live == [("document", ANY_RESOURCE), ("project", "d1")]
    with pytest.raises(ValueError, match="timezone-aware"):
        await perms.effective_grants(alice.id, "document", "d1", datetime(2026, 1, 1))


async def test_listing_with_now_leaves_out_expired_grants(relational: Relational) -> None:
    perms = relational.stores.permissions
    alice = await add_user(relational, "alice")
    now = T0 + HOUR
    live = await perms.grant(alice.id, "document", "d1", "view", expires_at=now + HOUR)
    await perms.grant(alice.id, "document", "d2", "view", expires_at=now)
    forever = await perms.grant(alice.id, "document", "d3", "view")
    assert await perms.for_user(alice.id, now=now) == [live, forever]
    assert len(await perms.for_user(alice.id)) == 3
    assert await perms.for_resource("document", "d2", now=now) == []
    assert await perms.delete_expired(now) == 1
    assert await perms.delete_expired(now) == 0
    assert len(await perms.for_user(alice.id)) == 2


async def test_revoke(relational: Relational) -> None:
    perms = relational.stores.permissions
    alice = await add_user(relational, "alice")
    await perms.grant(alice.id, "document", "d1", "edit")
    assert await perms.revoke(alice.id, "document", "d1") is True
    assert await perms.revoke(alice.id, "document", "d1") is False
    assert await perms.effective_grants(alice.id, "document", "d1", T0) == []


# -- audit -----------------------------------------------------------------------------------


def audit(user: User, minutes: float, **fields: object) -> AuditEntry:
    values: dict[str, object] = {
        "user_id": user.id,
        "action": "update",
        "resource_type": "document",
        "resource_id": "d1",
        "created_at": T0 + timedelta(minutes=minutes),
    }
    values.update(fields)
    return AuditEntry(**values)  # type: ignore[arg-type]


async def test_audit_entries_round_trip(relational: Relational) -> None:
    alice = await add_user(relational, "alice")
    full = audit(
        alice,
        1,
        changes={"title": {"from": "Old", "to": "Ünïcode 🚀"}, "tags": ["a", 1, 2.5, None, True]},
        ip_address="2001:DB8::0001",
        user_agent="x" * 600,
        status="failure",
        error_message="permission denied",
    )
    bare = audit(alice, 2, resource_id=None, ip_address=" 192.0.2.7 ")
    await relational.stores.audit.append([full, bare])
    page = await relational.stores.audit.query(AuditQuery())
    assert page.items == [bare, full]
    assert page.next_cursor is None
    assert full.ip_address == "2001:db8::1"
    assert full.user_agent == "x" * 500
    assert bare.ip_address == "192.0.2.7"
    assert (bare.changes, bare.status, bare.error_message) == (None, "success", None)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"ip_address": "999.1.1.1"}, "not an IP address"),
        ({"changes": {"x": float("nan")}}, "must be JSON"),
        ({"changes": {"x": {1, 2}}}, "must be JSON"),
        ({"changes": {"x": "nul\0"}}, "NUL"),
        ({"action": ""}, "action must be"),
        ({"created_at": datetime(2026, 1, 1)}, "timezone-aware"),
    ],
)
def test_audit_entries_are_checked(fields: dict[str, object], message: str) -> None:
    user = User(uuid.uuid4(), "a@b.c", "A", "viewer", None, "active", None, None, T0, T0)
    with pytest.raises(ValueError, match=message):
        audit(user, 0, **fields)


async def test_audit_append_is_one_transaction(relational: Relational) -> None:
    alice = await add_user(relational, "alice")
    ghost = User(uuid.uuid4(), "g@x.y", "Ghost", "viewer", None, "active", None, None, T0, T0)
    entries = [audit(alice, 1), audit(alice, 2), audit(ghost, 3), audit(alice, 4)]
    with pytest.raises(StorageConflict):
        await relational.stores.audit.append(entries)
    assert (await relational.stores.audit.query(AuditQuery())).items == []


async def test_audit_append_is_idempotent_per_entry(relational: Relational) -> None:
    alice = await add_user(relational, "alice")
    entries = [audit(alice, minute) for minute in range(3)]
    await relational.stores.audit.append(entries)
    await relational.stores.audit.append([*entries, audit(alice, 3)])  # a retry, plus one
    await relational.stores.audit.append([])
    page = await relational.stores.audit.query(AuditQuery())
    assert len(page.items) == 4


async def seed_audit(rel: Relational) -> tuple[User, User, list[AuditEntry]]:
    alice = await add_user(rel, "alice")
    bob = await add_user(rel, "bob")
    entries = [
        audit(alice, 0, action="create"),
        audit(alice, 10, action="update"),
        audit(bob, 20, action="view", resource_id="d2"),
        audit(alice, 30, action="export", resource_type="project", resource_id="p1"),
        audit(bob, 40, action="update"),
        audit(alice, 50, action="update", resource_id="d2"),
    ]
    await rel.stores.audit.append(entries)
    return alice, bob, entries


async def test_audit_queries_by_user_resource_action_and_time(relational: Relational) -> None:
    alice, bob, e = await seed_audit(relational)
    query = relational.stores.audit.query

    async def items(**fields: object) -> list[AuditEntry]:
        return (await query(AuditQuery(**fields))).items  # type: ignore[arg-type]

    assert await items() == e[::-1]
    assert await items(user_id=alice.id) == [e[5], e[3], e[1], e[0]]
    assert await items(user_id=bob.id, action="update") == [e[4]]
    assert await items(resource_type="document", resource_id="d1") == [e[4], e[1], e[0]]
    assert await items(resource_type="project") == [e[3]]
    assert await items(action="update") == [e[5], e[4], e[1]]
    at = T0 + timedelta(minutes=10)
    assert await items(since=at, until=T0 + timedelta(minutes=40)) == [e[3], e[2], e[1]]
    assert await items(since=T0 + timedelta(minutes=50)) == [e[5]]
    assert await items(until=T0) == []
    assert await items(user_id=uuid.uuid4()) == []
    with pytest.raises(ValueError, match="since must not be after until"):
        AuditQuery(since=at, until=T0)


async def test_audit_pages_with_a_cursor_through_ties(relational: Relational) -> None:
    alice = await add_user(relational, "alice")
    # Five entries per moment: the id breaks ties, and no row is skipped or seen twice.
    entries = [audit(alice, minute // 5) for minute in range(23)]
    await relational.stores.audit.append(entries)
    seen: list[AuditEntry] = []
    cursor = None
    for _ in range(10):
        page = await relational.stores.audit.query(AuditQuery(limit=4, cursor=cursor))
        seen += page.items
        cursor = page.next_cursor
        if cursor is None:
            break
    assert len(seen) == 23
    assert {entry.id for entry in seen} == {entry.id for entry in entries}
    keys = [(entry.created_at, entry.id) for entry in seen]
    assert keys == sorted(keys, reverse=True)
    # Rows appended after a page was read never shift the pages that follow it.
    first = await relational.stores.audit.query(AuditQuery(limit=4))
    await relational.stores.audit.append([audit(alice, 100)])
    rest = await relational.stores.audit.query(AuditQuery(limit=200, cursor=first.next_cursor))
    assert [e.id for e in first.items + rest.items] == [e.id for e in seen]


@pytest.mark.parametrize("cursor", ["", "garbage", "Zm9vfGJhcg==", "MjAyNnx4"])
def test_malformed_cursors_are_refused(cursor: str) -> None:
    with pytest.raises(ValueError, match=r"invalid cursor|timezone-aware"):
        AuditQuery(cursor=cursor)
    with pytest.raises(ValueError, match=r"invalid cursor|timezone-aware"):
        AccessQuery(cursor=cursor)


def access(user: User, minutes: float, document: str = "d1", **fields: object) -> DataAccessEntry:
    moment = T0 + timedelta(minutes=minutes)
    return DataAccessEntry(
        user_id=user.id,
        document_id=document,
        access_type="view",
        accessed_at=moment,
        **fields,  # type: ignore[arg-type]
    )


async def test_access_log_appends_in_batches(relational: Relational) -> None:
    alice = await add_user(relational, "alice")
    bob = await add_user(relational, "bob")
    entries = [access(alice if n % 2 else bob, n / 10, f"d{n % 7}") for n in range(1201)]
    appended = await relational.stores.audit.append_access(entries, batch_size=500)
    assert appended == 1201
    assert await relational.stores.audit.append_access(entries[:700], batch_size=500) == 0
    everything = []
    cursor = None
    while True:
        page = await relational.stores.audit.query_access(AccessQuery(limit=200, cursor=cursor))
        everything += page.items
        if (cursor := page.next_cursor) is None:
            break
    assert sorted(everything, key=lambda e: e.id) == sorted(entries, key=lambda e: e.id)
    with pytest.raises(ValueError, match="batch_size"):
        await relational.stores.audit.append_access(entries, batch_size=0)


async def test_access_log_batch_failure_keeps_earlier_batches(relational: Relational) -> None:
    alice = await add_user(relational, "alice")
    ghost = User(uuid.uuid4(), "g@x.y", "Ghost", "viewer", None, "active", None, None, T0, T0)
    good = [access(alice, n) for n in range(3)]
    bad = [access(alice, 3), access(ghost, 4), access(alice, 5)]
    with pytest.raises(StorageConflict):
        await relational.stores.audit.append_access([*good, *bad], batch_size=3)
    stored = (await relational.stores.audit.query_access(AccessQuery())).items
    assert {entry.id for entry in stored} == {entry.id for entry in good}
    # Calling again with what can be stored is safe: stored entries are skipped.
    assert await relational.stores.audit.append_access([*good, bad[0], bad[2]]) == 2


async def test_access_log_queries(relational: Relational) -> None:
    alice = await add_user(relational, "alice")
    bob = await add_user(relational, "bob")
    e = [
        access(alice, 0, "d1", data_sensitivity="confidential"),
        access(bob, 1, "d1"),
        access(alice, 2, "d2"),
        DataAccessEntry(alice.id, "d1", "export", accessed_at=T0 + timedelta(minutes=3)),
    ]
    await relational.stores.audit.append_access(e)
    query = relational.stores.audit.query_access

    async def items(**fields: object) -> list[DataAccessEntry]:
        return (await query(AccessQuery(**fields))).items  # type: ignore[arg-type]

    assert await items(user_id=alice.id) == [e[3], e[2], e[0]]
    assert await items(document_id="d1") == [e[3], e[1], e[0]]
    assert await items(access_type="export") == [e[3]]
    assert await items(user_id=alice.id, document_id="d1", until=T0 + HOUR) == [e[3], e[0]]
    assert await items(since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=3)) == [
        e[2],
        e[1],
    ]
    assert e[0].data_sensitivity == "confidential"


# -- every text filter is a bound parameter --------------------------------------------------


async def test_sql_in_text_filters_matches_nothing(relational: Relational) -> None:
    stores = relational.stores
    alice = await add_user(relational, "alice", department="Sales")
    await stores.roles.create("editor", permissions=["document:edit"])
    await stores.permissions.grant(alice.id, "document", "d1", "edit")
    wide = await stores.permissions.grant(alice.id, "document", ANY_RESOURCE, "view")
    await stores.audit.append([audit(alice, 0)])
    await stores.audit.append_access([access(alice, 0)])

    for text in INJECTIONS:
        for query in (UserQuery(role=text), UserQuery(status=text), UserQuery(department=text)):
            assert (await stores.users.find(query)).total == 0, (query, text)
        assert await stores.users.get_by_email(text) is None, text
        assert await stores.users.get_by_email(f"{text}@example.com") is None, text
        assert await stores.roles.get_by_name(text) is None, text
        assert await stores.permissions.for_resource(text, text) == [], text
        assert await stores.permissions.for_resource("document", text) == [], text
        assert await stores.permissions.effective_grants(alice.id, text, "d1", T0) == [], text
        effective = await stores.permissions.effective_grants(alice.id, "document", text, T0)
        assert effective == [wide], text
        assert await stores.permissions.revoke(alice.id, "document", text) is False, text
        for audit_query in (
            AuditQuery(action=text),
            AuditQuery(resource_type=text),
            AuditQuery(resource_id=text),
        ):
            assert (await stores.audit.query(audit_query)).items == [], (audit_query, text)
        for access_query in (AccessQuery(document_id=text), AccessQuery(access_type=text)):
            assert (await stores.audit.query_access(access_query)).items == [], text

    # Nothing was changed or dropped...
    assert (await stores.users.find(UserQuery())).total == 1
    assert await _custom(stores.roles) == ["editor"]
    assert len(await stores.permissions.for_user(alice.id)) == 2
    assert len((await stores.audit.query(AuditQuery())).items) == 1
    assert len((await stores.audit.query_access(AccessQuery())).items) == 1
    # ... and the same strings are stored and found literally.
    for n, text in enumerate(INJECTIONS):
        role = await stores.roles.create(text, description=text, permissions=[text])
        assert await stores.roles.get_by_name(text) == role
        user = await add_user(relational, f"user{n}", department=text, role=text)
        found = await stores.users.find(UserQuery(department=text, role=text))
        assert [item.id for item in found.items] == [user.id], text
