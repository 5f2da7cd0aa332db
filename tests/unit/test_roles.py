"""Roles from the ``roles`` table (``server/identity/roles.py``): the seeded built-ins, the
cache and its bound, custom roles in the rights function, a store outage."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from persistence.errors import StorageUnavailable
from persistence.relational import Role, migrate, open_relational
from server.identity.rights import DocumentFacts, Right, Subject, decide, may_create
from server.identity.roles import BUILT_IN_ROLES, PERMISSIONS, RoleBook, RoleRights

NOW = datetime(2026, 12, 7, tzinfo=UTC)


class FakeRoles:
    """A RoleStore holding a list of roles in memory; ``fail`` makes reads unavailable."""

    def __init__(self, roles: dict[str, Sequence[str]]) -> None:
        self.roles = dict(roles)
        self.fail = False
        self.reads = 0

    async def list_all(self) -> list[Role]:
        self.reads += 1
        if self.fail:
            raise StorageUnavailable("down")
        return [
            Role(uuid.uuid4(), name, None, tuple(permissions), NOW)
            for name, permissions in sorted(self.roles.items())
        ]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_the_migration_seeds_the_built_in_roles(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'r.sqlite3'}"
    await migrate(url)
    async with await open_relational(url) as stores:
        seeded = {role.name: role.permissions for role in await stores.roles.list_all()}
        await stores.roles.create("contractor", permissions=["documents:view"])
    assert seeded == dict(BUILT_IN_ROLES)
    assert await migrate(url) == []  # at head: the seed is not applied twice
    for strings in BUILT_IN_ROLES.values():
        assert set(strings) <= set(PERMISSIONS), "every seeded string is documented"


async def test_a_change_in_the_table_is_seen_after_the_ttl_not_before() -> None:
    store, clock = FakeRoles({"contractor": ["documents:view"]}), Clock()
    book = RoleBook(store, ttl=2.0, clock=clock)  # type: ignore[arg-type]
    assert (await book.rights("contractor")).document is Right.VIEW
    store.roles["contractor"] = ["documents:edit", "documents:create"]
    clock.now = 1.9
    assert (await book.rights("contractor")).document is Right.VIEW  # cached
    clock.now = 2.0
    rights = await book.rights("contractor")
    assert (rights.document, rights.create) == (Right.EDIT, True)
    assert store.reads == 2


async def test_forget_reads_the_table_at_the_next_question() -> None:
    store, clock = FakeRoles({}), Clock()
    book = RoleBook(store, clock=clock)  # type: ignore[arg-type]
    assert await book.allows("auditor", "audit:read") is False
    store.roles["auditor"] = ["audit:read"]
    book.forget()
    assert await book.allows("auditor", "audit:read") is True


async def test_unknown_roles_have_nothing_and_built_ins_survive_an_emptied_table() -> None:
    book = RoleBook(FakeRoles({}), clock=Clock())  # type: ignore[arg-type]
    assert await book.rights("nobody") == RoleRights()
    assert (await book.rights("admin")).document is Right.ADMIN
    assert await book.allows("admin", "users:manage")
    assert not await book.allows("manager", "users:manage")


async def test_an_outage_keeps_the_last_table_read(caplog: pytest.LogCaptureFixture) -> None:
    store, clock = FakeRoles({"contractor": ["documents:comment"]}), Clock()
    book = RoleBook(store, ttl=1.0, clock=clock)  # type: ignore[arg-type]
    assert (await book.rights("contractor")).document is Right.COMMENT
    store.fail = True
    clock.now = 5.0
    assert (await book.rights("contractor")).document is Right.COMMENT
    assert "reading the roles failed" in caplog.text


def test_a_custom_role_in_the_rights_function() -> None:
    editor = RoleRights.of(["documents:edit", "something-else"])
    subject = Subject("u1", "contractor")
    assert decide(subject, DocumentFacts(), role=editor, now=NOW) is Right.EDIT
    assert decide(subject, DocumentFacts(), now=NOW) is Right.NONE  # not a built-in role
    assert not may_create(subject, editor)
    assert may_create(subject, RoleRights.of(["documents:create"]))
    assert decide(Subject("u1", "contractor", active=False), None, role=editor) is Right.NONE
