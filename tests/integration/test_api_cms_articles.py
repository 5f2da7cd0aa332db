"""Knowledge articles over REST: slugs, publish / unpublish, views without a write per view,
likes once per user, archive on delete."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.conftest import StartServer
from tests.integration.cms_env import INJECTIONS, Env, cms_env, field_of, problem


@pytest.fixture
async def env(start_server: StartServer) -> AsyncIterator[Env]:
    server = await start_server(insecure_dev=False)
    async with cms_env(server) as made:
        yield made


async def test_slugs_are_unique_and_made_from_titles(env: Env) -> None:
    first = await env.created("owner", "/knowledge-articles", {"title": "Pricing Playbook!"})
    second = await env.created("owner", "/knowledge-articles", {"title": "Pricing playbook"})
    assert (first["slug"], second["slug"]) == ("pricing-playbook", "pricing-playbook-2")
    assert (first["status"], first["views"], first["likes"]) == ("draft", 0, 0)
    assert "likedBy" not in first
    problem(
        await env.post("owner", "/knowledge-articles", {"title": "x", "slug": "pricing-playbook"}),
        409,
    )
    assert (
        field_of(
            await env.post("owner", "/knowledge-articles", {"title": "x", "slug": "Not A Slug"})
        )
        == "slug"
    )
    problem(
        await env.patch(
            "owner", f"/knowledge-articles/{second['articleId']}", {"slug": "pricing-playbook"}
        ),
        409,
    )
    for body, field in [
        ({"title": "x", "status": "published"}, "status"),
        ({"title": "x", "views": 1000}, "views"),
        ({"title": "x", "featured": "yes"}, "featured"),
        ({"title": "x", "seo": {"keywords": "one"}}, "seo.keywords"),
        ({"title": "x", "relatedArticles": ["none"]}, "relatedArticles.0"),
    ]:
        assert field_of(await env.post("owner", "/knowledge-articles", body)) == field
    by_slug = await env.get("owner", "/knowledge-articles/by-slug/pricing-playbook-2")
    assert by_slug.json()["articleId"] == second["articleId"]


async def test_publish_views_and_likes(env: Env) -> None:
    made = await env.created(
        "owner", "/knowledge-articles", {"articleId": "kb1", "title": "Guide", "tags": ["sales"]}
    )
    assert made["articleId"] == "kb1"
    problem(await env.post("analyst", "/knowledge-articles/kb1/publish"), 404)
    published = await env.post("owner", "/knowledge-articles/kb1/publish")
    assert published.status_code == 200, published.text
    assert published.json()["status"] == "published"
    assert published.json()["publishedDate"].endswith("Z")

    await env.server.collab.relational.permissions.grant(
        env.users["viewer"].id, "knowledge_article", "kb1", "view"
    )
    for _ in range(3):
        seen = await env.get("viewer", "/knowledge-articles/kb1")
        assert seen.status_code == 200
    content = env.server.collab.content
    stored = await content.get("knowledge_articles", "kb1")
    assert stored is not None
    assert stored["views"] == 0  # counted in the stats counters: no write per view
    await env.get("owner", "/knowledge-articles/kb1")  # the author's reads do not count
    assert await env.server.collab.cms.views.flush() == 3
    stored = await content.get("knowledge_articles", "kb1")
    assert stored is not None
    assert stored["views"] == 3
    assert (await env.get("owner", "/knowledge-articles/kb1")).json()["views"] == 3

    liked = await env.http.put("/knowledge-articles/kb1/like", headers=env.auth("viewer"))
    assert liked.json() == {"likes": 1, "likedByMe": True}
    again = await env.http.put("/knowledge-articles/kb1/like", headers=env.auth("viewer"))
    assert again.json()["likes"] == 1
    await env.http.put("/knowledge-articles/kb1/like", headers=env.auth("manager"))
    unliked = await env.http.delete("/knowledge-articles/kb1/like", headers=env.auth("viewer"))
    assert unliked.json() == {"likes": 1, "likedByMe": False}

    assert await env.listed(
        "viewer", "/knowledge-articles", "articleId", tag="sales", status="published"
    ) == ["kb1"]
    assert await env.listed("viewer", "/knowledge-articles", "articleId", tag="other") == []
    for text in INJECTIONS:
        assert await env.listed("owner", "/knowledge-articles", "articleId", q=text) == []
        assert await env.listed("owner", "/knowledge-articles", "articleId", category=text) == []

    draft = await env.post("owner", "/knowledge-articles/kb1/unpublish")
    assert draft.json()["status"] == "draft"
    assert (await env.delete("owner", "/knowledge-articles/kb1")).status_code == 204
    archived = await env.get("owner", "/knowledge-articles/kb1")
    assert archived.json()["status"] == "archived"
    problem(await env.post("owner", "/knowledge-articles/kb1/publish"), 409)
    assert (await env.delete("admin", "/knowledge-articles/kb1", hard=1)).status_code == 204
    problem(await env.get("admin", "/knowledge-articles/kb1"), 404)
    actions = sorted(row.action for row in await env.audit_rows("kb1"))
    assert actions == [
        "create",
        "delete",
        "delete",
        "status_change",
        "status_change",
        "update",
        "update",
        "update",
    ]
    reads = await env.access_rows("knowledge_article:kb1")
    assert len(reads) >= 4
