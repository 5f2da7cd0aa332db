"""The projects and market research REST resources end to end: CRUD, lists, validation
(every enum refused when wrong), rights per role, audit, the documents lookup."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import StartServer
from tests.integration.cms_env import INJECTIONS, Env, cms_env, field_of, problem


@pytest.fixture
async def env(start_server: StartServer) -> AsyncIterator[Env]:
    server = await start_server(insecure_dev=False)
    async with cms_env(server) as made:
        yield made


async def _document(env: Env, doc_id: str, who: str = "owner", **body: Any) -> None:
    response = await env.post(who, "/documents", {"documentId": doc_id, "title": doc_id, **body})
    assert response.status_code == 201, response.text


PROJECT: dict[str, Any] = {
    "projectId": "expansion",
    "name": "EU expansion",
    "description": "Grow in the EU",
    "status": "active",
    "startDate": "2026-01-05T09:00:00Z",
    "targetCompletionDate": "2026-06-30T00:00:00+02:00",
    "budget": 125000.5,
    "allocatedResources": ["2 FTE"],
    "objectives": [
        {"id": "o1", "description": "Open Berlin", "priority": "high", "status": "in_progress"}
    ],
}


# -- create, read, update, delete -------------------------------------------------------------


async def test_project_crud_with_dates_in_utc(env: Env) -> None:
    response = await env.post("owner", "/projects", PROJECT)
    assert response.status_code == 201, response.text
    assert response.headers["location"] == "/api/projects/expansion"
    created = response.json()
    assert created["owner"] == env.uid("owner")
    assert created["createdBy"] == env.uid("owner")
    assert created["targetCompletionDate"] == "2026-06-29T22:00:00.000Z"
    assert created["createdAt"].endswith("Z")

    got = await env.get("owner", "/projects/expansion")
    assert got.json() == created

    patched = await env.patch(
        "owner",
        "/projects/expansion",
        {"name": "EU growth", "objectives": {"upsert": [{"id": "o1", "status": "completed"}]}},
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["name"] == "EU growth"
    assert body["objectives"] == [
        {"id": "o1", "description": "Open Berlin", "priority": "high", "status": "completed"}
    ]
    added = await env.patch(
        "owner",
        "/projects/expansion",
        {"objectives": {"upsert": [{"description": "Open Paris"}], "remove": ["o1"]}},
    )
    objectives = added.json()["objectives"]
    assert [o["description"] for o in objectives] == ["Open Paris"]
    assert objectives[0]["id"]  # generated

    assert (await env.delete("owner", "/projects/expansion")).status_code == 204
    problem(await env.get("owner", "/projects/expansion"), 404)


async def test_generated_id_and_taken_id(env: Env) -> None:
    made = await env.created("owner", "/projects", {"name": "No id"})
    assert len(made["projectId"]) == 32
    assert made["status"] == "planning"
    await env.created("owner", "/projects", {"projectId": "p1", "name": "One"})
    problem(await env.post("owner", "/projects", {"projectId": "p1", "name": "Again"}), 409)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "status": "done"}, "status"),
        ({"name": "x", "objectives": [{"priority": "urgent"}]}, "objectives.0.priority"),
        ({"name": "x", "objectives": [{"status": "paused"}]}, "objectives.0.status"),
        ({"name": "x", "budget": "lots"}, "budget"),
        ({"name": "x", "budget": -1}, "budget"),
        ({"name": 5}, "name"),
        ({"name": "x", "colour": "red"}, "colour"),
        ({"name": "x", "startDate": "yesterday"}, "startDate"),
        ({"name": "x", "startDate": "2026-01-05T09:00:00"}, "startDate"),
        ({"name": "x", "owner": "not-a-user"}, "owner"),
        ({"name": "x", "owner": "00000000-0000-4000-8000-000000000000"}, "owner"),
        ({"name": "x", "stakeholders": [{"role": "Lead"}]}, "stakeholders.0.userId"),
        ({"name": "x", "linkedDocuments": ["no-such-document"]}, "linkedDocuments.0"),
        ({"name": "x", "createdAt": "2026-01-05T09:00:00Z"}, "createdAt"),
        ({"description": "no name"}, "name"),
    ],
)
async def test_bad_project_bodies_name_the_field(
    env: Env, body: dict[str, Any], field: str
) -> None:
    assert field_of(await env.post("owner", "/projects", body)) == field
    assert await env.listed("admin", "/projects", "projectId") == []


async def test_research_enums_and_status_flow(env: Env) -> None:
    research = {
        "researchId": "r1",
        "title": "EU market",
        "type": "market_analysis",
        "findings": [
            {"id": "f1", "title": "Demand", "impact": "high", "evidence": ["survey"]},
        ],
        "targetMarkets": [{"segment": "Universities", "size": 1e9, "growth_rate": 4.5}],
        "competitors": [{"id": "c1", "name": "Acme", "market_share": 30}],
        "sources": [{"name": "Eurostat", "url": "https://example.org", "credibility": "high"}],
    }
    made = await env.created("owner", "/market-research", research)
    assert made["status"] == "draft"
    assert made["author"] == env.uid("owner")
    for body, field in [
        ({"type": "guesswork"}, "type"),
        ({"findings": [{"impact": "huge"}]}, "findings.0.impact"),
        ({"sources": [{"name": "x", "credibility": "so-so"}]}, "sources.0.credibility"),
        ({"status": "approved"}, "status"),
        ({"competitors": [{"market_share": 101}]}, "competitors.0.market_share"),
    ]:
        assert field_of(await env.patch("owner", "/market-research/r1", body)) == field
    problem(await env.patch("owner", "/market-research/r1", {"status": "published"}), 409)
    edited = await env.patch(
        "owner",
        "/market-research/r1",
        {"targetMarkets": {"upsert": [{"segment": "Universities", "growth_rate": 5}]}},
    )
    assert edited.json()["targetMarkets"] == [
        {"segment": "Universities", "size": 1e9, "growth_rate": 5}
    ]
    for status in ("validated", "published"):
        moved = await env.patch("owner", "/market-research/r1", {"status": status})
        assert moved.status_code == 200, moved.text
    rows = await env.audit_rows("r1")
    assert sorted(row.action for row in rows) == [
        "create",
        "status_change",
        "status_change",
        "update",
    ]
    assert {row.resource_type for row in rows} == {"market_research"}


# -- rights --------------------------------------------------------------------------------------


async def test_rights_per_role(env: Env) -> None:
    await env.created(
        "owner",
        "/projects",
        {
            "projectId": "p",
            "name": "P",
            "stakeholders": [{"userId": env.uid("analyst"), "role": "Contributor"}],
        },
    )
    # Viewers may not create.
    problem(await env.post("viewer", "/projects", {"name": "V"}), 403)
    # A stranger does not learn it exists; a stakeholder may edit but not delete.
    problem(await env.get("stranger", "/projects/p"), 404)
    problem(await env.patch("stranger", "/projects/p", {"name": "S"}), 404)
    assert (
        await env.patch("analyst", "/projects/p", {"name": "By stakeholder"})
    ).status_code == 200
    problem(await env.delete("analyst", "/projects/p"), 403)
    problem(await env.patch("analyst", "/projects/p", {"owner": env.uid("analyst")}), 403)
    # Managers and admins see everything; a viewer sees what is shared with them.
    assert await env.listed("manager", "/projects", "projectId") == ["p"]
    assert await env.listed("admin", "/projects", "projectId") == ["p"]
    assert await env.listed("viewer", "/projects", "projectId") == []
    assert await env.listed("stranger", "/projects", "projectId") == []
    await env.server.collab.relational.permissions.grant(
        env.users["viewer"].id, "project", "p", "view"
    )
    assert await env.listed("viewer", "/projects", "projectId") == ["p"]
    assert (await env.get("viewer", "/projects/p")).status_code == 200
    problem(await env.patch("viewer", "/projects/p", {"name": "V"}), 403)
    # Deleting: the owner may (projects have no archived status: it is deleted).
    problem(await env.delete("owner", "/projects/p", hard=1), 403)
    assert (await env.delete("owner", "/projects/p")).status_code == 204
    rows = await env.audit_rows("p")
    actions = sorted(row.action for row in rows)
    assert actions == ["create", "delete", "denied", "denied", "update"]
    reads = await env.access_rows("project:p")
    assert [row.user_id for row in reads] == [env.users["viewer"].id]


# -- lists ---------------------------------------------------------------------------------------


async def test_list_filters_sorts_pages_and_matches_literally(env: Env) -> None:
    for n, status in enumerate(["planning", "active", "active", "completed"]):
        await env.created(
            "owner",
            "/projects",
            {
                "projectId": f"p{n}",
                "name": f"Project {n}",
                "status": status,
                "startDate": f"2026-0{n + 1}-01T00:00:00Z",
                "budget": 1000 * n,
            },
        )
    assert await env.listed(
        "owner", "/projects", "projectId", status="active", sort="name", order="asc"
    ) == ["p1", "p2"]
    assert await env.listed(
        "owner",
        "/projects",
        "projectId",
        startDateFrom="2026-02-01T00:00:00Z",
        startDateTo="2026-03-15",
        sort="startDate",
        order="asc",
    ) == ["p1", "p2"]
    assert await env.listed(
        "owner", "/projects", "projectId", budgetFrom="2500", sort="budget"
    ) == ["p3"]
    page = (await env.get("owner", "/projects", limit=2, offset=1, sort="name", order="asc")).json()
    assert [i["projectId"] for i in page["items"]] == ["p1", "p2"]
    assert (page["total"], page["limit"], page["offset"]) == (4, 2, 1)
    assert field_of(await env.get("owner", "/projects", status="bogus")) == "status"
    assert field_of(await env.get("owner", "/projects", sort="riskAssessment")) == "sort"
    assert field_of(await env.get("owner", "/projects", startDateFrom="soon")) == "startDateFrom"
    problem(await env.get("owner", "/projects", colour="red"), 400)
    for text in INJECTIONS:
        assert await env.listed("owner", "/projects", "projectId", q=text) == []
        assert field_of(await env.get("owner", "/projects", owner=text)) == "owner"


# -- documents lookup ------------------------------------------------------------------------------


async def test_include_documents_is_the_lookup_with_rights_and_dangling_links(env: Env) -> None:
    await _document(env, "mine", sections=[{"title": "A", "content": "secret text"}])
    await _document(env, "theirs", who="stranger")
    await _document(env, "shared", who="stranger", permissions={"view": [env.uid("owner")]})
    await _document(env, "doomed")
    problem(
        await env.post("owner", "/projects", {"name": "x", "linkedDocuments": ["missing"]}), 422
    )
    await env.created(
        "owner",
        "/projects",
        {"projectId": "p", "name": "P", "linkedDocuments": ["shared", "mine", "theirs", "doomed"]},
    )
    assert (await env.delete("admin", "/documents/doomed", hard=1)).status_code == 204

    got = await env.get("owner", "/projects/p", include="documents")
    assert got.status_code == 200, got.text
    body = got.json()
    assert [d["documentId"] for d in body["documents"]] == ["shared", "mine"]
    assert all("content" not in d for d in body["documents"])
    assert body["missingDocuments"] == ["doomed"]
    assert body["hiddenDocuments"] == 1
    assert body["linkedDocuments"] == ["shared", "mine", "theirs", "doomed"]

    full = (await env.get("owner", "/projects/p", include="documents", content=1)).json()
    mine = next(d for d in full["documents"] if d["documentId"] == "mine")
    assert "content" in mine
    admin = (await env.get("admin", "/projects/p", include="documents")).json()
    assert admin["hiddenDocuments"] == 0
    problem(await env.get("owner", "/projects/p", include="everything"), 400)

    # The reverse: a document lists the projects that link it (those the caller may view).
    linking = await env.get("owner", "/documents/mine/projects")
    assert [p["projectId"] for p in linking.json()["items"]] == ["p"]
    assert (await env.get("stranger", "/documents/theirs/projects")).json()["items"] == []
    problem(await env.get("stranger", "/documents/mine/projects"), 404)
