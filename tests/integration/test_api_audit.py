"""The audit trail through the server: joins and edits are recorded (edits per user and
section in batches), and admins and managers query it over REST."""

from __future__ import annotations

import httpx2

from loadtests.client import YClient
from persistence.relational import AccessQuery, AuditQuery
from tests.conftest import StartServer

INJECTIONS = ["' OR 1=1 --", "x'; DROP TABLE audit_logs; --", '{"$ne": null}', "%", "_"]


async def test_joins_and_edits_are_audited_and_queryable(start_server: StartServer) -> None:
    server = await start_server(insecure_dev=False)
    admin = await server.add_user("root@example.com", "admin")
    analyst = await server.add_user("ana@example.com", "analyst")
    viewer = await server.add_user("vic@example.com", "viewer")
    async with YClient(server.ws_url, "audited/s1", token=server.token(analyst)) as client:
        for index in range(30):
            await client.insert(index, "a")
        await client.delete(0, 5)
        await client.wait_for(lambda: str(client.text) == "a" * 25)
        async with YClient(server.ws_url, "audited/s1", token=server.token(analyst)) as check:
            assert str(check.text) == "a" * 25
    collab = server.collab
    assert collab.edits is not None
    collab.edits.emit()
    await collab.audit.flush()
    edits = await collab.relational.audit.query(AuditQuery(action="edit", resource_id="audited"))
    assert len(edits.items) == 1  # 31 updates, one row
    changes = edits.items[0].changes
    assert changes["section"] == "s1"
    assert changes["updates"] == 31
    assert changes["inserted"] == 30
    assert changes["deleted"] == 5
    created = await collab.relational.audit.query(AuditQuery(action="create"))
    assert [e.resource_id for e in created.items] == ["audited"]
    joins = await collab.relational.audit.query_access(AccessQuery(document_id="audited"))
    assert len(joins.items) == 2
    assert {e.access_type for e in joins.items} == {"join"}

    async with httpx2.AsyncClient(base_url=server.http_url) as http:
        as_admin = {"Authorization": f"Bearer {server.token(admin)}"}
        page = (await http.get("/api/audit?action=edit", headers=as_admin)).json()
        assert [item["resourceId"] for item in page["items"]] == ["audited"]
        assert page["items"][0]["userId"] == str(analyst.id)
        access = (await http.get("/api/audit/access?document=audited", headers=as_admin)).json()
        assert len(access["items"]) == 2
        paged = (await http.get("/api/audit?limit=1", headers=as_admin)).json()
        assert len(paged["items"]) == 1
        assert paged["nextCursor"]
        # Injection-looking filters match literally: nothing, and nothing changes.
        for text in INJECTIONS:
            for name in ("action", "resource", "resourceType"):
                response = await http.get("/api/audit", params={name: text}, headers=as_admin)
                assert response.status_code == 200, (name, text)
                assert response.json()["items"] == []
        bad = await http.get("/api/audit?user=1%20OR%201=1", headers=as_admin)
        assert bad.status_code == 400
        assert bad.headers["content-type"] == "application/problem+json"
        assert (await http.get("/api/audit?since=yesterday", headers=as_admin)).status_code == 400
        assert (await http.get("/api/audit?limit=100000", headers=as_admin)).status_code == 400
        assert (await http.get("/api/audit?cursor=garbage", headers=as_admin)).status_code == 400
        assert (await http.get("/api/audit?frobnicate=1", headers=as_admin)).status_code == 400
        as_viewer = {"Authorization": f"Bearer {server.token(viewer)}"}
        assert (await http.get("/api/audit", headers=as_viewer)).status_code == 403
        assert (await http.get("/api/audit")).status_code == 401
    edits_after = await collab.relational.audit.query(AuditQuery(action="edit"))
    assert len(edits_after.items) == 1
