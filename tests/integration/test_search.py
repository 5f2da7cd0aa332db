"""``GET /api/search`` against a real server (``docs/search.md``): ranking, rights inside the
query, live edits, words matched literally, and every kind of bad request."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx2
import pytest

from loadtests.client import YClient
from server.hooks import Hooks, Stored, Storing
from server.realtime.hub import Hub
from tests.conftest import LiveServer, StartServer

PROBLEM = "application/problem+json"


async def _server(start_server: StartServer, **kw: Any) -> tuple[LiveServer, dict[str, str]]:
    server = await start_server(insecure_dev=False, **kw)
    tokens = {}
    for name, role in (("ada", "admin"), ("olga", "analyst"), ("vic", "viewer")):
        user = await server.add_user(f"{name}@example.com", role, name.title())
        tokens[name] = server.token(user)
    return server, tokens


async def _get(server: LiveServer, token: str, **params: Any) -> httpx2.Response:
    async with httpx2.AsyncClient(base_url=server.http_url) as http:
        return await http.get(
            "/api/search", params=params, headers={"Authorization": f"Bearer {token}"}
        )


async def _create(server: LiveServer, token: str, **body: Any) -> None:
    async with httpx2.AsyncClient(base_url=server.http_url) as http:
        created = await http.post(
            "/api/documents", json=body, headers={"Authorization": f"Bearer {token}"}
        )
        assert created.status_code == 201, created.text


async def test_ranked_hits_with_snippets_across_collections(start_server: StartServer) -> None:
    server, tokens = await _server(start_server)
    await _create(
        server,
        tokens["olga"],
        documentId="nordic",
        title="Nordic expansion",
        sections=[{"id": "s", "title": "S", "content": "Nordic markets. Nordic pricing."}],
    )
    await _create(
        server,
        tokens["olga"],
        documentId="memo",
        title="Memo",
        sections=[{"id": "s", "title": "S", "content": "a word on nordic partners"}],
    )
    await server.collab.content.insert(
        "projects", {"projectId": "p1", "name": "Nordic launch", "owner": "someone-else"}
    )
    response = await _get(server, tokens["ada"], q="nordic")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["total"], body["limit"], body["offset"]) == (3, 20, 0)
    ranked = [(item["type"], item["id"]) for item in body["items"]]
    assert ranked[-1] == ("business_document", "memo")  # mentioned once, in the body
    assert set(ranked) == {
        ("business_document", "nordic"),
        ("business_document", "memo"),
        ("project", "p1"),
    }
    first = body["items"][0]
    assert set(first) == {"type", "id", "title", "score", "snippet", "updatedAt"}
    assert "<mark>" in first["snippet"]
    only_projects = (await _get(server, tokens["ada"], q="nordic", type="project")).json()
    assert [item["id"] for item in only_projects["items"]] == ["p1"]
    both = await _get(server, tokens["ada"], q="nordic", type=["project", "business_document"])
    assert both.json()["total"] == 3


async def test_only_what_the_caller_may_view_with_right_totals(start_server: StartServer) -> None:
    server, tokens = await _server(start_server)
    for i in range(5):
        await _create(server, tokens["olga"], documentId=f"d{i}", title=f"Budget {i}")
    users = await server.collab.relational.users.get_by_email("vic@example.com")
    assert users is not None
    await server.collab.relational.permissions.grant(users.id, "business_document", "d3", "view")
    await server.collab.content.insert(
        "projects", {"projectId": "p1", "name": "Budget review", "owner": str(users.id)}
    )
    await server.collab.content.insert(
        "projects", {"projectId": "p2", "name": "Budget other", "owner": "nobody"}
    )
    seen = (await _get(server, tokens["vic"], q="budget", limit=1)).json()
    assert seen["total"] == 2  # d3 (granted) and p1 (owned), counted inside the query
    rest = (await _get(server, tokens["vic"], q="budget", limit=1, offset=1)).json()
    assert {seen["items"][0]["id"], rest["items"][0]["id"]} == {"d3", "p1"}
    assert (await _get(server, tokens["olga"], q="budget")).json()["total"] == 5
    assert (await _get(server, tokens["ada"], q="budget")).json()["total"] == 7


async def test_an_edit_is_searchable_once_its_snapshot_is_written(
    start_server: StartServer,
) -> None:
    stored = asyncio.Event()
    with_word: set[str] = set()

    def install(hooks: Hooks, hub: Hub) -> object:
        async def offered(storing: Storing) -> None:
            if "zanzibar" in storing.content.markdown:
                with_word.add(storing.document_id)

        async def after(event: Stored) -> None:
            if event.document_id in with_word:  # the write that holds the edit, no earlier one
                stored.set()

        return hooks.on_store.subscribe(offered), hooks.after_store.subscribe(after)

    server, tokens = await _server(start_server, snapshot_idle_seconds=0.05, extensions=[install])
    await _create(server, tokens["olga"], documentId="live", title="Live")
    assert (await _get(server, tokens["olga"], q="zanzibar")).json()["total"] == 0
    async with YClient(server.ws_url, "live/s", token=tokens["olga"]) as editor:
        await asyncio.wait_for(editor.synced.wait(), 10)
        await editor.insert(0, "zanzibar strategy")
        await asyncio.wait_for(stored.wait(), 10)
    found = (await _get(server, tokens["olga"], q="zanzibar")).json()
    assert [item["id"] for item in found["items"]] == ["live"]


@pytest.mark.parametrize(
    "q", ['"zanzibar', "zanzibar*", "zanzibar OR 1=1", "'; DROP TABLE users; --", '{"$gt":""}']
)
async def test_operators_are_text(start_server: StartServer, q: str) -> None:
    server, tokens = await _server(start_server)
    response = await _get(server, tokens["ada"], q=q)
    assert response.status_code == 200, response.text
    assert response.json()["total"] == 0


@pytest.mark.parametrize(
    ("params", "status", "says"),
    [
        ({}, 400, "q"),
        ({"q": "***"}, 422, "no word"),
        ({"q": "x" * 201}, 422, "longer than"),
        ({"q": "plan", "type": "galaxy"}, 422, "unknown type"),
        ({"q": "plan", "updatedFrom": "yesterday"}, 400, "ISO 8601"),
        ({"q": "plan", "updatedFrom": "2026-01-01T00:00:00"}, 400, "time zone"),
        ({"q": "plan", "limit": 0}, 400, "limit"),
        ({"q": "plan", "colour": "red"}, 400, "colour"),
        ({"q": "plan", "status": ["a", "b"]}, 400, "more than once"),
    ],
)
async def test_bad_searches_are_refused_clearly(
    start_server: StartServer, params: dict[str, Any], status: int, says: str
) -> None:
    server, tokens = await _server(start_server)
    response = await _get(server, tokens["ada"], **params)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert says in response.text


async def test_search_needs_a_user(start_server: StartServer) -> None:
    server, _ = await _server(start_server)
    async with httpx2.AsyncClient(base_url=server.http_url) as http:
        assert (await http.get("/api/search", params={"q": "plan"})).status_code == 401
