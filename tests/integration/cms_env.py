"""What the CMS REST tests share: a server without insecure-dev, one user per role, and an
HTTP client with helpers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx2

from persistence.relational import AccessQuery, AuditEntry, AuditQuery, DataAccessEntry, User
from tests.conftest import LiveServer

ROLES = {
    "owner": "analyst",
    "analyst": "analyst",
    "stranger": "analyst",
    "viewer": "viewer",
    "manager": "manager",
    "admin": "admin",
}
PROBLEM = "application/problem+json"
INJECTIONS = ["' OR '1'='1", '{"$ne": null}', ".*", "%", "_", "\\", "x') --", "$where"]


@dataclass
class Env:
    server: LiveServer
    http: httpx2.AsyncClient
    users: dict[str, User]
    tokens: dict[str, str]

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def uid(self, who: str) -> str:
        return str(self.users[who].id)

    async def post(self, who: str, path: str, body: Any = None, **params: Any) -> httpx2.Response:
        return await self.http.post(path, json=body, params=params, headers=self.auth(who))

    async def get(self, who: str, path: str, **params: Any) -> httpx2.Response:
        return await self.http.get(path, params=params, headers=self.auth(who))

    async def patch(self, who: str, path: str, body: Any) -> httpx2.Response:
        return await self.http.patch(path, json=body, headers=self.auth(who))

    async def delete(self, who: str, path: str, **params: Any) -> httpx2.Response:
        return await self.http.delete(path, params=params, headers=self.auth(who))

    async def created(self, who: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.post(who, path, body)
        assert response.status_code == 201, response.text
        made: dict[str, Any] = response.json()
        return made

    async def listed(self, who: str, path: str, id_field: str, **params: Any) -> list[str]:
        response = await self.get(who, path, **params)
        assert response.status_code == 200, response.text
        return [item[id_field] for item in response.json()["items"]]

    async def audit_rows(self, resource_id: str) -> list[AuditEntry]:
        collab = self.server.collab
        await collab.audit.flush()
        page = await collab.relational.audit.query(AuditQuery(resource_id=resource_id, limit=100))
        return page.items

    async def access_rows(self, key: str) -> list[DataAccessEntry]:
        collab = self.server.collab
        await collab.audit.flush()
        page = await collab.relational.audit.query_access(AccessQuery(document_id=key))
        return page.items


@contextlib.asynccontextmanager
async def cms_env(server: LiveServer) -> AsyncIterator[Env]:
    users = {who: await server.add_user(f"{who}@example.com", role) for who, role in ROLES.items()}
    tokens = {who: server.token(user) for who, user in users.items()}
    async with httpx2.AsyncClient(base_url=f"{server.http_url}/api", timeout=20) as http:
        yield Env(server, http, users, tokens)


def problem(response: httpx2.Response, status: int) -> dict[str, Any]:
    """Assert a problem+json response of ``status``; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


def field_of(response: httpx2.Response) -> str:
    """The field a 422 names."""
    body = problem(response, 422)
    errors = body.get("errors") or []
    assert errors, body
    name: str = errors[0]["field"]
    return name
