"""Operations: metrics that move with traffic, request ids, health and readiness."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Iterator

import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import InvalidStatus

from loadtests.client import YClient
from persistence.relational import AccessQuery, AuditQuery, migrate
from server.identity.authentication import DEV_EMAIL
from server.ops import logs
from tests.conftest import LiveServer, StartServer
from tests.integration.test_locks import eventually
from tests.services.postgres import PostgresDatabases
from tests.services.redis import StartRedis

WAIT = 20.0


async def _status(http: httpx2.AsyncClient, status: int) -> bool:
    return (await http.get("/readyz")).status_code == status


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _samples(text: str) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "node"))
            found[(sample.name, labels)] = sample.value
    return found


async def _scrape(server: LiveServer, **headers: str) -> Samples:
    async with httpx2.AsyncClient(base_url=server.http_url, timeout=WAIT) as http:
        response = await http.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return _samples(response.text)


def _moved(before: Samples, after: Samples, name: str, *labels: tuple[str, str]) -> float:
    """How much a sample grew between two scrapes (an absent sample counts as 0)."""
    key = (name, tuple(sorted(labels)))
    return after.get(key, 0.0) - before.get(key, 0.0)


async def test_metrics_move_with_traffic(start_server: StartServer) -> None:
    server = await start_server()
    before = await _scrape(server)
    assert before[("collab_connections", ())] == 0
    async with (
        YClient(server.ws_url, "metered/s1") as writer,
        YClient(server.ws_url, "metered/s1") as reader,
    ):
        for n in range(5):
            await writer.insert(len(writer.text), f"edit {n} ")
        await reader.wait_for(lambda: str(reader.text).count("edit") == 5, WAIT)
        during = await _scrape(server)
        assert during[("collab_connections", ())] == 2
        assert during[("collab_rooms", ())] >= 1
    assert (
        during[("collab_updates_applied_total", ())]
        >= before[("collab_updates_applied_total", ())] + 5
    )
    assert during[("collab_frames_out_total", ())] > before[("collab_frames_out_total", ())]
    # Two sync steps 1, the writer's five updates (and the sync steps 2 the clients answer).
    assert _moved(before, during, "collab_frames_in_total") >= 7
    assert _moved(before, during, "collab_bytes_in_total") >= len("edit 0 ") * 5
    assert _moved(before, during, "collab_bytes_out_total") >= len("edit 0 ") * 5
    # Each of the writer's updates reached the reader: one fan-out observed per update, each
    # after its journal commit (the embedded SQLite journal).
    assert _moved(before, during, "collab_fanout_seconds_count") >= 5
    assert _moved(before, during, "collab_fanout_seconds_bucket", ("le", "+Inf")) >= 5
    assert _moved(before, during, "collab_fanout_seconds_sum") > 0
    sqlite = ("journal", "sqlite")
    assert _moved(before, during, "collab_journal_commit_seconds_count", sqlite) >= 1
    assert _moved(before, during, "collab_journal_commit_seconds_sum", sqlite) > 0
    assert ("collab_audit_queue_depth", ()) in during
    assert ("collab_snapshot_writes_total", ()) in during
    assert during[("collab_section_locks_held", ())] == 0
    assert during[("collab_process_cpu_seconds_total", ())] > 0


async def test_refusals_and_closes_are_counted(start_server: StartServer) -> None:
    server = await start_server(insecure_dev=False)
    before = await _scrape(server)
    missing = ("collab_auth_failures_total", (("reason", "missing_token"),))
    malformed = ("collab_auth_failures_total", (("reason", "malformed_token"),))
    refusals = ("collab_refusals_total", (("status", "401"), ("title", "unauthenticated")))
    async with httpx2.AsyncClient(base_url=server.http_url, timeout=WAIT) as http:
        assert (await http.get("/api/me")).status_code == 401
        bad = await http.get("/api/me", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401
    with pytest.raises(InvalidStatus):
        await YClient(server.ws_url, "closed/s", token="nope").connect()
    after = await _scrape(server)
    assert after[missing] == before.get(missing, 0) + 1
    assert after[malformed] == before.get(malformed, 0) + 2  # REST and the upgrade
    assert after[refusals] == before.get(refusals, 0) + 3


async def test_metrics_can_require_a_bearer_token(start_server: StartServer) -> None:
    secret = "m" * 40
    server = await start_server(metrics_token=secret)
    async with httpx2.AsyncClient(base_url=server.http_url, timeout=WAIT) as http:
        refused = await http.get("/metrics")
        wrong = await http.get("/metrics", headers={"Authorization": "Bearer " + "x" * 40})
    assert refused.status_code == wrong.status_code == 401
    assert "collab_" not in refused.text
    samples = await _scrape(server, Authorization=f"Bearer {secret}")
    assert ("collab_connections", ()) in samples


async def test_request_ids_are_echoed_and_reach_the_audit_row(start_server: StartServer) -> None:
    server = await start_server()
    async with httpx2.AsyncClient(base_url=server.http_url, timeout=WAIT) as http:
        given = await http.post(
            "/api/documents",
            json={"documentId": "traced", "title": "Traced"},
            headers={"X-Request-ID": "req-42.abc"},
        )
        assert given.status_code == 201, given.text
        assert given.headers["x-request-id"] == "req-42.abc"
        made = await http.get("/livez")
        assert len(made.headers["x-request-id"]) == 32  # generated
        # A header that is not a sane token is replaced, never echoed.
        hostile = await http.get("/livez", headers={"X-Request-ID": "a b\tc"})
        assert hostile.headers["x-request-id"] != "a b\tc"
    await server.collab.audit.flush()
    rows = await server.collab.relational.audit.query(
        AuditQuery(resource_id="traced", action="create", limit=5)
    )
    [row] = rows.items
    assert row.changes["requestId"] == "req-42.abc"


async def test_healthz_hides_internals_from_anonymous_callers(start_server: StartServer) -> None:
    server = await start_server(insecure_dev=False)
    admin = await server.add_user("root@example.com", "admin")
    analyst = await server.add_user("ann@example.com", "analyst")
    async with httpx2.AsyncClient(base_url=server.http_url, timeout=WAIT) as http:
        anonymous = await http.get("/healthz")
        as_analyst = await http.get(
            "/healthz", headers={"Authorization": f"Bearer {server.token(analyst)}"}
        )
        as_admin = await http.get(
            "/healthz", headers={"Authorization": f"Bearer {server.token(admin)}"}
        )
        bad_token = await http.get("/healthz", headers={"Authorization": "Bearer junk"})
    assert anonymous.status_code == 200
    assert anonymous.json() == {"status": "ok"}
    assert as_analyst.json() == {"status": "ok"}
    assert bad_token.json() == {"status": "ok"}
    details = as_admin.json()
    assert details["status"] == "ok"
    assert {"rooms", "connections", "audit", "cpu_seconds", "readiness"} <= set(details)


async def test_livez_and_readyz_answer_and_readyz_drains(start_server: StartServer) -> None:
    server = await start_server()
    async with httpx2.AsyncClient(base_url=server.http_url, timeout=WAIT) as http:
        assert (await http.get("/livez")).json() == {"status": "live"}
        ready = await http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["status"] == "ready"
        server.app.state.readiness.drain("test says so")
        draining = await http.get("/readyz")
        assert (await http.get("/livez")).status_code == 200
    assert draining.status_code == 503
    body = draining.json()
    assert body["phase"] == "draining"
    assert body["checks"]["draining"] == {"ok": False, "reason": "test says so"}


async def test_readyz_says_when_redis_is_down_and_recovers(
    start_server: StartServer, redis_servers: StartRedis
) -> None:
    redis = redis_servers(aof=True)
    server = await start_server(redis_url=redis.url)
    async with httpx2.AsyncClient(base_url=server.http_url, timeout=WAIT) as http:
        ready = await http.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"redis": {"ok": True}}
        redis.kill()
        # The checks are cached for a second: polled, not waited on.
        await eventually(lambda: _status(http, 503), WAIT, "readyz says 503")
        down = await http.get("/readyz")
        check = down.json()["checks"]["redis"]
        assert check["ok"] is False
        assert check["reason"]
        samples = await _scrape(server)
        assert samples[("collab_dependency_up", (("dependency", "redis"),))] == 0
        assert samples[("collab_dependency_check_failures_total", (("dependency", "redis"),))] >= 1
        redis.restart()
        await eventually(lambda: _status(http, 200), WAIT, "readyz says 200 again")


@pytest.mark.parametrize("header", ["x" * 129, "", "é", "a;b<script>", "two words"])
async def test_bad_request_ids_are_replaced(start_server: StartServer, header: str) -> None:
    server = await start_server()
    async with httpx2.AsyncClient(base_url=server.http_url, timeout=WAIT) as http:
        response = await http.get("/livez", headers=[(b"X-Request-ID", header.encode())])
    assert response.status_code == 200
    assert response.headers["x-request-id"] != header
    assert len(response.headers["x-request-id"]) == 32


@pytest.mark.parametrize("trusted", [True, False])
async def test_a_trusted_proxy_names_the_client_and_its_scheme(
    start_server: StartServer, trusted: bool
) -> None:
    server = await start_server(
        insecure_dev=False, trusted_proxies=["127.0.0.1/32"] if trusted else []
    )
    ann = await server.add_user("ann@example.com", "analyst")
    headers = {
        "Authorization": f"Bearer {server.token(ann)}",
        "X-Forwarded-For": "198.51.100.7, 127.0.0.1",
        "X-Forwarded-Proto": "https",
    }
    async with httpx2.AsyncClient(base_url=server.http_url, timeout=WAIT) as http:
        response = await http.post("/api/session", headers=headers)
    assert response.status_code == 201, response.text
    cookie = response.headers["set-cookie"].lower()
    assert ("secure" in cookie) is trusted
    await server.collab.audit.flush()
    rows = await server.collab.relational.audit.query(
        AuditQuery(user_id=ann.id, action="login", limit=5)
    )
    [row] = rows.items
    assert row.ip_address == ("198.51.100.7" if trusted else "127.0.0.1")


async def test_comment_operations_are_counted(start_server: StartServer) -> None:
    server = await start_server()
    key = ("collab_comment_operations_total", (("op", "create"),))
    async with httpx2.AsyncClient(base_url=server.http_url, timeout=WAIT) as http:
        made = await http.post("/api/documents", json={"documentId": "noted", "title": "N"})
        assert made.status_code == 201, made.text
        for text in ("first", "second"):
            response = await http.post("/api/documents/noted/comments", json={"content": text})
            assert response.status_code == 201, response.text
    samples = await _scrape(server)
    assert samples[key] == 2
    assert ("collab_notifications_total", (("outcome", "delivered"),)) in samples


async def test_client_closes_are_counted_apart_from_ours(start_server: StartServer) -> None:
    server = await start_server()
    before = await _scrape(server)
    async with YClient(server.ws_url, "closing/s1") as client:
        await client.insert(0, "bye")
    normal = ("code", "1000")

    async def counted() -> bool:
        after = await _scrape(server)
        return _moved(before, after, "collab_client_closes_total", normal) == 1

    await eventually(counted, WAIT, "the client's close is counted")
    after = await _scrape(server)
    # Not one of the server's closes: those say what the server decided.
    assert _moved(before, after, "collab_closes_total", normal) == 0
    assert after[("collab_connections", ())] == 0


async def test_redis_calls_and_journal_appends_are_timed(
    start_server: StartServer, redis_servers: StartRedis
) -> None:
    redis = redis_servers(aof=True)
    server = await start_server(redis_url=redis.url)
    before = await _scrape(server)
    async with (
        YClient(server.ws_url, "served/s1") as writer,
        YClient(server.ws_url, "served/s1") as reader,
    ):
        for n in range(3):
            await writer.insert(len(writer.text), f"edit {n} ")
        await reader.wait_for(lambda: str(reader.text).count("edit") == 3, WAIT)
    after = await _scrape(server)
    redis_label = ("dependency", "redis")
    assert _moved(before, after, "collab_dependency_call_seconds_count", redis_label) >= 3
    assert _moved(before, after, "collab_dependency_call_seconds_sum", redis_label) > 0
    assert _moved(before, after, "collab_dependency_call_errors_total", redis_label) == 0
    # Service mode journals to the Redis stream: one timed append per (merged) write.
    redis_journal = ("journal", "redis")
    assert _moved(before, after, "collab_journal_commit_seconds_count", redis_journal) >= 1
    assert _moved(before, after, "collab_fanout_seconds_count") >= 3
    redis.kill()
    # A call to the dead server is an error of the dependency.
    async with httpx2.AsyncClient(base_url=server.http_url, timeout=WAIT) as http:
        await eventually(lambda: _status(http, 503), WAIT, "readyz says 503")
    down = await _scrape(server)
    assert _moved(after, down, "collab_dependency_call_errors_total", redis_label) >= 1


@pytest.fixture
async def postgres_url(postgres_databases: PostgresDatabases) -> AsyncIterator[str]:
    """A fresh migrated PostgreSQL database (request it before ``start_server``)."""
    url = await postgres_databases.create()
    try:
        await migrate(url)
        yield url
    finally:
        await postgres_databases.drop(url)


async def test_postgres_calls_are_timed(postgres_url: str, start_server: StartServer) -> None:
    server = await start_server(postgres_url=postgres_url)
    assert server.collab.relational.backend == "postgresql"
    before = await _scrape(server)
    async with httpx2.AsyncClient(base_url=server.http_url, timeout=WAIT) as http:
        made = await http.post("/api/documents", json={"documentId": "pg", "title": "PG"})
        assert made.status_code == 201, made.text
    after = await _scrape(server)
    postgres = ("dependency", "postgres")
    assert _moved(before, after, "collab_dependency_call_seconds_count", postgres) >= 1
    assert _moved(before, after, "collab_dependency_call_seconds_sum", postgres) > 0
    assert _moved(before, after, "collab_dependency_call_errors_total", postgres) == 0


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The JSON lines the app logs while the test runs (the root logger's handler and level
    restored after)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    logs.configure("info", "json", stream)
    yield stream
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


async def test_lines_logged_while_handling_a_frame_carry_the_context(
    start_server: StartServer, json_log: io.StringIO
) -> None:
    server = await start_server(node_name="node-7")
    client = YClient(server.ws_url, "logged/s1", headers={"X-Request-ID": "upgrade-7"})
    async with client:
        await client.send_raw(b"\\xff\\xff\\xff")  # no y-websocket message: closed with 1002
        assert await client.wait_closed(WAIT) == 1002
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    [closing] = [
        line
        for line in lines
        if line["logger"] == "server.realtime.connection" and "closing 1002" in line["message"]
    ]
    assert closing["level"] == "WARNING"
    assert closing["request_id"] == "upgrade-7"
    assert closing["room"] == "logged/s1"
    assert closing["document"] == "logged"
    assert closing["node"] == "node-7"
    assert closing["connection_id"] == closing["message"].split()[1]  # "conn <id> room ..."
    dev = await server.collab.relational.users.get_by_email(DEV_EMAIL)
    assert dev is not None
    assert closing["user_id"] == str(dev.id)


async def test_request_ids_reach_data_access_and_edit_tally_rows(
    start_server: StartServer,
) -> None:
    server = await start_server()
    async with httpx2.AsyncClient(base_url=server.http_url, timeout=WAIT) as http:
        made = await http.post("/api/documents", json={"documentId": "seen", "title": "Seen"})
        assert made.status_code == 201, made.text
        read = await http.get("/api/documents/seen", headers={"X-Request-ID": "read-1"})
        assert read.status_code == 200, read.text
    collab = server.collab
    tally = collab.edits
    assert tally is not None
    headers = {"X-Request-ID": "join-1"}
    async with YClient(server.ws_url, "seen/s1", headers=headers) as client:
        await client.insert(0, "typed")

        async def tallied() -> bool:
            return tally.stats()["tally_pending"] > 0

        await eventually(tallied, WAIT, "the edit is tallied")
    await collab.audit.flush()
    accesses = await collab.relational.audit.query_access(AccessQuery(document_id="seen"))
    by_type = {entry.access_type: entry.request_id for entry in accesses.items}
    assert by_type == {"read": "read-1", "join": "join-1"}
    tally.emit()
    await collab.audit.flush()
    edits = await collab.relational.audit.query(AuditQuery(resource_id="seen", action="edit"))
    [edit] = edits.items
    assert edit.changes["requestId"] == "join-1"
