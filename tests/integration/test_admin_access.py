"""Roles, grants, feature flags and activity counters against a real server
(``docs/administration.md``): each effective within 5 s on REST and on open sockets,
audited, notified, and refused to non-admins."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2

from loadtests.client import YClient
from persistence.relational import AuditQuery
from protocol.events import decode_event
from protocol.ysync import AppEventMessage
from tests.conftest import LiveServer, StartServer

PROBLEM = "application/problem+json"


async def _server(start_server: StartServer) -> tuple[LiveServer, dict[str, Any]]:
    server = await start_server(insecure_dev=False)
    users = {}
    for name, role in (("ada", "admin"), ("olga", "analyst"), ("vic", "viewer")):
        users[name] = await server.add_user(f"{name}@example.com", role, name.title())
    return server, users


async def _call(
    server: LiveServer, user: Any, method: str, path: str, **kw: Any
) -> httpx2.Response:
    headers = {"Authorization": f"Bearer {server.token(user)}"}
    async with httpx2.AsyncClient(base_url=server.http_url) as http:
        return await http.request(method, path, headers=headers, **kw)


async def _document(server: LiveServer, owner: Any, document_id: str = "doc") -> None:
    made = await _call(
        server,
        owner,
        "POST",
        "/api/documents",
        json={"documentId": document_id, "title": "T", "sections": [{"id": "s", "title": "S"}]},
    )
    assert made.status_code == 201, made.text


def notifications(client: YClient, kind: str) -> list[dict[str, Any]]:
    """The notifications of one type a client was pushed live."""
    decoded = [decode_event(m.payload) for m in client.received if isinstance(m, AppEventMessage)]
    found = [dict(e.get("notification")) for e in decoded if e.type == "notification"]
    return [n for n in found if n["type"] == kind]


# -- roles -----------------------------------------------------------------------------------


async def test_a_custom_role_gives_rights_and_a_change_reaches_open_sockets(
    start_server: StartServer,
) -> None:
    server, users = await _server(start_server)
    ada, olga = users["ada"], users["olga"]
    await _document(server, olga)
    listed = (await _call(server, olga, "GET", "/api/roles")).json()["items"]
    assert {role["name"] for role in listed} >= {"admin", "manager", "analyst", "viewer"}
    made = await _call(
        server,
        ada,
        "POST",
        "/api/roles",
        json={"name": "reviewer", "description": "edits all", "permissions": ["documents:edit"]},
    )
    assert made.status_code == 201, made.text
    assert made.json()["builtIn"] is False
    rita = await server.add_user("rita@example.com", "reviewer")
    assert (await _call(server, rita, "GET", "/api/documents/doc")).status_code == 200
    async with YClient(server.ws_url, "doc/s", token=server.token(rita)) as socket:
        await socket.synced.wait()
        assert socket.denied == []
        down = await _call(
            server, ada, "PATCH", "/api/roles/reviewer", json={"permissions": ["documents:view"]}
        )
        assert down.status_code == 200, down.text
        await socket.wait_for(lambda: len(socket.denied) > 0, timeout=5.0)  # read-only now
        await _call(server, ada, "PATCH", "/api/roles/reviewer", json={"permissions": []})
        assert await socket.wait_closed(timeout=5.0) == 4403
    assert (await _call(server, rita, "GET", "/api/documents/doc")).status_code == 404
    await server.collab.audit.flush()
    rows = await server.collab.relational.audit.query(AuditQuery(resource_type="role"))
    assert [row.action for row in rows.items] == ["update", "update", "create"]


async def test_role_refusals(start_server: StartServer) -> None:
    server, users = await _server(start_server)
    ada, olga = users["ada"], users["olga"]
    body = {"name": "x", "permissions": ["documents:edit"]}
    assert (await _call(server, olga, "POST", "/api/roles", json=body)).status_code == 403
    cases = [
        ("POST", "/api/roles", {"name": "x", "permissions": ["documents:edt"]}, 422),
        ("POST", "/api/roles", {"name": "Bad Name"}, 422),
        ("POST", "/api/roles", {"name": "viewer"}, 409),
        ("PATCH", "/api/roles/admin", {"permissions": []}, 409),
        ("DELETE", "/api/roles/viewer", None, 409),
        ("PATCH", "/api/roles/nope", {"permissions": []}, 404),
    ]
    for method, path, payload, status in cases:
        response = await _call(server, ada, method, path, json=payload)
        assert response.status_code == status, (method, path, response.text)
        assert response.headers["content-type"] == PROBLEM
    assert await server.collab.relational.roles.get_by_name("x") is None
    await _call(server, ada, "POST", "/api/roles", json={"name": "temp"})
    await server.add_user("t@example.com", "temp")
    assert (await _call(server, ada, "DELETE", "/api/roles/temp")).status_code == 409  # in use
    await _call(server, ada, "POST", "/api/roles", json={"name": "unused"})
    assert (await _call(server, ada, "DELETE", "/api/roles/unused")).status_code == 204
    assert (await _call(server, ada, "GET", "/api/roles/unused")).status_code == 404


# -- grants ----------------------------------------------------------------------------------


async def test_a_grant_opens_a_document_and_its_revocation_closes_the_socket(
    start_server: StartServer,
) -> None:
    server, users = await _server(start_server)
    ada, olga, vic = users["ada"], users["olga"], users["vic"]
    await _document(server, olga)
    await _document(server, olga, "home")
    home = {"userId": str(vic.id), "resourceType": "business_document", "resourceId": "home"}
    assert (
        await _call(
            server, ada, "POST", "/api/permissions", json={**home, "permissionLevel": "view"}
        )
    ).status_code == 201
    told = await YClient(
        server.ws_url, "home/s", token=server.token(vic), query="events=1"
    ).connect()
    assert (await _call(server, vic, "GET", "/api/documents/doc")).status_code == 404
    granted = await _call(
        server,
        ada,
        "POST",
        "/api/permissions",
        json={
            "userId": str(vic.id),
            "resourceType": "business_document",
            "resourceId": "doc",
            "permissionLevel": "edit",
            "expiresAt": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
        },
    )
    assert granted.status_code == 201, granted.text
    grant = granted.json()
    assert (grant["permissionLevel"], grant["grantedBy"]) == ("edit", str(ada.id))
    assert (await _call(server, vic, "GET", "/api/documents/doc")).status_code == 200
    by_user = (
        await _call(server, ada, "GET", "/api/permissions", params={"userId": str(vic.id)})
    ).json()
    by_resource = (
        await _call(
            server,
            ada,
            "GET",
            "/api/permissions",
            params={"resourceType": "business_document", "resourceId": "doc"},
        )
    ).json()
    assert by_resource["items"] == [grant]
    assert [g["resourceId"] for g in by_user["items"]] == ["doc", "home"]
    async with YClient(server.ws_url, "doc/s", token=server.token(vic)) as socket:
        await socket.synced.wait()
        assert socket.denied == []  # edit
        downgraded = await _call(
            server,
            ada,
            "POST",
            "/api/permissions",
            json={
                "userId": str(vic.id),
                "resourceType": "business_document",
                "resourceId": "doc",
                "permissionLevel": "view",
            },
        )
        assert downgraded.json()["id"] == grant["id"]  # the same row, replaced
        await socket.wait_for(lambda: len(socket.denied) > 0, timeout=5.0)
        revoked = await _call(server, ada, "DELETE", f"/api/permissions/{grant['id']}")
        assert revoked.status_code == 204
        assert await socket.wait_closed(timeout=5.0) == 4403
    assert (await _call(server, vic, "GET", "/api/documents/doc")).status_code == 404
    assert (
        await _call(server, ada, "DELETE", f"/api/permissions/{grant['id']}")
    ).status_code == 404
    await server.collab.audit.flush()
    rows = await server.collab.relational.audit.query(
        AuditQuery(action="permission_change", resource_id="doc", user_id=ada.id)
    )
    assert [next(iter(row.changes)) for row in rows.items] == ["revoked", "granted", "granted"]
    await told.wait_for(lambda: bool(notifications(told, "permission_revoked")))
    # (the grant on "home" may have been pushed before the socket was open)
    granted_notes = [
        n for n in notifications(told, "permission_granted") if n["resourceId"] == "doc"
    ]
    assert len(granted_notes) == 2  # edit, then view
    assert "edit access to business_document doc" in granted_notes[0]["message"]
    assert notifications(told, "permission_revoked")[0]["resourceId"] == "doc"
    await told.close()
    stored = await server.collab.relational.notifications.list_for_user(vic.id)
    assert {n.type for n in stored.items} == {"permission_granted", "permission_revoked"}


async def test_grants_on_other_collections_open_them_to_search(start_server: StartServer) -> None:
    server, users = await _server(start_server)
    ada, vic = users["ada"], users["vic"]
    await server.collab.content.insert(
        "projects", {"projectId": "p1", "name": "Falcon launch", "owner": "someone-else"}
    )

    async def found() -> int:
        answer = await _call(server, vic, "GET", "/api/search", params={"q": "falcon"})
        total: int = answer.json()["total"]
        return total

    assert await found() == 0
    granted = await _call(
        server,
        ada,
        "POST",
        "/api/permissions",
        json={
            "userId": str(vic.id),
            "resourceType": "project",
            "resourceId": "p1",
            "permissionLevel": "view",
        },
    )
    assert granted.status_code == 201
    assert await found() == 1
    await _call(server, ada, "DELETE", f"/api/permissions/{granted.json()['id']}")
    assert await found() == 0


async def test_grant_refusals_change_nothing(start_server: StartServer) -> None:
    server, users = await _server(start_server)
    ada, olga, vic = users["ada"], users["olga"], users["vic"]
    good = {
        "userId": str(vic.id),
        "resourceType": "project",
        "resourceId": "p1",
        "permissionLevel": "view",
    }
    assert (await _call(server, olga, "POST", "/api/permissions", json=good)).status_code == 403
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    cases: list[tuple[dict[str, Any], int]] = [
        ({"resourceType": "spaceship"}, 422),
        ({"permissionLevel": "owner"}, 422),
        ({"userId": "nobody"}, 422),
        ({"userId": "00000000-0000-0000-0000-000000000000"}, 422),
        ({"expiresAt": past}, 422),
        ({"expiresAt": "2030-01-01T00:00:00"}, 422),
        ({"surprise": 1}, 422),
    ]
    for change, status in cases:
        response = await _call(server, ada, "POST", "/api/permissions", json={**good, **change})
        assert response.status_code == status, (change, response.text)
    assert await server.collab.relational.permissions.for_user(vic.id) == []
    for params in ({}, {"resourceType": "project"}):
        listed = await _call(server, ada, "GET", "/api/permissions", params=params)
        assert listed.status_code == 422


# -- feature flags ---------------------------------------------------------------------------


async def test_the_search_flag_with_a_rollout(start_server: StartServer) -> None:
    server, users = await _server(start_server)
    ada, olga, vic = users["ada"], users["olga"], users["vic"]
    state = (await _call(server, vic, "GET", "/api/features/search")).json()
    assert state == {
        "name": "search",
        "enabled": True,
        "rollout": None,
        "default": True,
        "set": False,
        "forYou": True,
    }
    assert (await _call(server, vic, "GET", "/api/search", params={"q": "x"})).status_code == 200
    off = await _call(server, ada, "PUT", "/api/features/search", json={"enabled": False})
    assert off.json()["forYou"] is False
    refused = await _call(server, vic, "GET", "/api/search", params={"q": "x"})
    assert refused.status_code == 404
    assert refused.json()["title"] == "search is off"
    listing = await _call(server, vic, "GET", "/api/documents", params={"q": "x"})
    assert listing.status_code == 404
    await _call(server, ada, "PUT", "/api/features/search", json={"enabled": True, "rollout": 0})
    assert (await _call(server, vic, "GET", "/api/search", params={"q": "x"})).status_code == 404
    await _call(server, ada, "PUT", "/api/features/search", json={"enabled": True, "rollout": 100})
    assert (await _call(server, vic, "GET", "/api/search", params={"q": "x"})).status_code == 200
    assert (await _call(server, ada, "DELETE", "/api/features/search")).status_code == 204
    assert (await _call(server, ada, "DELETE", "/api/features/search")).status_code == 404
    assert (await _call(server, ada, "GET", "/api/features/search")).json()["set"] is False
    refusals = [
        (olga, "PUT", "/api/features/search", {"enabled": False}, 403),
        (ada, "PUT", "/api/features/search", {"enabled": "yes"}, 422),
        (ada, "PUT", "/api/features/search", {"enabled": True, "rollout": 101}, 422),
        (ada, "PUT", "/api/features/Bad:Name", {"enabled": True}, 422),
    ]
    for who, method, path, payload, status in refusals:
        response = await _call(server, who, method, path, json=payload)
        assert response.status_code == status, (path, payload, response.text)
    assert await server.collab.coordinator.flags.rule("search") is None


# -- activity counters -----------------------------------------------------------------------


async def test_stats_count_edits_comments_views_and_signins(start_server: StartServer) -> None:
    server, users = await _server(start_server)
    ada, olga = users["ada"], users["olga"]
    assert (await _call(server, olga, "GET", "/api/stats")).status_code == 403
    await _document(server, olga)
    assert (await _call(server, olga, "POST", "/api/session")).status_code == 201
    assert (await _call(server, olga, "GET", "/api/documents/doc")).status_code == 200
    posted = await _call(
        server, olga, "POST", "/api/documents/doc/comments", json={"content": "hello"}
    )
    assert posted.status_code == 201, posted.text
    edited = asyncio.Event()
    server.collab.hooks.on_edit.subscribe(lambda _: edited.set())
    async with YClient(server.ws_url, "doc/s", token=server.token(olga)) as socket:
        await socket.synced.wait()
        await socket.insert(0, "hi")
        await socket.flush()
        async with asyncio.timeout(5):
            await edited.wait()
        body = (await _call(server, ada, "GET", "/api/stats", params={"last": 2})).json()
    now = {kind: values[-1]["count"] for kind, values in body["types"].items()}
    assert now["edits"] >= 1
    assert now["comments"] == 1
    assert now["views"] == 2  # the REST read and the socket's join
    assert now["signins"] == 2  # the session opened over REST; the socket's (new) token
    assert [len(values) for values in body["types"].values()] == [2, 2, 2, 2]
    day = (
        await _call(server, ada, "GET", "/api/stats", params={"period": "day", "type": "comments"})
    ).json()
    assert list(day["types"]) == ["comments"]
    assert len(day["types"]["comments"]) == 7
    assert day["types"]["comments"][-1]["count"] == 1
    for params in ({"period": "week"}, {"last": 0}, {"type": "likes"}, {"bogus": 1}):
        response = await _call(server, ada, "GET", "/api/stats", params=params)
        assert response.status_code in (400, 422), params


async def test_a_custom_role_with_audit_read_reads_the_trail(start_server: StartServer) -> None:
    server, users = await _server(start_server)
    made = await _call(
        server,
        users["ada"],
        "POST",
        "/api/roles",
        json={"name": "auditor", "permissions": ["audit:read", "stats:read"]},
    )
    assert made.status_code == 201, made.text
    auditor = await server.add_user("aud@example.com", "auditor")
    assert (await _call(server, auditor, "GET", "/api/audit")).status_code == 200
    assert (await _call(server, auditor, "GET", "/api/stats")).status_code == 200
    assert (await _call(server, auditor, "GET", "/api/users")).status_code == 403
    assert (await _call(server, users["vic"], "GET", "/api/audit")).status_code == 403
