"""One error table for both surfaces: a refusal raised by domain code (the comment and
approval services, the document workflow) reaches a REST client as problem+json and a
socket client as a non-fatal ``error`` event with the same status, title and detail."""

from __future__ import annotations

import uuid
from contextlib import aclosing

from loadtests.client import YClient
from tests.conftest import StartServer
from tests.integration.test_comments import ask, setup


async def test_rest_and_socket_say_the_same_of_a_domain_refusal(
    start_server: StartServer,
) -> None:
    server = await start_server(insecure_dev=False)
    bob = await server.add_user("bob@example.com", "analyst", "Bob")
    _, http = await setup(server, edit=[bob])
    async with (
        aclosing(http),
        YClient(server.ws_url, "plan/s", token=server.token(bob), query="events=1") as bob_ws,
    ):
        unknown = str(uuid.uuid4())
        rest = await http.post(f"/api/comments/{unknown}/resolve")
        assert rest.status_code == 404
        assert rest.headers["content-type"] == "application/problem+json"
        body = rest.json()
        assert (body["status"], body["title"]) == (404, "comment not found")
        socket = await ask(bob_ws, "comment.resolve", id=unknown)
        assert socket.type == "error"
        assert socket.get("fatal") is False
        assert (socket.get("code"), socket.get("title"), socket.get("detail")) == (
            404,
            "comment not found",
            body["detail"],
        )

        made = await http.post("/api/documents/plan/comments", json={"content": "top"})
        assert made.status_code == 201
        reply = await http.post(
            "/api/documents/plan/comments", json={"content": "re", "parentId": made.json()["id"]}
        )
        assert reply.status_code == 201
        rest = await http.post(f"/api/comments/{reply.json()['id']}/resolve")
        assert (rest.status_code, rest.json()["title"]) == (409, "invalid transition")
        socket = await ask(bob_ws, "comment.resolve", id=reply.json()["id"])
        assert (socket.get("code"), socket.get("title")) == (409, "invalid transition")
        assert socket.get("detail") == rest.json()["detail"]

        missing = await http.get(f"/api/approvals/{uuid.uuid4()}")
        assert (missing.status_code, missing.json()["title"]) == (404, "approval request not found")

        published = await http.post("/api/documents/plan/status", json={"status": "published"})
        assert published.status_code == 409
        problem = published.json()
        assert problem["title"] == "invalid status transition"
        assert (problem["currentStatus"], problem["allowed"]) == ("draft", ["review", "archived"])
        assert bob_ws.closed.is_set() is False
