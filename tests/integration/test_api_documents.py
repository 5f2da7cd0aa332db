"""The business documents REST API end to end: a real uvicorn, tokens, live sockets."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx2
import pycrdt
import pytest

from loadtests.client import YClient
from persistence.relational import AccessQuery, AuditQuery, User
from protocol.events import decode_event
from protocol.ysync import AppEventMessage
from tests.conftest import LiveServer, StartServer

ROLES = {
    "owner": "analyst",
    "editor": "analyst",
    "viewer": "viewer",
    "granted": "viewer",
    "contributor": "viewer",
    "stranger": "analyst",
    "manager": "manager",
    "admin": "admin",
}
PROBLEM = "application/problem+json"


@dataclass
class Env:
    """A server without insecure-dev, one user per role above, and an HTTP client."""

    server: LiveServer
    http: httpx2.AsyncClient
    users: dict[str, User]
    tokens: dict[str, str]

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def uid(self, who: str) -> str:
        return str(self.users[who].id)

    def socket(self, who: str, room: str, *, events: bool = False) -> YClient:
        query = f"token={self.tokens[who]}" + ("&events=1" if events else "")
        return YClient(self.server.ws_url, room, query=query)

    async def create(self, who: str = "owner", **body: Any) -> dict[str, Any]:
        body.setdefault("title", f"Document {body.get('documentId', '')}")
        response = await self.http.post("/documents", json=body, headers=self.auth(who))
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    async def get(self, who: str, path: str, **params: Any) -> httpx2.Response:
        return await self.http.get(path, params=params, headers=self.auth(who))

    async def listed(self, who: str, **params: Any) -> list[str]:
        response = await self.get(who, "/documents", **params)
        assert response.status_code == 200, response.text
        return [item["documentId"] for item in response.json()["items"]]


@contextlib.asynccontextmanager
async def _env(server: LiveServer) -> AsyncIterator[Env]:
    users = {who: await server.add_user(f"{who}@example.com", role) for who, role in ROLES.items()}
    tokens = {who: server.token(user) for who, user in users.items()}
    async with httpx2.AsyncClient(base_url=f"{server.http_url}/api", timeout=20) as http:
        yield Env(server, http, users, tokens)


@pytest.fixture
async def env(start_server: StartServer) -> AsyncIterator[Env]:
    server = await start_server(
        insecure_dev=False, snapshot_idle_seconds=30, snapshot_max_wait_seconds=30
    )
    async with _env(server) as made:
        yield made


def problem(response: httpx2.Response, status: int) -> dict[str, Any]:
    """Assert a problem+json response of ``status``; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"]
    return body


async def acked(client: YClient, updates: int) -> None:
    """Wait until the server made ``updates`` update messages of this ``events=1`` client
    durable (its sync step 2 on connect is the first)."""

    def done() -> bool:
        events = [
            decode_event(m.payload) for m in client.received if isinstance(m, AppEventMessage)
        ]
        return any(e.type == "ack" and e.get("updates") >= updates for e in events)

    await client.wait_for(done)


PLAN: dict[str, Any] = {
    "documentId": "q3-plan",
    "title": "Q3 Plan",
    "type": "strategy_plan",
    "category": "Sales",
    "tags": ["growth", "eu"],
    "sensitivity": "confidential",
    "sections": [
        {"id": "market", "title": "Market", "content": "Grow in **EU**.\n"},
        {"title": "Risks & Mitigations", "content": "Competition responds."},
    ],
}


# -- create and read -------------------------------------------------------------------------


async def test_create_with_sections_is_served_by_rest_and_by_the_live_rooms(env: Env) -> None:
    created = await env.create(**PLAN, permissions={"view": [env.uid("viewer")]})
    assert created["documentId"] == "q3-plan"
    assert created["slug"] == "q3-plan"
    assert created["owner"] == env.uid("owner")
    assert created["status"] == "draft"
    assert created["permissions"] == {"view": [env.uid("viewer")], "edit": [], "comment": []}
    sections = created["content"]["sections"]
    assert [(s["id"], s["title"], s["content"]) for s in sections] == [
        ("market", "Market", "Grow in **EU**.\n"),
        ("risks-mitigations", "Risks & Mitigations", "Competition responds."),
    ]

    response = await env.get("viewer", "/documents/q3-plan")
    assert response.status_code == 200
    document = response.json()
    assert document["content"] == created["content"]
    assert "## Market\n\nGrow in **EU**." in document["content"]["markdown"]
    assert document["sensitivity"] == "confidential"
    assert document["createdAt"].endswith("+00:00")

    async with env.socket("viewer", "q3-plan/market") as section:
        assert str(section.text) == "Grow in **EU**.\n"
    async with env.socket("viewer", "q3-plan") as outline:
        listed = outline.doc.get("sections", type=pycrdt.Map)
        titles = {key: value["title"] for key, value in listed.items()}
        assert titles == {"market": "Market", "risks-mitigations": "Risks & Mitigations"}


async def test_rest_content_follows_the_live_rooms_after_a_snapshot(env: Env) -> None:
    await env.create(**PLAN)
    collab = env.server.collab
    async with env.socket("owner", "q3-plan/market", events=True) as editor:
        await editor.insert(len(editor.text), "Then the US.")
        await acked(editor, 2)
        stale = (await env.get("owner", "/documents/q3-plan")).json()
        assert stale["content"]["sections"][0]["content"] == "Grow in **EU**.\n"

        fresh = (await env.get("owner", "/documents/q3-plan", fresh=1)).json()
        assert fresh["content"]["sections"][0]["content"] == str(editor.text)

        await editor.delete(0, len("Grow in "))
        await acked(editor, 3)
        await collab.snapshots.write_now("q3-plan")
        live = await collab.snapshots.render("q3-plan")
        stored = (await env.get("owner", "/documents/q3-plan")).json()
        assert stored["content"] == live.to_dict()
        assert stored["content"]["sections"][0]["content"] == "**EU**.\nThen the US."
        assert str(editor.text) == "**EU**.\nThen the US."


async def test_create_defaults_slugs_and_conflicts(env: Env) -> None:
    first = await env.create(title="Über Plan: 2026!")
    assert len(first["documentId"]) == 32
    assert first["slug"] == "uber-plan-2026"
    assert first["sensitivity"] == "internal"
    assert first["type"] == "custom"
    assert first["content"]["sections"] == []
    second = await env.create(title="Über plan 2026")
    assert second["slug"] == "uber-plan-2026-2"

    taken_slug = await env.http.post(
        "/documents", json={"title": "x", "slug": "uber-plan-2026"}, headers=env.auth("owner")
    )
    assert "slug" in problem(taken_slug, 409)["detail"]
    await env.create(documentId="taken", title="t")
    taken_id = await env.http.post(
        "/documents", json={"documentId": "taken", "title": "t"}, headers=env.auth("editor")
    )
    assert "taken" in problem(taken_id, 409)["detail"]

    viewer = await env.http.post("/documents", json={"title": "v"}, headers=env.auth("viewer"))
    assert "may not create" in problem(viewer, 403)["detail"]
    repeated = await env.http.post(
        "/documents",
        json={"title": "r", "sections": [{"id": "a", "title": "A"}, {"id": "a", "title": "B"}]},
        headers=env.auth("owner"),
    )
    assert "repeated" in problem(repeated, 422)["detail"]
    unknown_user = await env.http.post(
        "/documents",
        json={"title": "u", "permissions": {"view": ["00000000-0000-4000-8000-000000000000"]}},
        headers=env.auth("owner"),
    )
    assert "unknown users" in problem(unknown_user, 422)["detail"]


async def test_create_works_with_creation_on_join_off(start_server: StartServer) -> None:
    server = await start_server(insecure_dev=False, create_on_join=False)
    async with _env(server) as env:
        created = await env.create(**PLAN)
        assert [s["id"] for s in created["content"]["sections"]] == ["market", "risks-mitigations"]
        async with env.socket("owner", "q3-plan/market") as section:
            assert str(section.text) == "Grow in **EU**.\n"
        refused = env.socket("owner", "other/market")
        await refused.connect()
        assert await refused.wait_closed() == 4404
        await refused.close()


# -- listing ---------------------------------------------------------------------------------


async def _catalogue(env: Env) -> None:
    """Five documents with distinct metadata, owned by "owner" unless said otherwise."""
    await env.create(
        documentId="alpha",
        title="Alpha growth plan",
        type="strategy_plan",
        category="Sales",
        tags=["growth", "sales"],
        permissions={"view": [env.uid("viewer")]},
        sections=[{"id": "s", "title": "S", "content": "Expand into Nordic markets"}],
    )
    await env.create(
        documentId="bravo",
        title="Bravo market analysis",
        type="market_analysis",
        category="Market Research",
        tags=["market"],
    )
    await env.create(
        documentId="charlie",
        title="Charlie pitch",
        type="pitch_deck",
        category="Sales",
        tags=["sales", "pitch"],
    )
    await env.create(
        "editor",
        documentId="delta",
        title="Delta case study",
        type="case_study",
        category="Sales",
        tags=["growth"],
        permissions={"edit": [env.uid("owner")]},
    )
    await env.create("editor", documentId="echo", title="Echo guide", type="operational_guide")
    collab = env.server.collab
    await collab.relational.permissions.grant(
        env.users["granted"].id, "business_document", "bravo", "view"
    )
    await collab.content.update(
        "business_documents", "echo", {"contributors": [env.uid("contributor")]}
    )
    # Written behind the server's back (as another node would): this node's rights cache,
    # which holds the record it just created, sees it once told (else within its TTL).
    collab.access.forget("echo")


async def test_list_shows_each_user_what_they_may_view(env: Env) -> None:
    await _catalogue(env)
    everything = ["alpha", "bravo", "charlie", "delta", "echo"]
    assert sorted(await env.listed("owner")) == ["alpha", "bravo", "charlie", "delta"]
    assert sorted(await env.listed("editor")) == ["delta", "echo"]
    assert await env.listed("viewer") == ["alpha"]
    assert await env.listed("granted") == ["bravo"]
    assert await env.listed("contributor") == ["echo"]
    assert await env.listed("stranger") == []
    assert sorted(await env.listed("admin")) == everything
    assert sorted(await env.listed("manager")) == everything
    # Listed means readable, and unlisted means not even visible.
    assert (await env.get("granted", "/documents/bravo")).status_code == 200
    assert (await env.get("contributor", "/documents/echo")).status_code == 200
    problem(await env.get("stranger", "/documents/alpha"), 404)
    # A token scoped to some documents lists only those.
    scoped = env.server.token(env.users["admin"], documents=["alpha", "echo"])
    response = await env.http.get("/documents", headers={"Authorization": f"Bearer {scoped}"})
    assert sorted(i["documentId"] for i in response.json()["items"]) == ["alpha", "echo"]


async def test_list_filters_search_sorting_and_pages(env: Env) -> None:
    await _catalogue(env)
    assert sorted(await env.listed("admin", type="pitch_deck")) == ["charlie"]
    assert sorted(await env.listed("admin", category="Sales")) == ["alpha", "charlie", "delta"]
    assert sorted(await env.listed("admin", status="draft")) == [
        "alpha",
        "bravo",
        "charlie",
        "delta",
        "echo",
    ]
    assert await env.listed("admin", status="published") == []
    assert sorted(await env.listed("admin", tag="sales")) == ["alpha", "charlie"]
    assert await env.listed("admin", tag=["sales", "growth"]) == ["alpha"]
    # title and tag above tag alone (search ranks; tags are searchable)
    assert await env.listed("admin", q="GROWTH") == ["alpha", "delta"]
    assert await env.listed("admin", q="nordic") == ["alpha"]  # content
    assert await env.listed("owner", q="guide") == []  # echo is not the owner's
    assert sorted(await env.listed("owner", category="Sales", tag="growth")) == ["alpha", "delta"]

    # Injection-looking values are plain strings: they match nothing and change nothing.
    for hostile in ('{"$ne": null}', "' OR 1=1 --", "Sales' OR '1'='1", ".*"):
        assert await env.listed("admin", category=hostile) == []
        assert await env.listed("admin", type=hostile, tag=hostile) == []
    for hostile in ('{"$ne": null}', "' OR 1=1 --", "Sales' OR '1'='1", "nordic*", '"nordic'):
        # q is words: operators and quotes are separators, never syntax
        found = await env.listed("admin", q=hostile)
        assert found in ([], ["alpha"])
        assert found == (["alpha"] if "nordic" in hostile else [])
    assert await env.listed("stranger", q="' OR 1=1 --") == []
    no_words = problem(await env.get("admin", "/documents", q=".*"), 422)
    assert "no word" in no_words["detail"]
    assert len(await env.listed("admin")) == 5

    by_title = await env.listed("admin", sort="title", order="asc")
    assert by_title == ["alpha", "bravo", "charlie", "delta", "echo"]
    assert await env.listed("admin", sort="title", order="desc") == by_title[::-1]
    assert await env.listed("admin", sort="createdAt", order="asc") == by_title
    await env.http.patch("/documents/bravo", json={"title": "Bravo"}, headers=env.auth("owner"))
    assert (await env.listed("admin"))[0] == "bravo"  # default: updatedAt, newest first

    pages = []
    for offset in (0, 2, 4):
        response = await env.get("admin", "/documents", sort="title", limit=2, offset=offset)
        body = response.json()
        assert (body["total"], body["limit"], body["offset"]) == (5, 2, offset)
        pages.append([item["documentId"] for item in body["items"]])
    assert pages == [["alpha", "bravo"], ["charlie", "delta"], ["echo"]]
    item = (await env.get("admin", "/documents", sort="title", limit=1)).json()["items"][0]
    assert item["wordCount"] == 5  # "S" and "Expand into Nordic markets"
    assert "content" not in item

    for bad in (
        {"limit": 0},
        {"limit": 101},
        {"offset": -1},
        {"sort": "owner"},
        {"order": "sideways"},
        {"colour": "red"},
        {"type": ["a", "b"]},
    ):
        problem(await env.get("admin", "/documents", **bad), 400)
    problem(await env.get("admin", "/documents", q="x" * 201), 422)  # a search refused
    problem(await env.get("admin", "/documents", q="nordic", sort="title"), 400)


# -- errors ----------------------------------------------------------------------------------


async def test_every_kind_of_bad_request_is_a_problem(env: Env) -> None:
    await env.create(**PLAN, permissions={"view": [env.uid("viewer")]})
    owner = env.auth("owner")
    unknown_field = await env.http.post(
        "/documents", json={"title": "x", "colour": "red"}, headers=owner
    )
    body = problem(unknown_field, 422)
    assert [e["field"] for e in body["errors"]] == ["colour"]
    bad_enum = await env.http.post(
        "/documents", json={"title": "x", "sensitivity": "secret"}, headers=owner
    )
    assert problem(bad_enum, 422)["errors"][0]["field"] == "sensitivity"
    no_title = await env.http.post("/documents", json={"sections": []}, headers=owner)
    assert problem(no_title, 422)["errors"][0]["field"] == "title"
    bad_id = await env.http.post(
        "/documents", json={"title": "x", "documentId": "has space"}, headers=owner
    )
    assert problem(bad_id, 422)["errors"][0]["field"] == "documentId"

    malformed = await env.http.post(
        "/documents",
        content=b'{"title": "x",',
        headers={**owner, "content-type": "application/json"},
    )
    problem(malformed, 400)
    wrong_type = await env.http.post(
        "/documents", content=b"title=x", headers={**owner, "content-type": "text/plain"}
    )
    problem(wrong_type, 415)

    for invalid in ("bad.id", "x" * 65, "%C3%BC"):
        problem(await env.get("owner", f"/documents/{invalid}"), 400)
    problem(await env.get("owner", "/documents/q3-plan/revisions/not.an.id"), 400)

    transition = await env.http.post(
        "/documents/q3-plan/status", json={"status": "published"}, headers=owner
    )
    detail = problem(transition, 409)["detail"]
    assert "allowed next states: review, archived" in detail

    forbidden = await env.http.patch(
        "/documents/q3-plan", json={"title": "Mine"}, headers=env.auth("viewer")
    )
    assert "edit right" in problem(forbidden, 403)["detail"]
    problem(await env.get("stranger", "/documents/q3-plan"), 404)
    problem(await env.get("stranger", "/documents/no-such-document"), 404)
    hidden = await env.http.patch(
        "/documents/q3-plan", json={"title": "x"}, headers=env.auth("stranger")
    )
    problem(hidden, 404)

    anonymous = await env.http.get("/documents/q3-plan")
    problem(anonymous, 401)
    assert anonymous.headers["www-authenticate"] == "Bearer"
    problem(await env.http.get("/documents"), 401)
    garbage = await env.http.get("/documents", headers={"Authorization": "Bearer not-a-token"})
    problem(garbage, 401)
    scoped = env.server.token(env.users["owner"], documents=["elsewhere"])
    out_of_scope = await env.http.get(
        "/documents/q3-plan", headers={"Authorization": f"Bearer {scoped}"}
    )
    problem(out_of_scope, 403)

    problem(await env.get("owner", "/documents/q3-plan", colour="red"), 400)
    problem(await env.get("owner", "/documents/q3-plan", fresh="maybe"), 400)
    problem(await env.http.patch("/documents/q3-plan", json={}, headers=owner), 422)
    problem(await env.http.put("/documents/q3-plan/status", json={}, headers=owner), 405)


# -- update, permissions, status, delete -----------------------------------------------------


async def test_patch_changes_metadata_only(env: Env) -> None:
    created = await env.create(**PLAN, permissions={"edit": [env.uid("editor")]})
    await env.create(documentId="other", title="Other", slug="taken-slug")
    change = {
        "title": "Q3 Plan (final)",
        "slug": "q3-final",
        "category": None,
        "description": "What we do in Q3",
        "tags": ["growth", "growth", "us"],
        "sensitivity": "restricted",
        "seo": {"metaTitle": "Q3", "keywords": ["plan"]},
        "linkedDocuments": ["other"],
        "linkedProjects": ["p-1"],
    }
    response = await env.http.patch("/documents/q3-plan", json=change, headers=env.auth("editor"))
    assert response.status_code == 200, response.text
    updated = response.json()
    assert "content" not in updated
    assert updated["title"] == "Q3 Plan (final)"
    assert updated["category"] is None
    assert updated["tags"] == ["growth", "us"]
    assert updated["seo"] == {"metaTitle": "Q3", "metaDescription": None, "keywords": ["plan"]}
    assert updated["updatedBy"] == env.uid("editor")
    assert updated["updatedAt"] > created["updatedAt"]
    fetched = (await env.get("owner", "/documents/q3-plan")).json()
    assert fetched["slug"] == "q3-final"
    assert fetched["content"] == created["content"]  # content is the rooms', not PATCH's

    off_limits: list[dict[str, Any]] = [
        {"permissions": {"view": []}},
        {"status": "published"},
        {"owner": "me"},
    ]
    for body in off_limits:
        denied = await env.http.patch("/documents/q3-plan", json=body, headers=env.auth("owner"))
        problem(denied, 422)
    clash = await env.http.patch(
        "/documents/q3-plan", json={"slug": "taken-slug"}, headers=env.auth("owner")
    )
    problem(clash, 409)
    null_title = await env.http.patch(
        "/documents/q3-plan", json={"title": None}, headers=env.auth("owner")
    )
    problem(null_title, 422)


async def test_permissions_change_reaches_rest_and_open_sockets(env: Env) -> None:
    await env.create(**PLAN, permissions={"view": [env.uid("viewer")]})
    problem(await env.get("stranger", "/documents/q3-plan"), 404)
    body = {"view": [env.uid("stranger")], "edit": [env.uid("editor")], "comment": []}
    denied = await env.http.put(
        "/documents/q3-plan/permissions", json=body, headers=env.auth("viewer")
    )
    assert "admin right" in problem(denied, 403)["detail"]

    async with env.socket("viewer", "q3-plan/market") as dropped:
        response = await env.http.put(
            "/documents/q3-plan/permissions", json=body, headers=env.auth("owner")
        )
        assert response.status_code == 200, response.text
        assert response.json()["permissions"] == body
        # At once over REST (the rights cached by the PUT's own check are dropped)...
        assert (await env.get("stranger", "/documents/q3-plan")).status_code == 200
        # ...and the rights guard re-checks open sockets: the viewer lost access.
        assert await dropped.wait_closed(timeout=10) == 4403

    assert await env.listed("stranger") == ["q3-plan"]
    problem(await env.get("viewer", "/documents/q3-plan"), 404)
    editor_patch = await env.http.patch(
        "/documents/q3-plan", json={"description": "ok"}, headers=env.auth("editor")
    )
    assert editor_patch.status_code == 200
    stranger_patch = await env.http.patch(
        "/documents/q3-plan", json={"description": "no"}, headers=env.auth("stranger")
    )
    problem(stranger_patch, 403)
    bad = await env.http.put(
        "/documents/q3-plan/permissions", json={"view": ["nobody"]}, headers=env.auth("owner")
    )
    problem(bad, 422)


async def _status(env: Env, who: str, status: str, document: str = "q3-plan") -> httpx2.Response:
    return await env.http.post(
        f"/documents/{document}/status", json={"status": status}, headers=env.auth(who)
    )


async def test_status_workflow_cuts_revisions(env: Env) -> None:
    await env.create(**PLAN, permissions={"edit": [env.uid("editor")]})
    review = await _status(env, "editor", "review")
    assert review.status_code == 200, review.text
    assert review.json()["document"]["status"] == "review"
    assert review.json()["revision"]["changes"].startswith("status draft -> review")

    forbidden = await _status(env, "editor", "approved")
    assert "approve right" in problem(forbidden, 403)["detail"]
    approved = await _status(env, "manager", "approved")
    assert approved.status_code == 200, approved.text
    document = approved.json()["document"]
    assert document["lastReviewedBy"] == env.uid("manager")
    assert document["lastReviewedAt"] is not None
    assert document["updatedBy"] == env.uid("manager")

    backwards = await _status(env, "manager", "draft")
    assert problem(backwards, 409)["allowed"] == ["published", "archived"]
    published = await _status(env, "manager", "published")
    assert published.json()["document"]["status"] == "published"
    only_archive = problem(await _status(env, "manager", "review"), 409)
    assert only_archive["detail"].endswith("allowed next states: archived")
    problem(await _status(env, "manager", "published"), 409)
    problem(await _status(env, "manager", "deleted"), 422)

    revisions = (await env.get("owner", "/documents/q3-plan/revisions")).json()["items"]
    assert [r["changes"].split(":")[0] for r in revisions] == [
        "status approved -> published",
        "status review -> approved",
        "status draft -> review",
    ]
    assert [r["version"] for r in revisions] == sorted(
        (r["version"] for r in revisions), reverse=True
    )
    record = (await env.get("owner", "/documents/q3-plan")).json()
    assert record["version"] == revisions[0]["version"]

    # Changes requested: review -> draft, and archiving from anywhere.
    await env.create(documentId="memo", title="Memo")
    assert (await _status(env, "owner", "review", "memo")).status_code == 200
    back = await _status(env, "owner", "draft", "memo")
    assert back.json()["document"]["lastReviewedBy"] == env.uid("owner")
    assert (await _status(env, "owner", "archived", "memo")).status_code == 200
    assert problem(await _status(env, "owner", "draft", "memo"), 409)["allowed"] == []


async def test_delete_archives_and_hard_delete_is_for_admins(env: Env) -> None:
    await env.create(**PLAN, permissions={"edit": [env.uid("editor")]})
    problem(await env.http.delete("/documents/q3-plan", headers=env.auth("editor")), 403)
    archived = await env.http.delete("/documents/q3-plan", headers=env.auth("owner"))
    assert archived.status_code == 204
    record = (await env.get("owner", "/documents/q3-plan")).json()
    assert record["status"] == "archived"
    again = await env.http.delete("/documents/q3-plan", headers=env.auth("owner"))
    assert again.status_code == 204  # archiving is idempotent
    assert len((await env.get("owner", "/documents/q3-plan/revisions")).json()["items"]) == 1

    owner_hard = await env.http.delete(
        "/documents/q3-plan", params={"hard": 1}, headers=env.auth("owner")
    )
    assert "only admins" in problem(owner_hard, 403)["detail"]
    hard = await env.http.delete(
        "/documents/q3-plan", params={"hard": 1}, headers=env.auth("admin")
    )
    assert hard.status_code == 204
    problem(await env.get("admin", "/documents/q3-plan"), 404)
    assert await env.listed("admin") == []

    collab = env.server.collab
    await collab.audit.flush()
    page = await collab.relational.audit.query(
        AuditQuery(action="delete", resource_id="q3-plan", limit=10)
    )
    assert sorted(e.changes["mode"] for e in page.items) == ["archive", "archive", "hard"]


# -- revisions -------------------------------------------------------------------------------


async def test_revisions_save_list_get_diff_and_restore_through_a_live_client(env: Env) -> None:
    await env.create(
        documentId="rev",
        title="Revised",
        sections=[{"id": "intro", "title": "Intro", "content": "Version one."}],
        permissions={"view": [env.uid("viewer")]},
    )
    owner = env.auth("owner")
    async with env.socket("owner", "rev/intro", events=True) as live:
        assert str(live.text) == "Version one."
        first = await env.http.post(
            "/documents/rev/revisions", json={"message": "baseline"}, headers=owner
        )
        assert first.status_code == 201, first.text
        first_rev = first.json()
        assert first_rev["changes"].startswith("baseline")
        assert "content" not in first_rev

        await live.insert(len(live.text), " More text.")
        await acked(live, 2)
        second = await env.http.post("/documents/rev/revisions", headers=owner)  # no body
        assert second.status_code == 201, second.text
        second_rev = second.json()
        assert second_rev["version"] == first_rev["version"] + 1
        assert "+2 / -0 words" in second_rev["changes"]
        problem(await env.http.post("/documents/rev/revisions", headers=env.auth("viewer")), 403)
        two_lines = {"message": "line one\nline two"}
        problem(await env.http.post("/documents/rev/revisions", json=two_lines, headers=owner), 422)

        listed = (await env.get("viewer", "/documents/rev/revisions")).json()
        assert [r["revisionId"] for r in listed["items"]] == [
            second_rev["revisionId"],
            first_rev["revisionId"],
        ]
        page = (await env.get("viewer", "/documents/rev/revisions", limit=1)).json()
        assert [r["revisionId"] for r in page["items"]] == [second_rev["revisionId"]]
        assert page["nextBefore"] == second_rev["version"]
        rest = await env.get("viewer", "/documents/rev/revisions", before=page["nextBefore"])
        assert [r["revisionId"] for r in rest.json()["items"]] == [first_rev["revisionId"]]

        full = (
            await env.get("viewer", f"/documents/rev/revisions/{first_rev['revisionId']}")
        ).json()
        assert full["sections"] == [
            {"id": "intro", "title": "Intro", "content": "Version one.", "order": 0}
        ]
        assert full["content"] == "## Intro\n\nVersion one."
        problem(await env.get("viewer", "/documents/rev/revisions/" + "0" * 32), 404)

        diff = await env.get(
            "viewer",
            f"/documents/rev/revisions/{first_rev['revisionId']}/diff/{second_rev['revisionId']}",
        )
        assert diff.status_code == 200, diff.text
        sections = diff.json()["sections"]
        assert [(s["sectionId"], s["status"]) for s in sections] == [("intro", "edited")]
        assert "-Version one." in sections[0]["diff"]
        assert "+Version one. More text." in sections[0]["diff"]
        assert diff.json()["from"]["version"] == first_rev["version"]

        problem(
            await env.http.post(
                f"/documents/rev/revisions/{first_rev['revisionId']}/restore",
                headers=env.auth("viewer"),
            ),
            403,
        )
        restored = await env.http.post(
            f"/documents/rev/revisions/{first_rev['revisionId']}/restore", headers=owner
        )
        assert restored.status_code == 200, restored.text
        assert restored.json()["revision"]["changes"].startswith(
            f"restored v{first_rev['version']}"
        )
        # The live client gets the restore as CRDT updates.
        await live.wait_for(lambda: str(live.text) == "Version one.")
        current = (await env.get("owner", "/documents/rev")).json()
        assert current["content"]["sections"][0]["content"] == "Version one."
        problem(
            await env.http.post(f"/documents/rev/revisions/{'f' * 32}/restore", headers=owner),
            404,
        )


async def test_restore_unlists_sections_whose_rooms_are_unloaded(
    start_server: StartServer,
) -> None:
    server = await start_server(insecure_dev=False, room_idle_seconds=0)
    async with _env(server) as env:
        await env.create(documentId="r2", sections=[{"id": "a", "title": "A", "content": "a"}])
        saved = await env.http.post("/documents/r2/revisions", headers=env.auth("owner"))
        collab = server.collab
        unloaded = asyncio.create_task(collab.registry.wait_unloaded("r2/b"))
        async with env.socket("owner", "r2/b") as added:
            await added.insert(0, "b")
            await acked_by_peer(env, "r2/b", "b")
        await asyncio.wait_for(unloaded, 10)
        restore = f"/documents/r2/revisions/{saved.json()['revisionId']}/restore"
        assert (await env.http.post(restore, headers=env.auth("owner"))).status_code == 200
        content = await collab.snapshots.render("r2")
        assert [s.id for s in content.sections] == ["a"]


async def acked_by_peer(env: Env, room: str, text: str) -> None:
    """Wait until a second client of ``room`` sees ``text`` (so the server holds it)."""
    async with env.socket("owner", room) as peer:
        await peer.wait_for(lambda: str(peer.text) == text)


# -- export and the audit trail --------------------------------------------------------------


async def test_export_renders_the_live_rooms_and_is_audited(env: Env) -> None:
    await env.create(**PLAN, permissions={"view": [env.uid("viewer")]})
    async with env.socket("owner", "q3-plan/market", events=True) as editor:
        await editor.insert(0, "Now: ")
        await acked(editor, 2)
        response = await env.get("viewer", "/documents/q3-plan/export", format="markdown")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/markdown; charset=utf-8"
    assert response.headers["content-disposition"] == 'attachment; filename="q3-plan.md"'
    assert response.text.startswith("# Q3 Plan\n\n## Market\n\nNow: Grow in **EU**.")
    assert "## Risks & Mitigations\n\nCompetition responds." in response.text
    problem(await env.get("viewer", "/documents/q3-plan/export", format="pdf"), 400)
    problem(await env.get("stranger", "/documents/q3-plan/export"), 404)

    collab = env.server.collab
    await collab.audit.flush()
    audit = collab.relational.audit
    created = await audit.query(AuditQuery(action="create", resource_id="q3-plan"))
    assert [(e.user_id, e.resource_type) for e in created.items] == [
        (env.users["owner"].id, "business_document")
    ]
    exported = await audit.query(AuditQuery(action="export", resource_id="q3-plan"))
    assert [(e.user_id, _own(e.changes)) for e in exported.items] == [
        (env.users["viewer"].id, {"format": "markdown"})
    ]
    assert all(e.changes["requestId"] for e in exported.items)  # carried from the request
    accesses = await audit.query_access(AccessQuery(document_id="q3-plan", access_type="export"))
    assert [(e.user_id, e.data_sensitivity) for e in accesses.items] == [
        (env.users["viewer"].id, "confidential")
    ]


async def test_reads_and_mutations_leave_audit_rows(env: Env) -> None:
    await env.create(**PLAN, permissions={"view": [env.uid("viewer")]})
    await env.get("viewer", "/documents/q3-plan")
    await env.get("viewer", "/documents")  # a listing reads no content
    await env.http.patch("/documents/q3-plan", json={"title": "New"}, headers=env.auth("owner"))
    await _status(env, "owner", "review")
    await env.http.post("/documents/q3-plan/revisions", headers=env.auth("owner"))
    collab = env.server.collab
    await collab.audit.flush()
    audit = collab.relational.audit
    rows = await audit.query(AuditQuery(resource_id="q3-plan", limit=50))
    assert sorted(e.action for e in rows.items) == [
        "create",
        "revision_save",
        "status_change",
        "update",
    ]
    update = next(e for e in rows.items if e.action == "update")
    assert _own(update.changes) == {"before": {"title": "Q3 Plan"}, "after": {"title": "New"}}
    reads = await audit.query_access(AccessQuery(document_id="q3-plan", access_type="read"))
    assert [(e.user_id, e.data_sensitivity) for e in reads.items] == [
        (env.users["viewer"].id, "confidential")
    ]


def _own(changes: dict[str, object]) -> dict[str, object]:
    """An audit row's changes without the request id every REST request adds."""
    return {key: value for key, value in changes.items() if key != "requestId"}
