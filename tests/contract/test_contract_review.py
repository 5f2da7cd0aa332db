"""The review ports' contract (CommentStore, NotificationStore, ApprovalStore).

Run against every backend of the SQL adapter through the ``relational`` fixture: SQLite (a
copy of a migrated file per test) and PostgreSQL (the session's migrated database, emptied
before each test, on a throwaway server or ``COLLAB_TEST_POSTGRES_URL``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from pycrdt import Doc

from crdt.anchors import Anchor, Resolved, create_anchor, resolve_anchor
from crdt.section import section_content
from persistence.errors import RecordNotFound, StorageClosed, StorageConflict
from persistence.relational import (
    ApprovalQuery,
    ApprovalRequest,
    Comment,
    CommentQuery,
    InvalidTransitionError,
    NewApprovalRequest,
    NewComment,
    NewNotification,
    NewUser,
    NewWorkflow,
    NotificationCounts,
    NotPermittedError,
    User,
    Workflow,
    WorkflowStep,
)
from persistence.relational.engine import create_engine
from persistence.relational.schema import approval_workflows
from tests.services.postgres import T0, Relational

MINUTE = timedelta(minutes=1)
# Strings that would change a query's meaning if they were spliced into SQL.
INJECTIONS = [
    "' OR '1'='1",
    "' OR 1=1 --",
    "'; DROP TABLE comments; --",
    '" OR ""="',
    "%",
    "_",
    "\\",
    ") OR (1=1",
]


async def add_user(rel: Relational, name: str, role: str = "analyst") -> User:
    return await rel.stores.users.add(NewUser(f"{name}@example.com", name.title(), role))


async def comment(rel: Relational, author: User, text: str, **fields: Any) -> Comment:
    """Add a comment one minute after the previous one (creation order is the list order)."""
    rel.clock.advance(minutes=1)
    values: dict[str, Any] = {"document_id": "d1", "author_id": author.id, "content": text}
    values.update(fields)
    return await rel.stores.comments.add(NewComment(**values))


async def listed(rel: Relational, **fields: Any) -> list[str]:
    page = await rel.stores.comments.find(CommentQuery(**{"document_id": "d1", **fields}))
    return [item.content for item in page.items]


async def raises_not_found(*calls: Callable[[], Awaitable[object]]) -> None:
    for call in calls:
        with pytest.raises(RecordNotFound):
            await call()


def anchored_section() -> tuple[Doc[Any], Anchor]:
    doc: Doc[Any] = Doc(client_id=3)
    text = section_content(doc)
    text.insert(0, "Grow revenue by 10 % in 世界 😀 markets")
    return doc, create_anchor(text, 15, 29)


# -- comments --------------------------------------------------------------------------------


async def test_comment_round_trips_with_its_anchor_and_mentions(relational: Relational) -> None:
    ana, ben = await add_user(relational, "ana"), await add_user(relational, "ben")
    doc, anchor = anchored_section()
    added = await relational.stores.comments.add(
        NewComment(
            "d1",
            ana.id,
            "Is 10 % realistic? «sûr» 🤔",
            section_id="market",
            anchor=anchor,
            mentions=(ben.id, ana.id, ben.id),
        )
    )
    assert (added.document_id, added.section_id, added.author_id) == ("d1", "market", ana.id)
    assert added.content == "Is 10 % realistic? «sûr» 🤔"
    assert added.anchor == anchor  # the sticky indexes come back byte for byte
    assert added.mentions == (ben.id, ana.id)
    assert (added.resolved, added.resolved_by, added.resolved_at) == (False, None, None)
    assert added.created_at == added.updated_at == T0
    assert (added.edited_at, added.deleted_at, added.parent_id) == (None, None, None)
    assert await relational.stores.comments.get(added.id) == added
    assert await relational.stores.comments.get(uuid.uuid4()) is None
    stored = await relational.stores.comments.get(added.id)
    assert stored is not None
    assert stored.anchor is not None
    section_content(doc).insert(0, "NEW: ")
    expected = Resolved(20, 34, anchor.quote)
    assert resolve_anchor(section_content(doc), stored.anchor) == expected


async def test_a_reply_joins_its_thread(relational: Relational) -> None:
    ana, ben = await add_user(relational, "ana"), await add_user(relational, "ben")
    _, anchor = anchored_section()
    root = await comment(relational, ana, "root", section_id="s1", anchor=anchor)
    reply = await comment(relational, ben, "reply", parent_id=root.id)
    assert (reply.parent_id, reply.section_id, reply.anchor) == (root.id, "s1", None)
    assert reply.is_reply
    assert not root.is_reply
    assert await listed(relational, thread_of=root.id) == ["root", "reply"]


async def test_replies_that_cannot_join_a_thread_conflict(relational: Relational) -> None:
    ana = await add_user(relational, "ana")
    root = await comment(relational, ana, "root")
    reply = await comment(relational, ana, "reply", parent_id=root.id)
    elsewhere = await comment(relational, ana, "elsewhere", document_id="d2")
    gone = await comment(relational, ana, "gone")
    assert await relational.stores.comments.delete(gone.id, acting_user_id=ana.id)
    cases = [
        (elsewhere.id, "another document"),
        (reply.id, "not a reply"),
        (uuid.uuid4(), "not stored"),
        (gone.id, "deleted"),
    ]
    for parent_id, message in cases:
        with pytest.raises(StorageConflict, match=message):
            await comment(relational, ana, "bad reply", parent_id=parent_id)
    assert await listed(relational, include_deleted=True) == ["root", "reply", ""]


async def test_unknown_author_mention_or_taken_id_conflict(relational: Relational) -> None:
    ana = await add_user(relational, "ana")
    with pytest.raises(StorageConflict):  # an author that is not stored
        await comment(relational, ana, "x", author_id=uuid.uuid4())
    with pytest.raises(StorageConflict, match="mentions"):
        await comment(relational, ana, "x", mentions=(uuid.uuid4(),))
    first = await comment(relational, ana, "first")
    with pytest.raises(StorageConflict):
        await comment(relational, ana, "again", id=first.id)
    assert await listed(relational) == ["first"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"content": ""}, "content must be"),
        ({"content": "nul\0"}, "content must be"),
        ({"content": "x" * 100_001}, "content must be"),
        ({"document_id": "d" * 256}, "document_id must be"),
        ({"section_id": ""}, "section_id must be"),
        ({"anchor": Anchor(b"\x00\x01\x01\x00", b"\x00\x01\x02A", "q")}, "needs the section_id"),
        ({"anchor": Anchor(b"", b"\x00", "q"), "section_id": "s"}, "anchor edges"),
        ({"anchor": Anchor(b"\x00" * 65, b"\x00", "q"), "section_id": "s"}, "anchor edges"),
        ({"anchor": Anchor(b"\x00", b"\x00", ""), "section_id": "s"}, "anchor quote"),
        ({"anchor": "start-end", "section_id": "s"}, "Anchor"),
        ({"parent_id": uuid.uuid4(), "section_id": "s"}, "reply takes"),
        ({"mentions": ("not-a-uuid",)}, "mentions must be a uuid"),
        ({"mentions": "abc"}, "collection of user ids"),
        ({"mentions": tuple(uuid.uuid4() for _ in range(101))}, "at most 100"),
        ({"author_id": "ana"}, "author_id must be"),
    ],
)
def test_new_comments_are_checked_before_any_io(fields: dict[str, Any], message: str) -> None:
    values: dict[str, Any] = {"document_id": "d1", "author_id": uuid.uuid4(), "content": "c"}
    with pytest.raises(ValueError, match=message):
        NewComment(**{**values, **fields})


async def test_only_the_author_edits(relational: Relational) -> None:
    ana, ben = await add_user(relational, "ana"), await add_user(relational, "ben")
    original = await comment(relational, ana, "draft", mentions=(ben.id,))
    store = relational.stores.comments
    with pytest.raises(NotPermittedError, match="only the author") as caught:
        await store.edit(original.id, acting_user_id=ben.id, content="hijacked")
    assert isinstance(caught.value, PermissionError)
    assert await store.get(original.id) == original
    at = relational.clock.advance(minutes=5)
    edited = await store.edit(original.id, acting_user_id=ana.id, content="final")
    assert (edited.content, edited.edited_at, edited.updated_at) == ("final", at, at)
    assert (edited.mentions, edited.created_at) == (original.mentions, original.created_at)
    cleared = await store.edit(original.id, acting_user_id=ana.id, content="again", mentions=())
    assert cleared.mentions == ()
    with pytest.raises(StorageConflict, match="mentions"):
        await store.edit(original.id, acting_user_id=ana.id, content="y", mentions=[uuid.uuid4()])
    with pytest.raises(RecordNotFound):
        await store.edit(uuid.uuid4(), acting_user_id=ana.id, content="x")
    with pytest.raises(ValueError, match="content must be"):
        await store.edit(original.id, acting_user_id=ana.id, content="")
    assert (await store.get(original.id)) == cleared


async def test_resolve_and_reopen_a_thread(relational: Relational) -> None:
    ana, ben = await add_user(relational, "ana"), await add_user(relational, "ben")
    root = await comment(relational, ana, "root")
    reply = await comment(relational, ben, "reply", parent_id=root.id)
    store = relational.stores.comments
    at = relational.clock.advance(minutes=1)
    resolved = await store.resolve(root.id, by=ben.id)
    assert (resolved.resolved, resolved.resolved_by, resolved.resolved_at) == (True, ben.id, at)
    relational.clock.advance(minutes=1)
    assert await store.resolve(root.id, by=ana.id) == resolved  # idempotent: first resolver kept
    with pytest.raises(InvalidTransitionError, match="reply"):
        await store.resolve(reply.id, by=ana.id)
    with pytest.raises(InvalidTransitionError, match="reply"):
        await store.reopen(reply.id)
    with pytest.raises(StorageConflict):  # a resolver that is not stored
        await store.resolve((await comment(relational, ana, "other")).id, by=uuid.uuid4())
    reopened = await store.reopen(root.id)
    assert (reopened.resolved, reopened.resolved_by, reopened.resolved_at) == (False, None, None)
    assert await store.reopen(root.id) == reopened
    await raises_not_found(
        lambda: store.reopen(uuid.uuid4()), lambda: store.resolve(uuid.uuid4(), by=ana.id)
    )


async def test_delete_by_author_or_admin_keeps_the_thread(relational: Relational) -> None:
    ana, ben = await add_user(relational, "ana"), await add_user(relational, "ben")
    root = await comment(relational, ana, "root", mentions=(ben.id,))
    await comment(relational, ben, "reply", parent_id=root.id)
    store = relational.stores.comments
    with pytest.raises(NotPermittedError):
        await store.delete(root.id, acting_user_id=ben.id)
    at = relational.clock.advance(minutes=1)
    assert await store.delete(root.id, acting_user_id=ana.id) is True
    assert await store.delete(root.id, acting_user_id=ana.id) is False
    placeholder = await store.get(root.id)
    assert placeholder is not None
    assert (placeholder.deleted_at, placeholder.content, placeholder.mentions) == (at, "", ())
    assert placeholder.deleted
    assert await listed(relational) == ["reply"]
    assert await listed(relational, include_deleted=True) == ["", "reply"]
    assert await listed(relational, thread_of=root.id, include_deleted=True) == ["", "reply"]
    await raises_not_found(
        lambda: store.edit(root.id, acting_user_id=ana.id, content="back"),
        lambda: store.resolve(root.id, by=ana.id),
        lambda: store.delete(uuid.uuid4(), acting_user_id=ana.id),
    )
    others = await comment(relational, ben, "ben's")
    assert await store.delete(others.id, acting_user_id=ana.id, acting_is_admin=True) is True
    with pytest.raises(ValueError, match="acting_is_admin"):
        await store.delete(others.id, acting_user_id=ana.id, acting_is_admin="yes")  # type: ignore[arg-type]


async def test_find_filters_orders_and_pages(relational: Relational) -> None:
    ana = await add_user(relational, "ana")
    store = relational.stores.comments
    one = await comment(relational, ana, "one", section_id="s1")
    await comment(relational, ana, "one.a", parent_id=one.id)
    two = await comment(relational, ana, "two", section_id="s2")
    await comment(relational, ana, "two.a", parent_id=two.id)
    await comment(relational, ana, "three")
    await comment(relational, ana, "elsewhere", document_id="d2", section_id="s1")
    await store.resolve(two.id, by=ana.id)
    assert await listed(relational) == ["one", "one.a", "two", "two.a", "three"]
    assert await listed(relational, section_id="s1") == ["one", "one.a"]
    assert await listed(relational, unresolved_only=True) == ["one", "one.a", "three"]
    assert await listed(relational, thread_of=two.id) == ["two", "two.a"]
    assert await listed(relational, thread_of=two.id, unresolved_only=True) == []
    assert await listed(relational, section_id="nope") == []
    page = await store.find(CommentQuery("d1", limit=2, offset=1))
    assert ([item.content for item in page.items], page.total) == (["one.a", "two"], 5)
    page = await store.find(CommentQuery("d1", limit=2, offset=4))
    assert ([item.content for item in page.items], page.total) == (["three"], 5)
    bad_queries: list[dict[str, Any]] = [
        {"limit": 0},
        {"limit": 201},
        {"offset": -1},
        {"document_id": ""},
    ]
    for bad in bad_queries:
        with pytest.raises(ValueError, match=r"limit|offset|document_id"):
            CommentQuery(**{"document_id": "d1", **bad})


async def test_sql_in_comment_text_is_stored_and_matched_literally(relational: Relational) -> None:
    ana = await add_user(relational, "ana")
    await comment(relational, ana, "plain", section_id="s")
    for n, text in enumerate(INJECTIONS):
        await comment(relational, ana, text, document_id=text, section_id=text)
        assert await listed(relational, document_id=text) == [text]
        assert await listed(relational, document_id=text, section_id=text) == [text]
        assert await listed(relational, section_id=text) == []
        assert await listed(relational, document_id=f"{text}x") == []
        assert await listed(relational) == ["plain"], n
    assert (await add_user(relational, "still-there")).email == "still-there@example.com"


# -- notifications ---------------------------------------------------------------------------


def note(user: User, title: str, **fields: Any) -> NewNotification:
    values: dict[str, Any] = {"type": "comment_mentioned", "message": f"{title}!"}
    values.update(fields)
    return NewNotification(user.id, title=title, **values)


async def test_notifications_are_added_in_one_transaction(relational: Relational) -> None:
    ana, ben = await add_user(relational, "ana"), await add_user(relational, "ben")
    store = relational.stores.notifications
    added = await store.add(
        [note(ana, "a1", resource_type="comment", resource_id="c-1"), note(ben, "b1")]
    )
    assert [(n.user_id, n.title, n.message) for n in added] == [
        (ana.id, "a1", "a1!"),
        (ben.id, "b1", "b1!"),
    ]
    assert (added[0].resource_type, added[0].resource_id) == ("comment", "c-1")
    assert all(n.created_at == T0 and n.read_at is None and not n.read for n in added)
    with pytest.raises(StorageConflict):  # one unknown user: none of them is stored
        await store.add([note(ana, "a2"), NewNotification(uuid.uuid4(), "t", "x", "y")])
    assert await store.count(ana.id) == NotificationCounts(total=1, unread=1)
    assert await store.add([]) == []


async def test_adding_is_idempotent_per_id(relational: Relational) -> None:
    ana = await add_user(relational, "ana")
    store = relational.stores.notifications
    first = note(ana, "once")
    stored = await store.add([first])
    later = relational.clock.advance(minutes=1)
    retried, new = await store.add([dataclasses.replace(first, title="changed"), note(ana, "new")])
    assert retried == stored[0]  # kept as it was stored: same title, same time
    assert (new.title, new.created_at) == ("new", later)
    assert await store.count(ana.id) == NotificationCounts(total=2, unread=2)
    assert await store.add([first]) == stored


async def test_list_puts_unread_first_then_newest(relational: Relational) -> None:
    ana, ben = await add_user(relational, "ana"), await add_user(relational, "ben")
    store = relational.stores.notifications
    ids = {}
    for title in ("n1", "n2", "n3", "n4"):
        relational.clock.advance(minutes=1)
        ids[title] = (await store.add([note(ana, title)]))[0].id
    await store.add([note(ben, "not ana's")])
    assert await store.mark_read(ids["n4"], user_id=ana.id) is True
    assert await store.mark_read(ids["n2"], user_id=ana.id) is True

    async def titles(**fields: Any) -> list[str]:
        page = await store.list_for_user(ana.id, **fields)
        return [n.title for n in page.items]

    assert await titles() == ["n3", "n1", "n4", "n2"]
    assert await titles(unread_only=True) == ["n3", "n1"]
    assert await titles(limit=2, offset=1) == ["n1", "n4"]
    page = await store.list_for_user(ana.id, limit=1)
    assert page.total == 4
    assert await store.count(ana.id) == NotificationCounts(4, 2)
    assert (await store.list_for_user(uuid.uuid4())).items == []
    bad_pages: list[dict[str, Any]] = [{"limit": 0}, {"limit": 500}, {"offset": -3}]
    for bad in bad_pages:
        with pytest.raises(ValueError, match=r"limit|offset"):
            await store.list_for_user(ana.id, **bad)


async def test_mark_read_only_touches_the_owners(relational: Relational) -> None:
    ana, ben = await add_user(relational, "ana"), await add_user(relational, "ben")
    store = relational.stores.notifications
    (mine,) = await store.add([note(ana, "mine")])
    assert await store.mark_read(mine.id, user_id=ben.id) is False  # not ben's
    assert await store.count(ana.id) == NotificationCounts(1, 1)
    at = relational.clock.advance(minutes=2)
    assert await store.mark_read(mine.id, user_id=ana.id) is True
    assert await store.mark_read(mine.id, user_id=ana.id) is False  # read already
    assert await store.mark_read(uuid.uuid4(), user_id=ana.id) is False
    (read,) = (await store.list_for_user(ana.id)).items
    assert (read.read_at, read.read) == (at, True)
    await store.add([note(ana, "x"), note(ana, "y"), note(ben, "z")])
    assert await store.mark_all_read(ana.id) == 2
    assert await store.mark_all_read(ana.id) == 0
    assert await store.count(ana.id) == NotificationCounts(3, 0)
    assert await store.count(ben.id) == NotificationCounts(1, 1)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"type": ""}, "type must be"),
        ({"type": "t" * 101}, "type must be"),
        ({"title": "t" * 256}, "title must be"),
        ({"message": "nul\0"}, "message must be"),
        ({"resource_id": "r1"}, "needs its resource_type"),
        ({"resource_type": "x" * 101}, "resource_type must be"),
        ({"user_id": "ana"}, "user_id must be"),
    ],
)
def test_new_notifications_are_checked(fields: dict[str, Any], message: str) -> None:
    values: dict[str, Any] = {"user_id": uuid.uuid4(), "type": "t", "title": "t", "message": "m"}
    with pytest.raises(ValueError, match=message):
        NewNotification(**{**values, **fields})


async def test_add_checks_the_batch(relational: Relational) -> None:
    ana = await add_user(relational, "ana")
    store = relational.stores.notifications
    one = note(ana, "one")
    with pytest.raises(ValueError, match="distinct"):
        await store.add([one, one])
    with pytest.raises(ValueError, match="at most 1000"):
        await store.add([note(ana, str(n)) for n in range(1001)])
    with pytest.raises(ValueError, match="sequence"):
        await store.add(one)  # type: ignore[arg-type]
    assert await store.count(ana.id) == NotificationCounts(0, 0)


async def test_sql_in_notification_text_is_stored_literally(relational: Relational) -> None:
    ana = await add_user(relational, "ana")
    store = relational.stores.notifications
    notes = [note(ana, text, message=text, type=text, resource_type=text) for text in INJECTIONS]
    await store.add(notes)
    page = await store.list_for_user(ana.id, limit=200)
    assert sorted((n.title, n.message, n.type) for n in page.items) == sorted(
        (text, text, text) for text in INJECTIONS
    )


# -- approvals -------------------------------------------------------------------------------


STEPS = (
    WorkflowStep("analyst", "Analyst check"),
    WorkflowStep("manager"),
    WorkflowStep("admin", "Sign-off"),
)


async def workflow(rel: Relational, creator: User | None = None, **fields: Any) -> Workflow:
    values: dict[str, Any] = {"name": "Strategy sign-off", "resource_type": "strategic_plan"}
    values.update(fields)
    values.setdefault("steps", STEPS)
    created_by = None if creator is None else creator.id
    return await rel.stores.approvals.create_workflow(NewWorkflow(created_by=created_by, **values))


async def request(
    rel: Relational, flow: Workflow, requestor: User, resource: str = "plan-1", **fields: Any
) -> ApprovalRequest:
    rel.clock.advance(minutes=1)
    new = NewApprovalRequest(flow.id, flow.resource_type, resource, requestor.id, **fields)
    return await rel.stores.approvals.create_request(new)


def statuses(req: ApprovalRequest) -> list[str]:
    return [step.status for step in req.steps]


async def test_workflows_are_created_and_listed_by_type(relational: Relational) -> None:
    ana = await add_user(relational, "ana")
    store = relational.stores.approvals
    flow = await workflow(relational, ana, description="Three eyes")
    assert (flow.name, flow.resource_type, flow.status) == (
        "Strategy sign-off",
        "strategic_plan",
        "active",
    )
    assert (flow.steps, flow.description, flow.created_by, flow.created_at) == (
        STEPS,
        "Three eyes",
        ana.id,
        T0,
    )
    relational.clock.advance(minutes=1)
    second = await workflow(relational, name="Fast track", steps=(WorkflowStep("manager"),))
    await workflow(relational, resource_type="business_document")
    assert await store.get_workflow(flow.id) == flow
    assert await store.get_workflow(uuid.uuid4()) is None
    assert await store.list_workflows("strategic_plan") == [flow, second]
    assert await store.list_workflows("' OR 1=1 --") == []
    with pytest.raises(StorageConflict):  # a creator that is not stored
        await workflow(relational, dataclasses.replace(ana, id=uuid.uuid4()))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"steps": ()}, "1..20 steps"),
        ({"steps": tuple(WorkflowStep("r") for _ in range(21))}, "1..20 steps"),
        ({"steps": ("manager",)}, "WorkflowStep"),
        ({"name": ""}, "name must be"),
        ({"resource_type": "r" * 101}, "resource_type must be"),
    ],
)
def test_new_workflows_are_checked(fields: dict[str, Any], message: str) -> None:
    values: dict[str, Any] = {"name": "w", "resource_type": "plan", "steps": STEPS}
    with pytest.raises(ValueError, match=message):
        NewWorkflow(**{**values, **fields})
    with pytest.raises(ValueError, match="required_role"):
        WorkflowStep("")


async def test_a_request_starts_at_its_first_step(relational: Relational) -> None:
    ana = await add_user(relational, "ana")
    flow = await workflow(relational)
    req = await request(relational, flow, ana, revision_id="rev-7")
    assert (req.status, req.current_step, req.total_steps) == ("pending", 1, 3)
    assert (req.resource_type, req.resource_id, req.revision_id) == (
        "strategic_plan",
        "plan-1",
        "rev-7",
    )
    assert (req.workflow_id, req.requestor_id, req.completed_at) == (flow.id, ana.id, None)
    assert req.previous_request_id is None
    assert statuses(req) == ["pending", "waiting", "waiting"]
    assert [step.required_role for step in req.steps] == ["analyst", "manager", "admin"]
    assert [step.step_number for step in req.steps] == [1, 2, 3]
    assert req.pending_step == req.steps[0]
    assert await relational.stores.approvals.get_request(req.id) == req
    assert await relational.stores.approvals.get_request(uuid.uuid4()) is None


async def test_requests_that_cannot_start(relational: Relational) -> None:
    ana = await add_user(relational, "ana")
    store = relational.stores.approvals
    flow = await workflow(relational)
    with pytest.raises(RecordNotFound):
        await store.create_request(NewApprovalRequest(uuid.uuid4(), "strategic_plan", "p", ana.id))
    with pytest.raises(InvalidTransitionError, match="is for 'strategic_plan'"):
        await store.create_request(NewApprovalRequest(flow.id, "project", "p", ana.id))
    with pytest.raises(StorageConflict):  # an unknown requestor
        await store.create_request(NewApprovalRequest(flow.id, "strategic_plan", "p", uuid.uuid4()))
    engine = create_engine(relational.url)
    try:
        async with engine.begin() as conn:
            await conn.execute(approval_workflows.update().values(status="archived"))
    finally:
        await engine.dispose()
    with pytest.raises(InvalidTransitionError, match="archived"):
        await request(relational, flow, ana)
    assert (await store.find_requests(ApprovalQuery())).total == 0


async def test_approving_every_step_approves_the_request(relational: Relational) -> None:
    ana, ben, cat = [await add_user(relational, name) for name in ("ana", "ben", "cat")]
    store = relational.stores.approvals
    req = await request(relational, await workflow(relational), ana)
    at = relational.clock.advance(minutes=1)
    after = await store.decide(req.id, 1, reviewer_id=ben.id, decision="approve", comment="ok")
    assert (after.status, after.current_step, statuses(after)) == (
        "pending",
        2,
        ["approved", "pending", "waiting"],
    )
    first = after.steps[0]
    assert (first.reviewed_by, first.reviewed_at, first.review_comments) == (ben.id, at, "ok")
    for step_number in (1, 3, 99):
        with pytest.raises(InvalidTransitionError, match="not the current step"):
            await store.decide(req.id, step_number, reviewer_id=ben.id, decision="approve")
    await store.decide(req.id, 2, reviewer_id=cat.id, decision="approve")
    done_at = relational.clock.advance(minutes=1)
    done = await store.decide(req.id, 3, reviewer_id=cat.id, decision="approve")
    assert (done.status, done.completed_at, statuses(done)) == (
        "approved",
        done_at,
        ["approved"] * 3,
    )
    assert done.pending_step is None
    with pytest.raises(InvalidTransitionError, match="approved"):
        await store.decide(req.id, 3, reviewer_id=cat.id, decision="reject")
    assert await store.get_request(req.id) == done


async def test_a_rejection_rejects_the_request(relational: Relational) -> None:
    ana, ben = await add_user(relational, "ana"), await add_user(relational, "ben")
    store = relational.stores.approvals
    req = await request(relational, await workflow(relational), ana)
    await store.decide(req.id, 1, reviewer_id=ben.id, decision="approve")
    at = relational.clock.advance(minutes=1)
    rejected = await store.decide(
        req.id, 2, reviewer_id=ben.id, decision="reject", comment="'; DROP TABLE users; --"
    )
    assert (rejected.status, rejected.completed_at) == ("rejected", at)
    assert statuses(rejected) == ["approved", "rejected", "skipped"]
    assert rejected.steps[1].review_comments == "'; DROP TABLE users; --"
    with pytest.raises(InvalidTransitionError, match="rejected"):
        await store.decide(req.id, 3, reviewer_id=ben.id, decision="approve")


async def test_decide_checks_its_input_and_changes_nothing_on_failure(
    relational: Relational,
) -> None:
    ana = await add_user(relational, "ana")
    store = relational.stores.approvals
    req = await request(relational, await workflow(relational), ana)
    with pytest.raises(RecordNotFound):
        await store.decide(uuid.uuid4(), 1, reviewer_id=ana.id, decision="approve")
    with pytest.raises(StorageConflict):  # a reviewer that is not stored
        await store.decide(req.id, 1, reviewer_id=uuid.uuid4(), decision="approve")
    for fields, message in (
        ({"decision": "maybe"}, "decision must be"),
        ({"decision": "approve", "step_number": 0}, "step_number"),
        ({"decision": "approve", "step_number": True}, "step_number"),
        ({"decision": "approve", "comment": "nul\0"}, "comment must be"),
    ):
        call: dict[str, Any] = {"step_number": 1, "reviewer_id": ana.id, **fields}
        step_number = call.pop("step_number")
        with pytest.raises(ValueError, match=message):
            await store.decide(req.id, step_number, **call)
    assert await store.get_request(req.id) == req


async def test_concurrent_decisions_on_one_step_let_one_win(relational: Relational) -> None:
    ana, ben = await add_user(relational, "ana"), await add_user(relational, "ben")
    store = relational.stores.approvals
    req = await request(relational, await workflow(relational), ana)
    results = await asyncio.gather(
        store.decide(req.id, 1, reviewer_id=ana.id, decision="approve"),
        store.decide(req.id, 1, reviewer_id=ben.id, decision="reject"),
        return_exceptions=True,
    )
    won = [result for result in results if isinstance(result, ApprovalRequest)]
    lost = [result for result in results if isinstance(result, InvalidTransitionError)]
    assert (len(won), len(lost)) == (1, 1), results
    assert await store.get_request(req.id) == won[0]


async def test_resubmitting_a_rejected_request_starts_a_new_round(relational: Relational) -> None:
    ana, ben = await add_user(relational, "ana"), await add_user(relational, "ben")
    store = relational.stores.approvals
    flow = await workflow(relational)
    req = await request(relational, flow, ana, revision_id="rev-1")
    with pytest.raises(InvalidTransitionError, match="only a rejected request"):
        await store.resubmit(req.id, requestor_id=ana.id)
    rejected = await store.decide(req.id, 1, reviewer_id=ben.id, decision="reject")
    relational.clock.advance(minutes=1)
    again = await store.resubmit(req.id, requestor_id=ana.id, revision_id="rev-2")
    assert again.id != req.id
    assert (again.previous_request_id, again.revision_id, again.status) == (
        req.id,
        "rev-2",
        "pending",
    )
    assert (again.resource_type, again.resource_id, again.workflow_id) == (
        "strategic_plan",
        "plan-1",
        flow.id,
    )
    assert statuses(again) == ["pending", "waiting", "waiting"]
    assert await store.get_request(req.id) == rejected  # the first round stays as it was
    with pytest.raises(InvalidTransitionError, match="resubmitted already"):
        await store.resubmit(req.id, requestor_id=ana.id)
    with pytest.raises(RecordNotFound):
        await store.resubmit(uuid.uuid4(), requestor_id=ana.id)
    third = await store.decide(again.id, 1, reviewer_id=ben.id, decision="reject")
    same_revision = await store.resubmit(third.id, requestor_id=ben.id)
    assert (same_revision.revision_id, same_revision.requestor_id) == ("rev-2", ben.id)


async def test_concurrent_resubmissions_make_one_new_request(relational: Relational) -> None:
    ana = await add_user(relational, "ana")
    store = relational.stores.approvals
    req = await request(relational, await workflow(relational), ana)
    await store.decide(req.id, 1, reviewer_id=ana.id, decision="reject")
    results = await asyncio.gather(
        *(store.resubmit(req.id, requestor_id=ana.id) for _ in range(3)), return_exceptions=True
    )
    made = [result for result in results if isinstance(result, ApprovalRequest)]
    assert len(made) == 1, results
    assert all(isinstance(r, StorageConflict) for r in results if r is not made[0]), results
    page = await store.find_requests(ApprovalQuery("strategic_plan", "plan-1"))
    assert page.total == 2


async def test_the_approval_chain_of_a_resource(relational: Relational) -> None:
    ana, ben = await add_user(relational, "ana"), await add_user(relational, "ben")
    store = relational.stores.approvals
    flow = await workflow(relational)
    first = await request(relational, flow, ana, revision_id="r1")
    await store.decide(first.id, 1, reviewer_id=ben.id, decision="reject")
    relational.clock.advance(minutes=1)
    second = await store.resubmit(first.id, requestor_id=ana.id, revision_id="r2")
    await store.decide(second.id, 1, reviewer_id=ana.id, decision="approve")
    await request(relational, flow, ana, resource="plan-2")
    chain = await store.approval_chain("strategic_plan", "plan-1")
    rows = [
        (
            link.request_id,
            link.request_status,
            link.current_step,
            link.revision_id,
            link.step_number,
            link.required_role,
            link.step_status,
            link.reviewer_name,
            link.reviewer_email,
        )
        for link in chain
    ]
    assert rows == [
        (first.id, "rejected", 1, "r1", 1, "analyst", "rejected", "Ben", "ben@example.com"),
        (first.id, "rejected", 1, "r1", 2, "manager", "skipped", None, None),
        (first.id, "rejected", 1, "r1", 3, "admin", "skipped", None, None),
        (second.id, "pending", 2, "r2", 1, "analyst", "approved", "Ana", "ana@example.com"),
        (second.id, "pending", 2, "r2", 2, "manager", "pending", None, None),
        (second.id, "pending", 2, "r2", 3, "admin", "waiting", None, None),
    ]
    assert chain[0].reviewer_id == ben.id
    assert chain[0].reviewed_at is not None
    assert await store.approval_chain("project", "plan-1") == []
    for text in INJECTIONS:
        assert await store.approval_chain("strategic_plan", text) == []
        assert await store.approval_chain(text, "plan-1") == []


async def test_find_requests_by_resource_and_status(relational: Relational) -> None:
    ana = await add_user(relational, "ana")
    store = relational.stores.approvals
    flow = await workflow(relational)
    a = await request(relational, flow, ana, resource="p1")
    b = await request(relational, flow, ana, resource="p2")
    c = await request(relational, flow, ana, resource="p1")
    await store.decide(a.id, 1, reviewer_id=ana.id, decision="reject")

    async def found(**fields: Any) -> tuple[list[uuid.UUID], int]:
        page = await store.find_requests(ApprovalQuery(**fields))
        return [req.id for req in page.items], page.total

    assert await found() == ([c.id, b.id, a.id], 3)
    assert await found(resource_type="strategic_plan", resource_id="p1") == ([c.id, a.id], 2)
    assert await found(status="pending") == ([c.id, b.id], 2)
    assert await found(status="rejected") == ([a.id], 1)
    assert await found(limit=1, offset=1) == ([b.id], 3)
    assert await found(resource_type="strategic_plan", resource_id="' OR '1'='1") == ([], 0)
    assert await found(status="' OR 1=1 --") == ([], 0)
    (latest,) = (await store.find_requests(ApprovalQuery(limit=1))).items
    assert statuses(latest) == ["pending", "waiting", "waiting"]
    with pytest.raises(ValueError, match="needs its resource_type"):
        ApprovalQuery(resource_id="p1")


async def test_the_review_stores_share_the_pool_and_close(relational: Relational) -> None:
    stores = relational.stores
    await stores.aclose()
    with pytest.raises(StorageClosed):
        await stores.comments.find(CommentQuery("d1"))
    with pytest.raises(StorageClosed):
        await stores.notifications.count(uuid.uuid4())
    with pytest.raises(StorageClosed):
        await stores.approvals.list_workflows("x")
