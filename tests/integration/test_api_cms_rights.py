"""Rights per role on each of the five CMS resources: the same rules everywhere, from the one
rights function (docs/cms.md, "Rights")."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import StartServer
from tests.integration.cms_env import Env, cms_env, problem

RESOURCES: list[tuple[str, str, str, dict[str, Any], bool]] = [
    # path, id field, resource type, body, archived on delete
    ("projects", "projectId", "project", {"name": "N"}, False),
    ("market-research", "researchId", "market_research", {"title": "T"}, False),
    ("strategic-plans", "planId", "strategic_plan", {"title": "T"}, True),
    ("sales-opportunities", "opportunityId", "sales_opportunity", {"title": "T"}, False),
    ("knowledge-articles", "articleId", "knowledge_article", {"title": "T"}, True),
]


@pytest.fixture
async def env(start_server: StartServer) -> AsyncIterator[Env]:
    server = await start_server(insecure_dev=False)
    async with cms_env(server) as made:
        yield made


@pytest.mark.parametrize(("path", "id_field", "resource_type", "body", "archived"), RESOURCES)
async def test_the_same_rules_on_every_resource(
    env: Env, path: str, id_field: str, resource_type: str, body: dict[str, Any], archived: bool
) -> None:
    base = f"/{path}"
    problem(await env.post("viewer", base, body), 403)
    made = await env.created("owner", base, {**body, id_field: "r1"})
    item = f"{base}/r1"
    assert made[id_field] == "r1"
    # Nobody but the owner, admins and managers knows of it.
    problem(await env.get("stranger", item), 404)
    problem(await env.get("viewer", item), 404)
    assert await env.listed("stranger", base, id_field) == []
    for who in ("manager", "admin", "owner"):
        assert (await env.get(who, item)).status_code == 200
        assert await env.listed(who, base, id_field) == ["r1"]
    # A view grant opens it to a viewer, read-only.
    await env.server.collab.relational.permissions.grant(
        env.users["viewer"].id, resource_type, "r1", "view"
    )
    assert (await env.get("viewer", item)).status_code == 200
    assert await env.listed("viewer", base, id_field) == ["r1"]
    changed = {"name": "V"} if path == "projects" else {"title": "V"}
    problem(await env.patch("viewer", item, changed), 403)
    problem(await env.delete("viewer", item), 403)
    # An edit grant lets the stranger edit, not delete.
    await env.server.collab.relational.permissions.grant(
        env.users["stranger"].id, resource_type, "r1", "edit"
    )
    assert (await env.patch("stranger", item, changed)).status_code == 200
    problem(await env.delete("stranger", item), 403)
    # Managers edit; the owner deletes (or archives); only admins delete for good.
    assert (await env.patch("manager", item, changed)).status_code == 200
    problem(await env.delete("owner", item, hard=1), 403)
    assert (await env.delete("owner", item)).status_code == 204
    after = await env.get("admin", item)
    if archived:
        assert after.json()["status"] == "archived"
        assert (await env.delete("admin", item, hard=1)).status_code == 204
    problem(await env.get("admin", item), 404)
    rows = await env.audit_rows("r1")
    assert {row.resource_type for row in rows} == {resource_type}
    assert "create" in {row.action for row in rows}
    reads = await env.access_rows(f"{resource_type}:r1")
    assert {row.user_id for row in reads} >= {env.users["viewer"].id, env.users["manager"].id}
