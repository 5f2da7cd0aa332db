"""Approval workflows (issue 6): a two-step workflow through a rejection and a resubmission,
the document's status following (review freezes the content), notifications live and over
REST, every decision audited, the approval chain; and the refusals."""

from __future__ import annotations

import uuid
from typing import Any

import httpx2

from loadtests.client import YClient
from persistence.relational import AuditQuery, User
from protocol.events import AppEvent, decode_event
from protocol.ysync import AppEventMessage
from tests.conftest import LiveServer, StartServer


def events(client: YClient, kind: str) -> list[AppEvent]:
    decoded = [decode_event(m.payload) for m in client.received if isinstance(m, AppEventMessage)]
    return [e for e in decoded if e.type == kind]


def notifications(client: YClient, kind: str | None = None) -> list[dict[str, Any]]:
    found = [dict(e.get("notification")) for e in events(client, "notification")]
    return [n for n in found if kind is None or n["type"] == kind]


def approval_actions(client: YClient) -> list[tuple[str, str]]:
    """``(action, documentStatus)`` of the approval events a client received."""
    return [(e.get("action"), e.get("documentStatus")) for e in events(client, "approval")]


def read_only(client: YClient) -> bool | None:
    """Whether the server last said the connection is read-only."""
    states = [e.get("readOnly") for e in events(client, "access")]
    if states:
        return bool(states[-1])
    joined = events(client, "joined")
    return bool(joined[0].get("readOnly")) if joined else None


def rest(server: LiveServer, user: User) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(
        base_url=server.http_url, headers={"Authorization": f"Bearer {server.token(user)}"}
    )


async def _status(http: httpx2.AsyncClient) -> str:
    status: str = (await http.get("/api/documents/plan")).json()["status"]
    return status


async def test_two_steps_a_rejection_and_a_resubmission(start_server: StartServer) -> None:
    server = await start_server(insecure_dev=False)
    admin = await server.add_user("root@example.com", "admin", "Root")
    olga = await server.add_user("olga@example.com", "analyst", "Olga")  # author, requestor
    mia = await server.add_user("mia@example.com", "manager", "Mia")  # step 1: manager
    quinn = await server.add_user("quinn@example.com", "analyst", "Quinn")  # step 2: analyst
    ed = await server.add_user("ed@example.com", "viewer", "Ed")  # an editor
    async with (
        rest(server, admin) as admin_http,
        rest(server, olga) as http,
        rest(server, mia) as mia_http,
        rest(server, quinn) as quinn_http,
        rest(server, ed) as ed_http,
    ):
        workflow = await admin_http.post(
            "/api/approval-workflows",
            json={
                "name": "Board sign-off",
                "steps": [
                    {"requiredRole": "manager", "name": "Management"},
                    {"requiredRole": "analyst", "name": "Finance check"},
                ],
            },
        )
        assert workflow.status_code == 201, workflow.text
        workflow_id = workflow.json()["id"]
        listed = (await http.get("/api/approval-workflows?resourceType=business_document")).json()
        assert [w["id"] for w in listed["items"]] == [workflow_id]
        assert listed["items"][0]["steps"][1] == {
            "stepNumber": 2,
            "requiredRole": "analyst",
            "name": "Finance check",
        }
        created = await http.post(
            "/api/documents",
            json={
                "documentId": "plan",
                "title": "Plan",
                "sections": [{"id": "s", "title": "S", "content": "Revenue grows 10%."}],
                "permissions": {"edit": [str(ed.id)], "view": [str(quinn.id)]},
            },
        )
        assert created.status_code == 201, created.text
        async with (
            YClient(server.ws_url, "plan/s", token=server.token(ed), query="events=1") as editor,
            YClient(server.ws_url, "plan", token=server.token(olga), query="events=1") as author,
            YClient(server.ws_url, "plan", token=server.token(mia), query="events=1") as manager,
            YClient(server.ws_url, "plan", token=server.token(quinn), query="events=1") as analyst,
        ):
            assert read_only(editor) is False
            await editor.insert(len(str(editor.text)), " Costs fall.")

            # -- round 1: submitted, step 1 approved, step 2 rejected ---------------------
            opened = await http.post(
                "/api/documents/plan/approvals", json={"workflowId": workflow_id}
            )
            assert opened.status_code == 201, opened.text
            first = opened.json()["request"]
            assert opened.json()["documentStatus"] == "review"
            assert first["status"] == "pending"
            assert first["currentStep"] == 1
            assert [s["status"] for s in first["steps"]] == ["pending", "waiting"]
            revision = await http.get(f"/api/documents/plan/revisions/{first['revisionId']}")
            assert revision.status_code == 200
            assert "Costs fall." in revision.json()["content"]
            assert await _status(http) == "review"
            # Everyone in the document hears it; the content is frozen (sockets read-only).
            await editor.wait_for(lambda: ("requested", "review") in approval_actions(editor))
            await editor.wait_for(lambda: read_only(editor) is True, timeout=6)
            denied = len(editor.denied)
            await editor.insert(0, "FROZEN? ")
            await editor.wait_for(lambda: len(editor.denied) > denied)
            # The managers are asked; the analyst of step 2 is not yet.
            await manager.wait_for(lambda: bool(notifications(manager, "approval_requested")))
            assert notifications(manager)[-1]["resourceId"] == first["id"]
            # Refusals: the wrong role, a step that is not current, the requestor's own.
            decision = f"/api/approvals/{first['id']}/steps/1/decision"
            wrong_role = await quinn_http.post(decision, json={"decision": "approve"})
            assert wrong_role.status_code == 403
            not_current = await quinn_http.post(
                f"/api/approvals/{first['id']}/steps/2/decision", json={"decision": "approve"}
            )
            assert not_current.status_code == 409
            second_request = await http.post(
                "/api/documents/plan/approvals", json={"workflowId": workflow_id}
            )
            assert second_request.status_code == 409
            approved_1 = await mia_http.post(
                decision, json={"decision": "approve", "comment": "Fine by me."}
            )
            assert approved_1.status_code == 200, approved_1.text
            body = approved_1.json()
            assert body["request"]["currentStep"] == 2
            assert body["request"]["steps"][0]["reviewer"] == {"id": str(mia.id), "name": "Mia"}
            assert body["request"]["steps"][0]["comment"] == "Fine by me."
            assert body["documentStatus"] == "review"
            await author.wait_for(lambda: bool(notifications(author, "approval_decided")))
            assert (
                "Mia approved step 1 of 2"
                in notifications(author, "approval_decided")[0]["message"]
            )
            await analyst.wait_for(lambda: bool(notifications(analyst, "approval_requested")))
            rejected = await quinn_http.post(
                f"/api/approvals/{first['id']}/steps/2/decision",
                json={"decision": "reject", "comment": "The 10% needs a source."},
            )
            assert rejected.status_code == 200, rejected.text
            assert rejected.json()["request"]["status"] == "rejected"
            assert rejected.json()["documentStatus"] == "draft"
            assert await _status(http) == "draft"
            # The requestor and the earlier reviewer hear the outcome; editing resumes.
            await author.wait_for(
                lambda: any("rejected" in n["title"] for n in notifications(author))
            )
            await manager.wait_for(
                lambda: any("rejected" in n["title"] for n in notifications(manager))
            )
            await editor.wait_for(lambda: ("rejected", "draft") in approval_actions(editor))
            await editor.wait_for(lambda: read_only(editor) is False, timeout=6)
            # (The frozen socket's refused edit stays in its own copy: a new one writes.)
            async with YClient(
                server.ws_url, "plan/s", token=server.token(ed), query="events=1"
            ) as writer:
                assert read_only(writer) is False
                await writer.insert(len(str(writer.text)), " Source: Q2 report.")
                await writer.wait_for(lambda: bool(events(writer, "ack")))
            after = await ed_http.get("/api/documents/plan?fresh=1")
            assert "Source: Q2 report." in after.json()["content"]["markdown"]
            assert "FROZEN?" not in after.json()["content"]["markdown"]

            # -- round 2: resubmitted, both steps approved -----------------------------------
            again = await http.post(f"/api/approvals/{first['id']}/resubmit")
            assert again.status_code == 201, again.text
            second = again.json()["request"]
            assert second["previousRequestId"] == first["id"]
            assert second["revisionId"] != first["revisionId"]
            assert again.json()["documentStatus"] == "review"
            assert await _status(http) == "review"
            resubmitted_twice = await http.post(f"/api/approvals/{first['id']}/resubmit")
            assert resubmitted_twice.status_code == 409
            await manager.wait_for(lambda: len(notifications(manager, "approval_requested")) == 2)
            ok_1 = await mia_http.post(
                f"/api/approvals/{second['id']}/steps/1/decision", json={"decision": "approve"}
            )
            assert ok_1.status_code == 200, ok_1.text
            ok_2 = await quinn_http.post(
                f"/api/approvals/{second['id']}/steps/2/decision",
                json={"decision": "approve", "comment": "Sourced now."},
            )
            assert ok_2.status_code == 200, ok_2.text
            assert ok_2.json()["request"]["status"] == "approved"
            assert ok_2.json()["documentStatus"] == "approved"
            assert await _status(http) == "approved"
            await editor.wait_for(lambda: ("approved", "approved") in approval_actions(editor))
            assert [a for a, _ in approval_actions(editor)] == [
                "requested",
                "step_approved",
                "rejected",
                "resubmitted",
                "step_approved",
                "approved",
            ]
            await author.wait_for(
                lambda: any("approved: plan" in n["title"] for n in notifications(author))
            )
            # An approved document takes no new request.
            closed = await http.post(
                "/api/documents/plan/approvals", json={"workflowId": workflow_id}
            )
            assert closed.status_code == 409

        # -- what the record says ---------------------------------------------------------
        fetched = (await quinn_http.get(f"/api/approvals/{second['id']}")).json()
        assert [s["status"] for s in fetched["steps"]] == ["approved", "approved"]
        chain = (await quinn_http.get("/api/documents/plan/approval-chain")).json()["items"]
        assert [(c["requestId"], c["stepNumber"], c["stepStatus"]) for c in chain] == [
            (first["id"], 1, "approved"),
            (first["id"], 2, "rejected"),
            (second["id"], 1, "approved"),
            (second["id"], 2, "approved"),
        ]
        assert [c["reviewer"]["name"] for c in chain] == ["Mia", "Quinn", "Mia", "Quinn"]
        assert chain[1]["reviewer"]["email"] == "quinn@example.com"
        requests = (await http.get("/api/documents/plan/approvals")).json()
        assert [r["id"] for r in requests["items"]] == [second["id"], first["id"]]
        mine = (await http.get("/api/notifications")).json()
        kinds = [n["type"] for n in mine["items"]]
        assert kinds.count("approval_decided") == 4
        await server.collab.audit.flush()
        audited = await server.collab.relational.audit.query(
            AuditQuery(action="approval", limit=50)
        )
        ops = [row.changes["op"] for row in reversed(audited.items)]
        assert ops == ["request", "approve", "reject", "resubmit", "approve", "approve"]
        statuses = await server.collab.relational.audit.query(
            AuditQuery(action="status_change", resource_id="plan", limit=50)
        )
        moves = [(row.changes["from"], row.changes["to"]) for row in reversed(statuses.items)]
        assert moves == [
            ("draft", "review"),
            ("review", "draft"),
            ("draft", "review"),
            ("review", "approved"),
        ]


async def test_approval_refusals(start_server: StartServer) -> None:
    server = await start_server(insecure_dev=False)
    admin = await server.add_user("root@example.com", "admin", "Root")
    olga = await server.add_user("olga@example.com", "manager", "Olga")
    viewer = await server.add_user("vic@example.com", "viewer", "Vic")
    stranger = await server.add_user("sam@example.com", "analyst", "Sam")
    async with (
        rest(server, admin) as admin_http,
        rest(server, olga) as http,
        rest(server, viewer) as viewer_http,
        rest(server, stranger) as stranger_http,
    ):
        steps = {"name": "One step", "steps": [{"requiredRole": "manager"}]}
        assert (await http.post("/api/approval-workflows", json=steps)).status_code == 403
        assert (
            await admin_http.post("/api/approval-workflows", json={"name": "x", "steps": []})
        ).status_code == 422
        assert (
            await admin_http.post(
                "/api/approval-workflows",
                json={"name": "x", "steps": [{"requiredRole": "bad role!"}]},
            )
        ).status_code == 422
        plans = await admin_http.post(
            "/api/approval-workflows", json={**steps, "resourceType": "strategic_plan"}
        )
        assert plans.status_code == 201
        workflow = await admin_http.post("/api/approval-workflows", json=steps)
        assert workflow.status_code == 201
        workflow_id = workflow.json()["id"]
        assert (await http.get("/api/approval-workflows?resourceType=other")).status_code == 400
        created = await http.post(
            "/api/documents",
            json={"documentId": "plan", "title": "Plan", "permissions": {"view": [str(viewer.id)]}},
        )
        assert created.status_code == 201
        path = "/api/documents/plan/approvals"
        # The edit right is needed; the workflow must exist and be for documents.
        assert (await viewer_http.post(path, json={"workflowId": workflow_id})).status_code == 403
        assert (await stranger_http.post(path, json={"workflowId": workflow_id})).status_code == 404
        unknown = await http.post(path, json={"workflowId": str(uuid.uuid4())})
        assert unknown.status_code == 422
        wrong_kind = await http.post(path, json={"workflowId": plans.json()["id"]})
        assert wrong_kind.status_code == 422
        bad_revision = await http.post(path, json={"workflowId": workflow_id, "revisionId": "nope"})
        assert bad_revision.status_code == 422
        # Nothing of those moved the document.
        assert (await http.get("/api/documents/plan")).json()["status"] == "draft"
        # A named revision is the one under review.
        saved = (await http.post("/api/documents/plan/revisions", json={})).json()
        opened = await http.post(
            path, json={"workflowId": workflow_id, "revisionId": saved["revisionId"]}
        )
        assert opened.status_code == 201, opened.text
        request = opened.json()["request"]
        assert request["revisionId"] == saved["revisionId"]
        decision = f"/api/approvals/{request['id']}/steps/1/decision"
        # The requestor (a manager) may not decide on their own request; an admin may.
        own = await http.post(decision, json={"decision": "approve"})
        assert own.status_code == 403
        assert "own request" in own.json()["detail"]
        # Unknown requests and steps, a stranger, a bad decision.
        assert (await http.get(f"/api/approvals/{uuid.uuid4()}")).status_code == 404
        assert (await stranger_http.get(f"/api/approvals/{request['id']}")).status_code == 404
        assert (
            await admin_http.post(
                f"/api/approvals/{request['id']}/steps/9/decision", json={"decision": "approve"}
            )
        ).status_code == 404
        assert (await admin_http.post(decision, json={"decision": "maybe"})).status_code == 422
        # A pending request cannot be resubmitted; a rejected one can, by an editor only.
        resubmit = f"/api/approvals/{request['id']}/resubmit"
        assert (await http.post(resubmit)).status_code == 409
        rejected = await admin_http.post(decision, json={"decision": "reject"})
        assert rejected.status_code == 200, rejected.text
        assert rejected.json()["documentStatus"] == "draft"
        assert (await viewer_http.post(resubmit)).status_code == 403
        # Deciding a decided request is a conflict.
        assert (await admin_http.post(decision, json={"decision": "approve"})).status_code == 409


async def test_an_open_request_cannot_be_bypassed_through_the_status(
    start_server: StartServer,
) -> None:
    server = await start_server(insecure_dev=False)
    admin = await server.add_user("root@example.com", "admin", "Root")
    async with rest(server, admin) as http:
        workflow = await http.post(
            "/api/approval-workflows",
            json={"name": "One step", "steps": [{"requiredRole": "manager", "name": "M"}]},
        )
        assert workflow.status_code == 201, workflow.text
        created = await http.post(
            "/api/documents",
            json={"documentId": "plan", "title": "Plan", "sections": []},
        )
        assert created.status_code == 201, created.text
        opened = await http.post(
            "/api/documents/plan/approvals", json={"workflowId": workflow.json()["id"]}
        )
        assert opened.status_code == 201, opened.text
        assert await _status(http) == "review"
        bypass = await http.post("/api/documents/plan/status", json={"status": "approved"})
        assert bypass.status_code == 409
        assert bypass.json()["approvalRequest"] == opened.json()["request"]["id"]
        assert await _status(http) == "review"
