"""The CMS resources at 10,000 records per collection, on the embedded default.

``python -m loadtests.inprocess.cms_bench [--records N] [--requests N] [--json PATH]``

Seeds a fresh data directory (10,000 records in each of ``business_documents``,
``projects``, ``market_research``, ``strategic_plans``, ``sales_opportunities`` and
``knowledge_articles``; one in ten owned by the benchmark's analyst, the others by 50 other
users; one project linking 50 of the analyst's documents), starts ``collab serve`` on it
(tokens on, pinned to CPU 0 when there are two), then times, one request at a time over
HTTP, as the analyst (the rights filter applies) and as an admin (it does not):

* a filtered list of each collection (``?status=`` / ``?stage=`` ..., 20 per page);
* ``GET /api/projects/{id}?include=documents`` for the project linking 50 documents;
* ``GET /api/sales-opportunities/pipeline``.

Prints p50 / p99 / max per measurement and writes the JSON (``--json``). The seeding
writes the SQLite file directly, in the content store's own codec, in one transaction per
collection (the store itself commits one record at a time with ``synchronous=FULL``,
which would make seeding 60,000 records take minutes); the server then opens the file as
usual (tables and indexes exist: the store created them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2

from loadtests.harness import ServerProcess
from persistence.content import sqlite_search
from persistence.content.ports import COLLECTIONS, normalise
from persistence.content.sqlite import SqliteContentStore
from persistence.content.sqlite_json import dumps

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TARGET_MS = 50.0
LINKED = 50
SECURE_ENV = {"COLLAB_INSECURE_DEV": "false"}


def _collab(data_dir: Path, *args: str) -> str:
    command = [sys.executable, "-m", "server", *args, "--data-dir", str(data_dir)]
    done = subprocess.run(command, check=True, capture_output=True, text=True, timeout=60)
    return done.stdout.strip()


def _user(data_dir: Path, role: str) -> tuple[str, str]:
    """A user of ``role`` and a token for them; returns (user id, token)."""
    email = f"bench-{role}-{uuid.uuid4().hex[:6]}@example.com"
    added = _collab(data_dir, "user", "add", "--email", email, "--name", role, "--role", role)
    found = re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", added)
    assert found is not None, f"no user id in {added!r}"
    token = _collab(data_dir, "token", "issue", "--user", email, "--ttl", "2h")
    return found.group(0), token


# -- the records -------------------------------------------------------------------------------


def _day(n: int) -> datetime:
    return T0 + timedelta(days=n % 730, minutes=n)


def _records(collection: str, count: int, me: str, rng: random.Random) -> Iterator[dict[str, Any]]:
    others = [str(uuid.uuid4()) for _ in range(50)]
    for n in range(count):
        owner = me if n % 10 == 0 else rng.choice(others)
        stamps = {"createdAt": _day(n), "updatedAt": _day(n + 1), "createdBy": owner}
        yield _record(collection, n, owner, stamps, rng)


def _record(
    collection: str, n: int, owner: str, stamps: dict[str, Any], rng: random.Random
) -> dict[str, Any]:
    if collection == "business_documents":
        return {
            "documentId": f"doc-{n}",
            "title": f"Document {n}",
            "slug": f"document-{n}",
            "type": "strategy_plan",
            "status": rng.choice(["draft", "review", "approved", "published"]),
            "owner": owner,
            "permissions": {"view": [], "edit": [], "comment": []},
            "content": {"markdown": "x" * 2000, "sections": []},
            "tags": ["bench"],
            **stamps,
        }
    if collection == "projects":
        return {
            "projectId": f"project-{n}",
            "name": f"Project {n}",
            "status": rng.choice(["planning", "active", "on_hold", "completed", "cancelled"]),
            "owner": owner,
            "startDate": _day(n),
            "budget": rng.randint(1, 1_000_000),
            "stakeholders": [],
            "linkedDocuments": [f"doc-{rng.randrange(10_000)}" for _ in range(3)],
            **stamps,
        }
    if collection == "market_research":
        return {
            "researchId": f"research-{n}",
            "title": f"Research {n}",
            "type": rng.choice(["market_analysis", "competitor_analysis", "trend_research"]),
            "status": rng.choice(["draft", "validated", "published"]),
            "author": owner,
            "findings": [{"id": "f1", "title": "A finding", "impact": "high"}],
            "researchDate": _day(n),
            **stamps,
        }
    if collection == "strategic_plans":
        return {
            "planId": f"plan-{n}",
            "title": f"Plan {n}",
            "planType": rng.choice(["annual", "quarterly", "multi_year", "product", "market"]),
            "fiscalYear": 2020 + n % 10,
            "status": rng.choice(["draft", "under_review", "approved", "executing"]),
            "owner": owner,
            "approvers": [],
            "keyObjectives": [
                {"id": "k1", "title": "K", "keyResults": [{"id": "r1", "target": 10, "actual": 4}]}
            ],
            **stamps,
        }
    if collection == "sales_opportunities":
        return {
            "opportunityId": f"opportunity-{n}",
            "title": f"Opportunity {n}",
            "account": f"Account {n % 300}",
            "stage": rng.choice(
                ["prospect", "qualified_lead", "proposal", "negotiation", "won", "lost", "stalled"]
            ),
            "currency": rng.choice(["USD", "EUR", "GBP"]),
            "value": rng.randint(1_000, 500_000),
            "probability": rng.randint(0, 100),
            "expectedCloseDate": _day(n),
            "owner": owner,
            "accountManager": owner,
            **stamps,
        }
    return {
        "articleId": f"article-{n}",
        "title": f"Article {n}",
        "slug": f"article-{n}",
        "category": rng.choice(["sales", "marketing", "operations"]),
        "status": rng.choice(["draft", "published", "archived"]),
        "author": owner,
        "content": "y" * 1000,
        "tags": [rng.choice(["pricing", "growth", "hiring"])],
        "views": 0,
        "likes": 0,
        "shares": 0,
        "likedBy": [],
        "createdAt": stamps["createdAt"],
        "createdBy": owner,
    }


async def _create_schema(path: Path) -> None:
    async with await SqliteContentStore.open(path):
        pass


def seed(data_dir: Path, records: int, me: str) -> None:
    """Write ``records`` records per collection into the content file, and the linked
    project (``project-linked``, 50 of the analyst's documents)."""
    path = data_dir / "content.sqlite3"
    asyncio.run(_create_schema(path))
    rng = random.Random(7)
    conn = sqlite3.connect(path, isolation_level=None)
    sqlite_search.register(conn)  # the search triggers call these on every insert
    try:
        for spec in COLLECTIONS.values():
            rows = []
            for record in _records(spec.name, records, me, rng):
                doc = normalise(record)
                slug = doc.get("slug") if spec.slug_unique else None
                rows.append((doc[spec.id_field], slug, dumps(doc, spec.name)))
            conn.execute("BEGIN")
            conn.executemany(f'INSERT INTO "{spec.name}" (id, slug, doc) VALUES (?, ?, ?)', rows)
            conn.execute("COMMIT")
        linked = normalise(
            {
                "projectId": "project-linked",
                "name": "Linked",
                "status": "active",
                "owner": me,
                "linkedDocuments": [f"doc-{10 * n}" for n in range(LINKED)],
                "createdAt": T0,
                "updatedAt": T0,
                "createdBy": me,
            }
        )
        conn.execute(
            'INSERT INTO "projects" (id, slug, doc) VALUES (?, NULL, ?)',
            ("project-linked", dumps(linked, "projects")),
        )
        conn.execute("ANALYZE")
    finally:
        conn.close()


# -- timing ------------------------------------------------------------------------------------


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def timed(call: Callable[[], httpx2.Response], requests: int) -> dict[str, float]:
    for _ in range(5):  # warm-up
        response = call()
        assert response.status_code == 200, response.text
    took = []
    for _ in range(requests):
        started = time.perf_counter()
        response = call()
        took.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.text
    return {
        "p50_ms": round(statistics.median(took), 2),
        "p99_ms": round(_percentile(took, 0.99), 2),
        "max_ms": round(max(took), 2),
        "requests": requests,
    }


LISTS = {
    "projects": {"status": "active"},
    "market-research": {"status": "published", "type": "market_analysis"},
    "strategic-plans": {"fiscalYear": "2026", "planType": "annual"},
    "sales-opportunities": {
        "stage": "proposal",
        "expectedCloseDateFrom": "2026-03-01T00:00:00Z",
        "expectedCloseDateTo": "2026-09-01T00:00:00Z",
    },
    "knowledge-articles": {"status": "published", "tag": "pricing"},
}


def _getter(
    http: httpx2.Client, path: str, params: dict[str, str], headers: dict[str, str]
) -> Callable[[], httpx2.Response]:
    def get() -> httpx2.Response:
        return http.get(path, params=params, headers=headers)

    return get


def measure(http: httpx2.Client, tokens: dict[str, str], requests: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for who, token in tokens.items():
        headers = {"Authorization": f"Bearer {token}"}
        for path, params in LISTS.items():
            call = _getter(http, f"/api/{path}", params, headers)
            results[f"list {path} ({who})"] = timed(call, requests)
        include = _getter(http, "/api/projects/project-linked", {"include": "documents"}, headers)
        results[f"project include=documents, {LINKED} linked ({who})"] = timed(include, requests)
        pipeline = _getter(http, "/api/sales-opportunities/pipeline", {}, headers)
        results[f"sales pipeline ({who})"] = timed(pipeline, requests)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    cpu = 0 if (os.cpu_count() or 1) >= 2 else None
    with tempfile.TemporaryDirectory(prefix="collab-cms-bench-") as tmp:
        data_dir = Path(tmp)
        me, analyst_token = _user(data_dir, "analyst")
        _, admin_token = _user(data_dir, "admin")
        started = time.perf_counter()
        seed(data_dir, args.records, me)
        took = time.perf_counter() - started
        print(f"seeded {args.records} records x 6 collections in {took:.1f} s")
        with (
            ServerProcess(data_dir, cpu=cpu, env=SECURE_ENV) as server,
            httpx2.Client(base_url=server.http_url, timeout=30) as http,
        ):
            tokens = {"analyst": analyst_token, "admin": admin_token}
            load_before = os.getloadavg()[0]
            results = measure(http, tokens, args.requests)
            load_after = os.getloadavg()[0]
    width = max(len(name) for name in results)
    for name, result in results.items():
        verdict = "met" if result["p99_ms"] < TARGET_MS else "MISSED"
        print(
            f"{name:<{width}}  p50 {result['p50_ms']:7.2f} ms  p99 {result['p99_ms']:7.2f} ms"
            f"  max {result['max_ms']:7.2f} ms  ({verdict})"
        )
    # The machine is shared: a load average above its core count explains a long tail.
    print(f"load average (1 min) before / after: {load_before:.2f} / {load_after:.2f}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {"records": args.records, "load": [load_before, load_after], "results": results}
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
