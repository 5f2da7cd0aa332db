"""server/ops: JSON log lines, request ids, trusted proxies, readiness."""

from __future__ import annotations

import asyncio
import io
import ipaddress
import json
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from persistence.errors import StorageUnavailable
from server.ops import context, logs
from server.ops.health import Phase, Readiness
from server.ops.proxies import client_address


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_json_lines_parse_and_carry_the_context(restore_logging: None) -> None:
    stream = io.StringIO()
    logs.configure("info", "json", stream)
    context.set_node("node-a")
    token = context.request_id.set("req-1")
    room = context.room.set("plan/intro")
    try:
        logging.getLogger("collab.test").info("hello %s", "world")
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("collab.test").exception("it failed")
    finally:
        context.request_id.reset(token)
        context.room.reset(room)
    logging.getLogger("collab.test").warning('no context, "quotes" and\nnewline')
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    first, second, third = (json.loads(line) for line in lines)
    assert first["message"] == "hello world"
    assert first["level"] == "INFO"
    assert first["logger"] == "collab.test"
    assert first["request_id"] == "req-1"
    assert first["room"] == "plan/intro"
    assert first["node"] == "node-a"
    assert first["time"].endswith("+00:00")
    assert "ValueError: boom" in second["exc_info"]
    assert "request_id" not in third
    assert third["message"] == 'no context, "quotes" and\nnewline'


def test_text_is_the_default_and_names_the_request(restore_logging: None) -> None:
    stream = io.StringIO()
    logs.configure("info", "text", stream)
    token = context.request_id.set("req-2")
    try:
        logging.getLogger("collab.test").info("plain")
    finally:
        context.request_id.reset(token)
    line = stream.getvalue().strip()
    assert line.endswith("collab.test: plain [request req-2]")
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


@given(st.text(max_size=200))
def test_request_ids_are_tokens_whatever_the_header(header: str) -> None:
    accepted = context.accept_request_id(header)
    assert 1 <= len(accepted) <= 128
    assert accepted.isascii()
    assert accepted.isprintable()
    assert " " not in accepted
    assert accepted == header or len(accepted) == 32


def test_forwarded_for_counts_only_from_trusted_proxies() -> None:
    trusted = ["10.0.0.0/8", "::1"]
    assert client_address("10.1.2.3", "203.0.113.9", trusted) == "203.0.113.9"
    # A client behind two proxies: the rightmost untrusted hop.
    assert client_address("10.1.2.3", "1.1.1.1, 203.0.113.9, 10.0.0.7", trusted) == "203.0.113.9"
    # Not from a trusted proxy: the header is the client's own claim, ignored.
    assert client_address("198.51.100.4", "203.0.113.9", trusted) == "198.51.100.4"
    assert client_address("10.1.2.3", None, trusted) == "10.1.2.3"
    assert client_address("10.1.2.3", "203.0.113.9", []) == "10.1.2.3"
    assert client_address("10.1.2.3", "not-an-address", trusted) == "10.1.2.3"
    assert client_address("::1", "2001:db8::1", trusted) == "2001:db8::1"


@given(st.text(max_size=100), st.ip_addresses())
def test_forwarded_for_never_yields_garbage(header: str, peer: object) -> None:
    for trusted in (["0.0.0.0/0", "::/0"], ["10.0.0.0/8"]):
        found = client_address(str(peer), header, trusted)
        assert found is not None
        ipaddress.ip_address(found)  # always an address, never the header's text


async def test_readiness_phases_and_failing_checks() -> None:
    readiness = Readiness(timeout=0.2, cache_seconds=0.0)
    report = await readiness.report()
    assert not report.ready
    assert report.phase is Phase.STARTING
    readiness.started()
    assert (await readiness.report()).ready

    async def down() -> None:
        raise StorageUnavailable("connection refused")

    async def hangs() -> None:
        await asyncio.Event().wait()

    readiness.add_check("redis", down)
    readiness.add_check("mongo", hangs)
    report = await readiness.report()
    assert not report.ready
    body = report.body()
    assert body["checks"]["redis"] == {
        "ok": False,
        "reason": "StorageUnavailable: connection refused",
    }
    assert "no answer within 0.2 s" in body["checks"]["mongo"]["reason"]
    readiness.clear_checks()
    assert (await readiness.report()).ready
    readiness.drain("first")
    readiness.drain("second")
    report = await readiness.report()
    assert not report.ready
    assert report.body()["checks"]["draining"]["reason"] == "first"


async def test_readiness_checks_are_cached() -> None:
    calls = 0

    async def probe() -> None:
        nonlocal calls
        calls += 1

    readiness = Readiness(cache_seconds=60.0)
    readiness.started()
    readiness.add_check("postgres", probe)
    for _ in range(5):
        assert (await readiness.report()).ready
    assert calls == 1


def _exported_names() -> set[str]:
    """Every sample name the collector exports when every source is there."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from server.ops import counters
    from server.ops.metrics import CollabCollector, Sources

    counters.closes[1012] += 0
    counters.client_closes[1000] += 0
    counters.refusals[(401, "unauthenticated")] += 0
    counters.refusals[(429, "too many requests")] += 0
    counters.auth_failures["expired"] += 0
    keys = (
        "rooms rooms_loaded_total rooms_unloaded_total updates_applied_total "
        "updates_merged_total frames_broadcast_total updates_refused_too_large_total "
        "snapshots_written snapshot_failures documents_dirty documents_failing queued "
        "written access_written retries dropped rejected outage_seconds "
        "cluster_documents_followed cluster_updates_applied cluster_signals_received "
        "cluster_signals_sent spooled_now spooled_total drained_total tally_pending "
        "tally_emitted"
    )
    everything: dict[str, float] = dict.fromkeys(keys.split(" "), 1.0)
    from server.ops.health import CheckResult

    readiness = Readiness()
    readiness.last["redis"] = CheckResult("redis", True, "", 0.001)
    sources = Sources(
        node="n",
        readiness=readiness,
        registry=lambda: everything,
        snapshots=lambda: everything,
        audit=lambda: everything,
        connections=lambda: 3,
        cluster=lambda: everything,
        store=lambda: everything,
        edits=lambda: everything,
        extra={"section_locks_held": lambda: 1.0},
        counted={
            "comment_operations": ("h", "op", lambda: {"create": 1}),
            "notifications": ("h", "outcome", lambda: {"delivered": 1}),
        },
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CollabCollector(sources))
    text = generate_latest(registry).decode()
    families = list(text_string_to_metric_families(text))
    # A histogram is named by its family (``collab_fanout_seconds``) and queried through its
    # samples (``_bucket``, ``_sum``, ``_count``).
    histograms = {family.name for family in families if family.type == "histogram"}
    return histograms | {sample.name for family in families for sample in family.samples}


def test_the_dashboard_and_the_docs_name_only_exported_metrics() -> None:
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    exported = _exported_names()
    assert "collab_connections" in exported
    assert "collab_updates_applied_total" in exported
    dashboard = (root / "deploy" / "grafana-dashboard.json").read_text()
    used = set(re.findall(r"collab_[a-z_]+", dashboard)) - {"collab_overview"}
    assert used, "the dashboard queries collab_ metrics"
    assert used <= exported, f"the dashboard asks for {sorted(used - exported)}"
    documented = set(re.findall(r"`(collab_[a-z_]+)", (root / "docs/operations.md").read_text()))
    assert documented <= exported, f"docs/operations.md lists {sorted(documented - exported)}"
    assert len(documented) >= 30


def test_forwarded_scheme_only_from_trusted_proxies() -> None:
    from server.ops.proxies import forwarded_scheme

    trusted = ["127.0.0.1/32"]
    assert forwarded_scheme("127.0.0.1", "https", trusted) == "https"
    assert forwarded_scheme("127.0.0.1", "HTTPS, http", trusted) == "https"
    assert forwarded_scheme("127.0.0.1", "gopher", trusted) is None
    assert forwarded_scheme("10.9.9.9", "https", trusted) is None
    assert forwarded_scheme("127.0.0.1", "https", []) is None
    assert forwarded_scheme("127.0.0.1", None, trusted) is None
