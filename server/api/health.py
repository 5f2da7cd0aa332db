"""Probes and metrics, at the root of the server (not under ``/api``):

* ``GET /livez``: 200 while the process answers (Kubernetes ``livenessProbe``).
* ``GET /readyz``: 200 when the node should get traffic, else 503 with the reasons:
  starting, draining (after SIGTERM), or a configured dependency down (``readinessProbe``).
* ``GET /healthz``: ``{"status": ...}`` for anyone; an admin's token (or insecure-dev)
  gets the details (uptime, CPU, memory, rooms, snapshots, cluster, audit).
* ``GET /metrics``: Prometheus text format; with ``COLLAB_METRICS_TOKEN`` set, only for
  ``Authorization: Bearer <that token>``.
"""

from __future__ import annotations

import hmac
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from persistence.errors import StorageError
from server.api.common import client_ip, collab_of, lower_headers, problem_response
from server.errors import AuthError, CollabError
from server.ops.health import Readiness
from server.ops.metrics import CONTENT_TYPE, Metrics

NO_STORE = {"Cache-Control": "no-store"}


async def livez(request: Request) -> JSONResponse:
    return JSONResponse({"status": "live"}, headers=NO_STORE)


async def readyz(request: Request) -> JSONResponse:
    readiness: Readiness = request.app.state.readiness
    report = await readiness.report()
    return JSONResponse(report.body(), status_code=200 if report.ready else 503, headers=NO_STORE)


async def _is_admin(request: Request) -> bool:
    """Whether the caller shows an admin's credentials; a missing or bad one is no error
    here (the caller simply gets the public answer)."""
    collab = collab_of(request)
    try:
        principal = await collab.authn.authenticate(
            lower_headers(request.headers), request.url.query, ip=client_ip(request)
        )
    except (AuthError, CollabError, StorageError):
        return False
    return principal.role == "admin"


async def healthz(request: Request) -> JSONResponse:
    readiness: Readiness = request.app.state.readiness
    report = await readiness.report()
    status = "ok" if report.ready else "unavailable"
    body: dict[str, Any] = {"status": status}
    if await _is_admin(request):
        body.update(_details(request))
        body["readiness"] = report.body()
    return JSONResponse(body, status_code=200 if report.ready else 503, headers=NO_STORE)


def _details(request: Request) -> dict[str, Any]:
    collab = request.app.state.collab
    with collab.process.oneshot():
        cpu = collab.process.cpu_times()
        rss = collab.process.memory_info().rss
    return {
        "node": collab.node_id,
        "uptime_seconds": round(time.monotonic() - collab.started, 3),
        "cpu_seconds": round(cpu.user + cpu.system, 3),
        "rss_bytes": rss,
        **collab.registry.stats(),
        **collab.snapshots.stats(),
        "snapshots": collab.snapshots.health(),
        **(collab.cluster.stats() if collab.cluster is not None else {}),
        "audit": collab.audit.stats(),
    }


async def metrics(request: Request) -> Response:
    collab = collab_of(request)
    token = collab.settings.metrics_token
    if token is not None:
        given = request.headers.get("authorization", "")
        expected = f"Bearer {token.get_secret_value()}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return problem_response(
                401,
                "unauthenticated",
                "metrics need Authorization: Bearer <COLLAB_METRICS_TOKEN>",
                headers={"WWW-Authenticate": "Bearer"},
            )
    found: Metrics = request.app.state.metrics
    return Response(found.render(), media_type=CONTENT_TYPE, headers=NO_STORE)


def routes() -> list[BaseRoute]:
    return [
        Route("/livez", livez, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
