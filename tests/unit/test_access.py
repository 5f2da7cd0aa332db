"""The one rights function, over a table of cases."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from persistence.relational import Grant
from server.identity.rights import (
    DocumentFacts,
    Right,
    Subject,
    decide,
    may_create,
    visibility_filter,
)

NOW = datetime(2026, 6, 1, tzinfo=UTC)
ALICE = "a" * 8
DOC = DocumentFacts(
    owner="owner",
    view=frozenset({"viewer"}),
    comment=frozenset({"commenter"}),
    edit=frozenset({"editor"}),
)


def grant(level: str, *, expires: datetime | None = None, resource: str = "d1") -> Grant:
    return Grant(
        id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        resource_type="business_document",
        resource_id=resource,
        permission_level=level,
        granted_by=None,
        granted_at=NOW - timedelta(days=1),
        expires_at=expires,
    )


CASES = [
    # (user, role, active, document, grants, expected)
    ("x", "admin", True, DOC, [], Right.ADMIN),
    ("x", "manager", True, DOC, [], Right.APPROVE),
    ("x", "analyst", True, DOC, [], Right.NONE),
    ("x", "viewer", True, DOC, [], Right.NONE),
    ("owner", "viewer", True, DOC, [], Right.ADMIN),
    ("editor", "viewer", True, DOC, [], Right.EDIT),
    ("commenter", "analyst", True, DOC, [], Right.COMMENT),
    ("viewer", "analyst", True, DOC, [], Right.VIEW),
    ("viewer", "manager", True, DOC, [], Right.APPROVE),  # the highest source wins
    ("x", "analyst", True, DOC, [grant("view")], Right.VIEW),
    ("x", "analyst", True, DOC, [grant("edit")], Right.EDIT),
    ("x", "analyst", True, DOC, [grant("approve")], Right.APPROVE),
    ("x", "analyst", True, DOC, [grant("admin")], Right.ADMIN),
    ("viewer", "analyst", True, DOC, [grant("edit")], Right.EDIT),
    ("editor", "analyst", True, DOC, [grant("view")], Right.EDIT),
    ("x", "analyst", True, DOC, [grant("edit", expires=NOW - timedelta(seconds=1))], Right.NONE),
    ("x", "analyst", True, DOC, [grant("edit", expires=NOW)], Right.NONE),
    ("x", "analyst", True, DOC, [grant("edit", expires=NOW + timedelta(hours=1))], Right.EDIT),
    ("x", "analyst", True, DOC, [grant("bogus")], Right.NONE),
    ("x", "analyst", True, None, [], Right.NONE),  # no record: nothing but role and grants
    ("x", "admin", True, None, [], Right.ADMIN),
    ("x", "analyst", True, None, [grant("view")], Right.VIEW),
    ("owner", "admin", False, DOC, [grant("admin")], Right.NONE),  # suspended: nothing
    ("x", "unknown-role", True, DOC, [], Right.NONE),
]


@pytest.mark.parametrize(("user", "role", "active", "document", "grants", "expected"), CASES)
def test_rights_table(
    user: str,
    role: str,
    active: bool,
    document: DocumentFacts | None,
    grants: list[Grant],
    expected: Right,
) -> None:
    assert decide(Subject(user, role, active), document, grants, now=NOW) is expected


def test_rights_are_ordered() -> None:
    order = [Right.NONE, Right.VIEW, Right.COMMENT, Right.EDIT, Right.APPROVE, Right.ADMIN]
    assert order == sorted(order)
    assert Right.EDIT.label == "edit"


def test_document_facts_from_a_record() -> None:
    facts = DocumentFacts.of(
        {
            "owner": "o",
            "contributors": ["c"],
            "permissions": {"view": ["v", None], "edit": ["e"], "comment": "not-a-list"},
            "sensitivity": "confidential",
        }
    )
    assert facts.owner == "o"
    assert facts.edit == {"e", "c"}
    assert facts.view == {"v"}
    assert facts.comment == frozenset()
    assert facts.sensitivity == "confidential"
    assert DocumentFacts.of({}) == DocumentFacts()


def test_who_may_create_and_what_they_see() -> None:
    assert may_create(Subject(ALICE, "analyst"))
    assert not may_create(Subject(ALICE, "viewer"))
    assert not may_create(Subject(ALICE, "admin", active=False))
    assert visibility_filter(Subject(ALICE, "admin")) is None
    assert visibility_filter(Subject(ALICE, "manager")) is None
    clause = visibility_filter(Subject(ALICE, "viewer"))
    assert clause is not None
    assert {"owner": ALICE} in clause["$or"]
    assert {"permissions.view": ALICE} in clause["$or"]
