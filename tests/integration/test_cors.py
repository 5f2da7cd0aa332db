"""CORS on the REST API: preflights answered for the allowed origins, credentials only for
origins listed by name, never ``*`` with credentials, nothing for other origins."""

from __future__ import annotations

import httpx2

from tests.conftest import LiveServer, StartServer

APP = "http://localhost:5173"
OTHER = "https://evil.example"


def preflight(origin: str, method: str = "POST") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type",
    }


async def signed_in(start_server: StartServer, origins: list[str]) -> tuple[LiveServer, str]:
    server = await start_server(insecure_dev=False, allowed_origins=origins)
    user = await server.add_user("ada@example.com", "admin", "Ada")
    return server, server.token(user)


async def test_a_listed_origin_gets_preflights_and_credentials(start_server: StartServer) -> None:
    server, token = await signed_in(start_server, [APP])
    async with httpx2.AsyncClient(base_url=server.http_url) as http:
        answer = await http.options("/api/documents", headers=preflight(APP))
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == APP
        assert answer.headers["access-control-allow-credentials"] == "true"
        assert "POST" in answer.headers["access-control-allow-methods"]
        allowed = answer.headers["access-control-allow-headers"].lower()
        assert "authorization" in allowed
        assert "content-type" in allowed
        got = await http.get("/api/me", headers={"Origin": APP, "Authorization": f"Bearer {token}"})
        assert got.status_code == 200
        assert got.headers["access-control-allow-origin"] == APP
        assert got.headers["access-control-allow-credentials"] == "true"
        assert "Location" in got.headers["access-control-expose-headers"]


async def test_an_unlisted_origin_gets_no_cors_and_changes_nothing(
    start_server: StartServer,
) -> None:
    server, token = await signed_in(start_server, [APP])
    async with httpx2.AsyncClient(base_url=server.http_url) as http:
        answer = await http.options("/api/documents", headers=preflight(OTHER))
        assert answer.status_code == 400
        assert "access-control-allow-origin" not in answer.headers
        created = await http.post(
            "/api/documents",
            json={"id": "cors-evil", "title": "x"},
            headers={"Origin": OTHER, "Authorization": f"Bearer {token}"},
        )
        assert created.status_code == 403
        assert "access-control-allow-origin" not in created.headers
        missing = await http.get(
            "/api/documents/cors-evil", headers={"Authorization": f"Bearer {token}"}
        )
        assert missing.status_code == 404


async def test_star_never_comes_with_credentials(start_server: StartServer) -> None:
    server, token = await signed_in(start_server, ["*", APP])
    async with httpx2.AsyncClient(base_url=server.http_url) as http:
        answer = await http.options("/api/me", headers=preflight(OTHER, "GET"))
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in answer.headers
        got = await http.get(
            "/api/me",
            headers={"Origin": OTHER, "Authorization": f"Bearer {token}", "Cookie": "a=b"},
        )
        assert got.status_code == 200
        assert got.headers.get("access-control-allow-credentials") is None
        # The origin listed by name keeps its credentials.
        named = await http.options("/api/me", headers=preflight(APP, "GET"))
        assert named.headers["access-control-allow-origin"] == APP
        assert named.headers["access-control-allow-credentials"] == "true"


async def test_no_cors_without_allowed_origins_and_outside_the_api(
    start_server: StartServer,
) -> None:
    server, _ = await signed_in(start_server, [])
    async with httpx2.AsyncClient(base_url=server.http_url) as http:
        answer = await http.options("/api/documents", headers=preflight(APP))
        assert answer.status_code == 400
        assert "access-control-allow-origin" not in answer.headers
        health = await http.get("/healthz", headers={"Origin": APP})
        assert "access-control-allow-origin" not in health.headers
