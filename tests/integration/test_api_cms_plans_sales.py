"""Strategic plans (approvals, approval chain, roll-up) and sales opportunities (stages,
history, pipeline) over REST."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from loadtests.client import YClient
from protocol.events import decode_event
from protocol.ysync import AppEventMessage
from tests.conftest import StartServer
from tests.integration.cms_env import INJECTIONS, Env, cms_env, field_of, problem


@pytest.fixture
async def env(start_server: StartServer) -> AsyncIterator[Env]:
    server = await start_server(insecure_dev=False)
    async with cms_env(server) as made:
        yield made


PLAN: dict[str, Any] = {
    "planId": "growth-2026",
    "title": "2026 Growth Strategy",
    "planType": "annual",
    "fiscalYear": 2026,
    "keyObjectives": [
        {
            "id": "k1",
            "title": "Grow revenue",
            "keyResults": [
                {"id": "r1", "description": "ARR", "target": 200, "actual": 50, "unit": "$"},
                {
                    "id": "r2",
                    "description": "Logos",
                    "target": 10,
                    "actual": 20,
                    "status": "completed",
                },
            ],
        },
        {"id": "k2", "title": "Hire", "keyResults": [{"id": "r3", "target": 4, "actual": 1}]},
    ],
    "budgetAllocation": {"total": 100, "byFunction": {"sales": 60, "marketing": 40}},
    "risks": [{"id": "x1", "description": "Churn", "probability": "low", "impact": "high"}],
}


async def _workflow(env: Env, *roles: str) -> str:
    response = await env.post(
        "admin",
        "/approval-workflows",
        {
            "name": "Plan sign-off",
            "resourceType": "strategic_plan",
            "steps": [{"requiredRole": role} for role in roles],
        },
    )
    assert response.status_code == 201, response.text
    workflow_id: str = response.json()["id"]
    return workflow_id


async def test_plan_roll_up_and_enums(env: Env) -> None:
    made = await env.created("owner", "/strategic-plans", PLAN)
    progress = made["progress"]
    assert [o["progress"] for o in progress["objectives"]] == [0.625, 0.25]
    assert progress["progress"] == 0.4375
    edited = await env.patch(
        "owner",
        "/strategic-plans/growth-2026",
        {
            "keyObjectives": {
                "upsert": [{"id": "k2", "keyResults": {"upsert": [{"id": "r3", "actual": 4}]}}]
            }
        },
    )
    assert edited.status_code == 200, edited.text
    assert edited.json()["progress"]["objectives"][1]["progress"] == 1.0
    for body, field in [
        ({"planType": "decadal"}, "planType"),
        ({"quarter": 5}, "quarter"),
        ({"fiscalYear": "2026"}, "fiscalYear"),
        ({"status": "done"}, "status"),
        ({"risks": [{"impact": "severe"}]}, "risks.0.impact"),
        ({"risks": [{"probability": "certain"}]}, "risks.0.probability"),
        (
            {"keyObjectives": [{"keyResults": [{"status": "late"}]}]},
            "keyObjectives.0.keyResults.0.status",
        ),
        ({"initiatives": ["no-project"]}, "initiatives.0"),
        ({"approvalDate": "2026-01-01T00:00:00Z"}, "approvalDate"),
        ({"budgetAllocation": {"byFunction": {"legal": 1}}}, "budgetAllocation.byFunction.legal"),
    ]:
        assert field_of(await env.patch("owner", "/strategic-plans/growth-2026", body)) == field
    # The workflow owns under_review / approved: a PATCH cannot jump there.
    problem(await env.patch("owner", "/strategic-plans/growth-2026", {"status": "approved"}), 409)
    await env.created("owner", "/projects", {"projectId": "proj", "name": "P"})
    linked = await env.patch("owner", "/strategic-plans/growth-2026", {"initiatives": ["proj"]})
    assert linked.json()["initiatives"] == ["proj"]
    assert await env.listed(
        "owner", "/strategic-plans", "planId", fiscalYear="2026", planType="annual"
    ) == ["growth-2026"]
    assert await env.listed("owner", "/strategic-plans", "planId", fiscalYear="2025") == []


async def test_plan_approval_flow_and_chain(env: Env) -> None:
    await env.created("owner", "/strategic-plans", {**PLAN, "approvers": [env.uid("analyst")]})
    workflow = await _workflow(env, "manager", "analyst")
    problem(
        await env.post(
            "stranger", "/strategic-plans/growth-2026/approvals", {"workflowId": workflow}
        ),
        404,
    )
    opened = await env.post(
        "owner", "/strategic-plans/growth-2026/approvals", {"workflowId": workflow}
    )
    assert opened.status_code == 201, opened.text
    request_id = opened.json()["request"]["id"]
    assert opened.json()["plan"]["status"] == "under_review"
    assert opened.json()["request"]["requestor"] == {"id": env.uid("owner"), "name": "owner"}
    problem(await env.patch("owner", "/strategic-plans/growth-2026", {"title": "Frozen?"}), 409)
    problem(
        await env.post("owner", "/strategic-plans/growth-2026/approvals", {"workflowId": workflow}),
        409,
    )

    decision = f"/strategic-plans/growth-2026/approvals/{request_id}/steps/1/decision"
    problem(await env.post("stranger", decision, {"decision": "approve"}), 404)
    problem(await env.post("owner", decision, {"decision": "approve"}), 403)  # the requestor
    first = await env.post("manager", decision, {"decision": "approve", "comment": "ok"})
    assert first.status_code == 200, first.text
    assert first.json()["plan"]["status"] == "under_review"
    second = await env.post(
        "analyst",
        f"/strategic-plans/growth-2026/approvals/{request_id}/steps/2/decision",
        {"decision": "approve"},
    )
    assert second.status_code == 200, second.text
    plan = second.json()["plan"]
    assert plan["status"] == "approved"
    assert plan["approvalDate"].endswith("Z")

    chain = (await env.get("owner", "/strategic-plans/growth-2026/approval-chain")).json()
    assert [(i["stepNumber"], i["requiredRole"], i["stepStatus"]) for i in chain["items"]] == [
        (1, "manager", "approved"),
        (2, "analyst", "approved"),
    ]
    assert chain["items"][0]["reviewer"]["email"] == "manager@example.com"
    moved = await env.patch("owner", "/strategic-plans/growth-2026", {"status": "executing"})
    assert moved.json()["status"] == "executing"
    # DELETE archives; hard delete is for admins.
    assert (await env.delete("owner", "/strategic-plans/growth-2026")).status_code == 204
    assert (await env.get("owner", "/strategic-plans/growth-2026")).json()["status"] == "archived"
    actions = sorted(row.action for row in await env.audit_rows("growth-2026"))
    assert actions.count("approval") == 3
    assert "delete" in actions


async def test_approvers_and_requestors_are_notified(env: Env) -> None:
    await env.created("analyst", "/documents", {"documentId": "room", "title": "Room"})
    await env.created("owner", "/documents", {"documentId": "room2", "title": "Room 2"})
    await env.created("owner", "/strategic-plans", {**PLAN, "approvers": [env.uid("analyst")]})
    workflow = await _workflow(env, "manager")
    server = env.server
    async with (
        YClient(server.ws_url, "room", token=env.tokens["analyst"], query="events=1") as approver,
        YClient(server.ws_url, "room2", token=env.tokens["owner"], query="events=1") as requestor,
    ):
        opened = await env.post(
            "owner", "/strategic-plans/growth-2026/approvals", {"workflowId": workflow}
        )
        request_id = opened.json()["request"]["id"]
        await approver.wait_for(lambda: bool(_notes(approver, "approval_requested")))
        assert _notes(approver, "approval_requested")[0]["resourceId"] == request_id
        await env.post(
            "manager",
            f"/strategic-plans/growth-2026/approvals/{request_id}/steps/1/decision",
            {"decision": "approve"},
        )
        await requestor.wait_for(lambda: bool(_notes(requestor, "approval_decided")))
        assert "approved" in _notes(requestor, "approval_decided")[0]["message"]


def _notes(client: YClient, kind: str) -> list[dict[str, Any]]:
    decoded = [decode_event(m.payload) for m in client.received if isinstance(m, AppEventMessage)]
    found = [dict(e.get("notification")) for e in decoded if e.type == "notification"]
    return [n for n in found if n["type"] == kind]


async def test_plan_rejection_returns_to_draft(env: Env) -> None:
    await env.created("owner", "/strategic-plans", PLAN)
    workflow = await _workflow(env, "manager")
    opened = await env.post(
        "owner", "/strategic-plans/growth-2026/approvals", {"workflowId": workflow}
    )
    request_id = opened.json()["request"]["id"]
    await env.server.collab.relational.permissions.grant(
        env.users["viewer"].id, "strategic_plan", "growth-2026", "view"
    )
    step = f"/strategic-plans/growth-2026/approvals/{request_id}/steps/1/decision"
    problem(await env.post("viewer", step, {"decision": "approve"}), 403)  # not the role
    problem(await env.post("manager", step, {"decision": "maybe"}), 422)
    problem(await env.post("manager", step.replace("/1/", "/2/"), {"decision": "approve"}), 404)
    rejected = await env.post(
        "manager",
        f"/strategic-plans/growth-2026/approvals/{request_id}/steps/1/decision",
        {"decision": "reject"},
    )
    assert rejected.json()["plan"]["status"] == "draft"
    assert "approvalDate" not in rejected.json()["plan"]
    listed = (await env.get("owner", "/strategic-plans/growth-2026/approvals")).json()
    assert [r["status"] for r in listed["items"]] == ["rejected"]
    document_flow = await env.post(
        "admin", "/approval-workflows", {"name": "Docs", "steps": [{"requiredRole": "manager"}]}
    )
    other = document_flow.json()["id"]
    assert (
        field_of(
            await env.post("owner", "/strategic-plans/growth-2026/approvals", {"workflowId": other})
        )
        == "workflowId"
    )


OPPORTUNITY: dict[str, Any] = {
    "opportunityId": "acme",
    "account": "Acme University",
    "title": "Campus licence",
    "value": 50000,
    "currency": "EUR",
    "stage": "qualified_lead",
    "probability": 40,
    "expectedCloseDate": "2026-05-01T00:00:00Z",
    "source": "referral",
    "priority": "high",
    "contacts": [{"name": "Dr. Who", "email": "who@example.edu"}],
    "activities": [{"type": "call", "date": "2026-02-01T10:00:00Z", "notes": "intro"}],
}


async def test_opportunity_stages_history_and_close_date(env: Env) -> None:
    made = await env.created(
        "owner", "/sales-opportunities", {**OPPORTUNITY, "accountManager": env.uid("analyst")}
    )
    assert [h["to"] for h in made["stageHistory"]] == ["qualified_lead"]
    assert made["contacts"][0]["id"]
    assert "actualCloseDate" not in made
    for body, field in [
        ({"stage": "closed"}, "stage"),
        ({"source": "cold"}, "source"),
        ({"priority": "urgent"}, "priority"),
        ({"probability": 120}, "probability"),
        ({"currency": "usd"}, "currency"),
        ({"activities": [{"participant": "nobody"}]}, "activities.0.participant"),
        ({"actualCloseDate": "2026-01-01T00:00:00Z"}, "actualCloseDate"),
        ({"stageHistory": []}, "stageHistory"),
    ]:
        assert field_of(await env.patch("owner", "/sales-opportunities/acme", body)) == field
    # The account manager may move it along.
    won = await env.patch("analyst", "/sales-opportunities/acme", {"stage": "won"})
    assert won.status_code == 200, won.text
    body = won.json()
    assert body["actualCloseDate"].endswith("Z")
    last = body["stageHistory"][-1]
    assert (last["from"], last["to"], last["by"]) == ("qualified_lead", "won", env.uid("analyst"))
    reopened = (
        await env.patch("owner", "/sales-opportunities/acme", {"stage": "negotiation"})
    ).json()
    assert reopened.get("actualCloseDate") is None
    assert len(reopened["stageHistory"]) == 3
    assert await env.listed(
        "owner",
        "/sales-opportunities",
        "opportunityId",
        expectedCloseDateFrom="2026-04-01T00:00:00Z",
        expectedCloseDateTo="2026-05-31T00:00:00Z",
    ) == ["acme"]
    assert (
        await env.listed(
            "owner",
            "/sales-opportunities",
            "opportunityId",
            expectedCloseDateTo="2026-04-01T00:00:00Z",
        )
        == []
    )
    for text in INJECTIONS:
        assert await env.listed("owner", "/sales-opportunities", "opportunityId", q=text) == []


async def test_pipeline_per_stage_and_currency_within_rights(env: Env) -> None:
    rows = [
        ("a", "owner", "proposal", "EUR", 1000, 50),
        ("b", "owner", "proposal", "EUR", 3000, 10),
        ("c", "owner", "proposal", "USD", 500, 100),
        ("d", "owner", "won", "EUR", 700, 100),
        ("e", "stranger", "proposal", "EUR", 99999, 90),
    ]
    for oid, who, stage, currency, value, probability in rows:
        await env.created(
            who,
            "/sales-opportunities",
            {
                "opportunityId": oid,
                "title": oid,
                "stage": stage,
                "currency": currency,
                "value": value,
                "probability": probability,
            },
        )
    mine = (await env.get("owner", "/sales-opportunities/pipeline")).json()
    assert mine["stages"] == [
        {
            "stage": "proposal",
            "currency": "EUR",
            "count": 2,
            "totalValue": 4000,
            "weightedValue": 800,
        },
        {
            "stage": "proposal",
            "currency": "USD",
            "count": 1,
            "totalValue": 500,
            "weightedValue": 500,
        },
        {"stage": "won", "currency": "EUR", "count": 1, "totalValue": 700, "weightedValue": 700},
    ]
    assert mine["currencies"] == [
        {"currency": "EUR", "openCount": 2, "openValue": 4000, "weightedValue": 800},
        {"currency": "USD", "openCount": 1, "openValue": 500, "weightedValue": 500},
    ]
    everything = (await env.get("manager", "/sales-opportunities/pipeline")).json()
    assert everything["stages"][0]["count"] == 3
    filtered = (await env.get("manager", "/sales-opportunities/pipeline", currency="USD")).json()
    assert [s["currency"] for s in filtered["stages"]] == ["USD"]
    assert (
        field_of(await env.get("manager", "/sales-opportunities/pipeline", stage="closed"))
        == "stage"
    )
    assert (await env.get("viewer", "/sales-opportunities/pipeline")).json()["stages"] == []
