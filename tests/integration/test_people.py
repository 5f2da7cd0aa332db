"""``GET /api/documents/{id}/people``: whom a comment may mention (the active users who may
view the document), for the editor's @mention autocomplete."""

from __future__ import annotations

import httpx2

from tests.conftest import StartServer


async def test_people_are_the_active_users_who_may_view(start_server: StartServer) -> None:
    server = await start_server(insecure_dev=False)
    ada = await server.add_user("ada@example.com", "admin", "Ada Lovelace")
    bo = await server.add_user("bo@example.com", "analyst", "Bo Li")
    cy = await server.add_user("cy@example.com", "analyst", "Cy Outsider")
    dee = await server.add_user("dee@example.com", "analyst", "Dee Gone")
    await server.collab.relational.users.suspend(dee.id)
    auth = {"Authorization": f"Bearer {server.token(ada)}"}
    as_bo = {"Authorization": f"Bearer {server.token(bo)}"}
    as_cy = {"Authorization": f"Bearer {server.token(cy)}"}
    async with httpx2.AsyncClient(base_url=server.http_url + "/api") as http:
        created = await http.post(
            "/documents",
            headers=auth,
            json={
                "documentId": "plan",
                "title": "Plan",
                "permissions": {"view": [str(bo.id), str(dee.id)]},
            },
        )
        assert created.status_code == 201
        everyone = await http.get("/documents/plan/people", headers=as_bo)
        assert everyone.status_code == 200
        assert everyone.json() == {
            "items": [
                {"id": str(ada.id), "name": "Ada Lovelace"},
                {"id": str(bo.id), "name": "Bo Li"},
            ]
        }
        some = await http.get(
            "/documents/plan/people", params={"q": "li", "limit": 1}, headers=auth
        )
        assert [p["name"] for p in some.json()["items"]] == ["Bo Li"]
        assert "email" not in some.json()["items"][0]
        # Someone who may not view the document does not learn who may.
        assert (await http.get("/documents/plan/people", headers=as_cy)).status_code == 404
        for params in ({"limit": 0}, {"limit": 51}, {"q": "x" * 101}, {"sort": "name"}):
            bad = await http.get("/documents/plan/people", params=params, headers=auth)
            assert bad.status_code == 400, params
