"""``/api/users`` against a real server (``docs/administration.md``): each operation, its
audit row, its effect on open sockets within 5 s, ``last_login``, and non-admins refused."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx2
import pytest

from loadtests.client import YClient
from persistence.relational import AuditQuery, UserQuery
from tests.conftest import LiveServer, StartServer

PROBLEM = "application/problem+json"


async def _server(start_server: StartServer) -> tuple[LiveServer, dict[str, Any]]:
    server = await start_server(insecure_dev=False)
    users = {}
    for name, role in (("ada", "admin"), ("olga", "analyst"), ("vic", "viewer")):
        users[name] = await server.add_user(f"{name}@example.com", role, name.title())
    return server, users


def _auth(server: LiveServer, user: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.token(user)}"}


async def _call(
    server: LiveServer, user: Any, method: str, path: str, **kw: Any
) -> httpx2.Response:
    async with httpx2.AsyncClient(base_url=server.http_url) as http:
        return await http.request(method, path, headers=_auth(server, user), **kw)


async def _audit(server: LiveServer, **filters: Any) -> list[Any]:
    await server.collab.audit.flush()
    page = await server.collab.relational.audit.query(AuditQuery(limit=100, **filters))
    return list(page.items)


async def test_non_admins_are_refused_and_the_attempt_is_audited(
    start_server: StartServer,
) -> None:
    server, users = await _server(start_server)
    for name in ("olga", "vic"):
        listed = await _call(server, users[name], "GET", "/api/users")
        assert listed.status_code == 403
        assert listed.headers["content-type"] == PROBLEM
        assert "users:manage" in listed.json()["detail"]
    created = await _call(
        server,
        users["olga"],
        "POST",
        "/api/users",
        json={"email": "x@e.com", "name": "X", "role": "admin"},
    )
    assert created.status_code == 403
    assert await server.collab.relational.users.get_by_email("x@e.com") is None
    denied = await _audit(server, action="denied", user_id=users["olga"].id)
    assert [entry.changes["needs"] for entry in denied] == ["users:manage"]


async def test_list_filter_page_create_get_update(start_server: StartServer) -> None:
    server, users = await _server(start_server)
    ada = users["ada"]
    for i in range(3):
        made = await _call(
            server,
            ada,
            "POST",
            "/api/users",
            json={
                "email": f"s{i}@example.com",
                "name": f"S{i}",
                "role": "viewer",
                "department": "sales",
            },
        )
        assert made.status_code == 201, made.text
        assert made.headers["location"] == f"/api/users/{made.json()['id']}"
    page = (
        await _call(server, ada, "GET", "/api/users", params={"department": "sales", "limit": 2})
    ).json()
    assert (page["total"], len(page["items"]), page["limit"], page["offset"]) == (3, 2, 2, 0)
    rest = (
        await _call(server, ada, "GET", "/api/users", params={"department": "sales", "offset": 2})
    ).json()
    assert {u["email"] for u in page["items"] + rest["items"]} == {
        "s0@example.com",
        "s1@example.com",
        "s2@example.com",
    }
    viewers = (await _call(server, ada, "GET", "/api/users", params={"role": "viewer"})).json()
    assert viewers["total"] == 4
    target = page["items"][0]["id"]
    changed = await _call(
        server,
        ada,
        "PATCH",
        f"/api/users/{target}",
        json={"name": "Renamed", "department": None, "role": "analyst"},
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["name"], body["department"], body["role"]) == ("Renamed", None, "analyst")
    fetched = (await _call(server, ada, "GET", f"/api/users/{target}")).json()
    assert fetched == body
    rows = await _audit(server, resource_type="user", resource_id=target)
    assert [row.action for row in rows] == ["update", "create"]
    assert rows[0].changes["role"] == {"from": "viewer", "to": "analyst"}
    assert rows[0].user_id == ada.id


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"email": "a@b.c", "name": "N", "role": "emperor"}, 422),
        ({"email": "not-an-email", "name": "N", "role": "viewer"}, 422),
        ({"email": "olga@example.com", "name": "N", "role": "viewer"}, 409),
        ({"email": "a@b.c", "name": "N", "role": "viewer", "extra": 1}, 422),
    ],
)
async def test_bad_creations_change_nothing(
    start_server: StartServer, body: dict[str, Any], status: int
) -> None:
    server, users = await _server(start_server)
    before = (await server.collab.relational.users.find(UserQuery())).total
    response = await _call(server, users["ada"], "POST", "/api/users", json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    assert (await server.collab.relational.users.find(UserQuery())).total == before


async def test_bad_updates_are_refused(start_server: StartServer) -> None:
    server, users = await _server(start_server)
    ada, vic = users["ada"], users["vic"]
    cases = [
        (f"/api/users/{vic.id}", {"status": "asleep"}, 422),
        (f"/api/users/{vic.id}", {"role": "emperor"}, 422),
        (f"/api/users/{vic.id}", {}, 422),
        (f"/api/users/{uuid.uuid4()}", {"name": "x"}, 404),
        ("/api/users/not-a-uuid", {"name": "x"}, 404),
        (f"/api/users/{ada.id}", {"status": "suspended"}, 409),  # not on yourself
    ]
    for path, body, status in cases:
        response = await _call(server, ada, "PATCH", path, json=body)
        assert response.status_code == status, (path, body, response.text)
    assert await server.collab.relational.users.get(vic.id) == vic


async def test_suspension_refuses_rest_and_closes_sockets_within_5_s(
    start_server: StartServer,
) -> None:
    server, users = await _server(start_server)
    ada, olga = users["ada"], users["olga"]
    created = await _call(
        server,
        olga,
        "POST",
        "/api/documents",
        json={"documentId": "doc", "title": "T", "sections": [{"id": "s", "title": "S"}]},
    )
    assert created.status_code == 201, created.text
    async with YClient(server.ws_url, "doc/s", token=server.token(olga)) as socket:
        await socket.synced.wait()
        suspended = await _call(
            server, ada, "PATCH", f"/api/users/{olga.id}", json={"status": "suspended"}
        )
        assert suspended.status_code == 200
        assert suspended.json()["suspendedAt"] is not None
        refused = await _call(server, olga, "GET", "/api/me")
        assert refused.status_code == 403
        assert await socket.wait_closed(timeout=5.0) == 4403
    back = await _call(server, ada, "PATCH", f"/api/users/{olga.id}", json={"status": "active"})
    assert back.json()["suspendedAt"] is None
    assert (await _call(server, olga, "GET", "/api/me")).status_code == 200
    rows = await _audit(server, action="status_change", resource_id=str(olga.id))
    assert [row.changes["status"]["to"] for row in rows] == ["active", "suspended"]


async def test_delete_removes_a_fresh_user_and_deactivates_one_with_history(
    start_server: StartServer,
) -> None:
    server, users = await _server(start_server)
    ada, vic = users["ada"], users["vic"]
    fresh = await server.add_user("fresh@example.com", "viewer")
    gone = await _call(server, ada, "DELETE", f"/api/users/{fresh.id}")
    assert gone.status_code == 200
    assert gone.json()["removed"] is True
    assert await server.collab.relational.users.get(fresh.id) is None
    assert (await _call(server, ada, "DELETE", f"/api/users/{fresh.id}")).status_code == 404
    # vic leaves a trail (a session opened: a login audit row), so vic is deactivated.
    assert (await _call(server, vic, "POST", "/api/session")).status_code == 201
    await server.collab.audit.flush()
    kept = await _call(server, ada, "DELETE", f"/api/users/{vic.id}")
    assert kept.json()["removed"] is False
    assert kept.json()["user"]["status"] == "deactivated"
    assert (await _call(server, vic, "GET", "/api/me")).status_code == 403
    rows = await _audit(server, action="delete", resource_type="user")
    assert {(row.resource_id, row.changes["removed"]) for row in rows} == {
        (str(fresh.id), True),
        (str(vic.id), False),
    }


async def test_last_login_is_written_on_session_creation_and_on_connect(
    start_server: StartServer,
) -> None:
    server, users = await _server(start_server)
    store = server.collab.relational.users
    olga, vic = users["olga"], users["vic"]
    assert (await store.get(olga.id)).last_login is None  # type: ignore[union-attr]
    assert (await _call(server, olga, "POST", "/api/session")).status_code == 201
    async with asyncio.timeout(5):
        await server.collab.signins.settle()  # the write runs in the background
    assert (await store.get(olga.id)).last_login is not None  # type: ignore[union-attr]
    made = await _call(
        server,
        olga,
        "POST",
        "/api/documents",
        json={"documentId": "d", "title": "T", "sections": [{"id": "s", "title": "S"}]},
    )
    assert made.status_code == 201, made.text
    await _call(
        server,
        users["ada"],
        "POST",
        "/api/permissions",
        json={
            "userId": str(vic.id),
            "resourceType": "business_document",
            "resourceId": "d",
            "permissionLevel": "view",
        },
    )
    async with YClient(server.ws_url, "d/s", token=server.token(vic)) as socket:
        await socket.synced.wait()
        async with asyncio.timeout(5):
            await server.collab.signins.settle()
        assert (await store.get(vic.id)).last_login is not None  # type: ignore[union-attr]
    listed = (await _call(server, users["ada"], "GET", f"/api/users/{vic.id}")).json()
    assert listed["lastLogin"] is not None


async def test_bad_list_parameters_are_400(start_server: StartServer) -> None:
    server, users = await _server(start_server)
    for params in ({"limit": 0}, {"limit": 201}, {"offset": -1}, {"sort": "email"}):
        response = await _call(server, users["ada"], "GET", "/api/users", params=params)
        assert response.status_code == 400, params
        assert response.headers["content-type"] == PROBLEM
