"""What security costs (issue 4): ``python -m loadtests.bench_auth``.

In one run, against fresh ``collab serve`` processes on embedded defaults:

* **authenticated connects**: 1,000 clients, each presenting a signed token, join 100 rooms
  (ramped over 5 s); connect time = upgrade + token check + user and session lookup + rights
  + sync step 2, p50/p99;
* **auth and audit on vs off**: 1 room x 50 clients, 5 typing at 10 edits/s each, 20 s,
  once against a server that authenticates every client and audits (edit tallies, joins)
  and once against ``--insecure-dev`` with ``COLLAB_AUDIT=false``; alternated ``--repeat``
  times, medians and the ratio of fan-out p99 (target: at most 1.3x);
* **audit rows written per second** at that typing load (from ``/healthz``), and the
  audit pipeline's own ceiling: 50,000 rows through it into the embedded database.

The server is pinned to CPU 0 and the generators to CPU 1 when there are two. Markdown to
stdout, JSON to ``loadtests/results/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx2

from loadtests.bench_core import RESULTS_DIR, machine
from loadtests.cli import progress_printer
from loadtests.harness import ServerProcess
from loadtests.runner import RunOptions, RunResult, run_load
from loadtests.scenario import SCENARIO_DIR, load_scenario

SECURE_ENV = {
    "COLLAB_INSECURE_DEV": "false",
    # One user drives every client here: keep the per-user limits out of the measurement.
    "COLLAB_RATE_MESSAGES_PER_SECOND": "10000000",
    "COLLAB_RATE_CONNECTS_PER_MINUTE": "10000000",
    "COLLAB_MAX_SOCKETS_PER_USER": "10000000",
}
OPEN_ENV = {"COLLAB_INSECURE_DEV": "true", "COLLAB_AUDIT": "false"}
TARGET_RATIO = 1.3


def _collab(data_dir: Path, *args: str) -> str:
    command = [sys.executable, "-m", "server", *args, "--data-dir", str(data_dir)]
    done = subprocess.run(command, check=True, capture_output=True, text=True, timeout=60)
    return done.stdout.strip()


def make_token(data_dir: Path) -> str:
    """An analyst who owns what they create, and a token for them (the operator's way)."""
    email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
    _collab(data_dir, "user", "add", "--email", email, "--name", "Bench", "--role", "analyst")
    return _collab(data_dir, "token", "issue", "--user", email, "--ttl", "2h")


def run(
    scenario_name: str,
    env: dict[str, str],
    *,
    secure: bool,
    workers: int,
    cpu: int | None,
    overrides: dict[str, Any] | None = None,
) -> tuple[RunResult, dict[str, Any]]:
    """One scenario against a fresh server; the result and the server's /healthz after."""
    with tempfile.TemporaryDirectory(prefix="collab-bench-auth-") as tmp:
        data_dir = Path(tmp)
        scenario = load_scenario(SCENARIO_DIR / f"{scenario_name}.toml", overrides or {})
        if secure:
            token = make_token(data_dir)
            query = f"token={token}"
            scenario = dataclasses.replace(scenario, query=query)
        with ServerProcess(data_dir, cpu=cpu, env=env) as server:
            options = RunOptions(
                workers=workers, server_pid=server.pid, progress=progress_printer()
            )
            result = run_load(scenario, server.ws_url, options)
            health = httpx2.get(f"{server.http_url}/healthz", timeout=10).json()
    return result, health


def audit_ceiling(rows: int = 50_000) -> float:
    """Rows per second the audit pipeline writes into the embedded database (measured by
    ``python -m loadtests.inprocess.audit_bench`` in a child process: this package does not import
    the
    server)."""
    done = subprocess.run(
        [sys.executable, "-m", "loadtests.inprocess.audit_bench", str(rows)],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return float(done.stdout.strip())


def _p(result: RunResult, key: str) -> float | None:
    value = result.fanout.to_json().get(key)
    return float(value) if value is not None else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.bench_auth", description=__doc__)
    parser.add_argument("--repeat", type=int, default=3, help="on/off pairs (default 3)")
    parser.add_argument("--workers", type=int, default=2, help="generator processes")
    args = parser.parse_args(argv)
    two = (os.cpu_count() or 1) >= 2
    server_cpu = 0 if two else None
    if two:
        os.sched_setaffinity(0, {1})

    print("authenticated connects: 1,000 clients over 100 rooms", file=sys.stderr)
    connects, _ = run("core-c-idle", SECURE_ENV, secure=True, workers=args.workers, cpu=server_cpu)
    connect_ms = connects.clients.get("connect_ms", {})
    print("unauthenticated connects (insecure-dev), for comparison", file=sys.stderr)
    baseline, _ = run("core-c-idle", OPEN_ENV, secure=False, workers=args.workers, cpu=server_cpu)
    baseline_ms = baseline.clients.get("connect_ms", {})

    pairs: list[dict[str, Any]] = []
    for index in range(args.repeat):
        for mode, env, secure in (("on", SECURE_ENV, True), ("off", OPEN_ENV, False)):
            print(f"typing, auth+audit {mode} ({index + 1}/{args.repeat})", file=sys.stderr)
            result, health = run(
                "core-a-one-room", env, secure=secure, workers=args.workers, cpu=server_cpu
            )
            audit = health.get("audit", {})
            pairs.append(
                {
                    "mode": mode,
                    "p50_ms": _p(result, "p50"),
                    "p99_ms": _p(result, "p99"),
                    "delivered_per_s": result.edits.get("delivered_per_second"),
                    "converged": result.converged,
                    "errors": result.errors,
                    "audit_rows": audit.get("written", 0),
                    "access_rows": audit.get("access_written", 0),
                    "seconds": result.window_seconds,
                    "server_cpu_seconds": (result.server or {}).get("cpu_seconds"),
                }
            )
    ceiling = audit_ceiling()

    def median(mode: str, key: str) -> float:
        values = [p[key] for p in pairs if p["mode"] == mode and p[key] is not None]
        return statistics.median(values) if values else float("nan")

    on_p99, off_p99 = median("on", "p99_ms"), median("off", "p99_ms")
    ratio = on_p99 / off_p99 if off_p99 else float("nan")
    rows_per_s = statistics.median(
        (p["audit_rows"] + p["access_rows"]) / p["seconds"] for p in pairs if p["mode"] == "on"
    )
    summary = {
        "machine": machine(),
        "command": "python -m loadtests.bench_auth " + " ".join(argv or sys.argv[1:]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "connect_ms": connect_ms,
        "connect_ms_without_auth": baseline_ms,
        "typing": pairs,
        "p99_on_ms": on_p99,
        "p99_off_ms": off_p99,
        "p99_ratio": ratio,
        "audit_rows_per_second_at_typing_load": rows_per_s,
        "audit_pipeline_rows_per_second": ceiling,
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    (RESULTS_DIR / f"bench-auth-{stamp}.json").write_text(json.dumps(summary, indent=2))
    print("| measure | value |\n| --- | --- |")
    print(
        f"| authenticated connect, 1,000 clients | p50 {connect_ms.get('p50', float('nan')):.1f} ms"
        f", p99 {connect_ms.get('p99', float('nan')):.1f} ms |"
    )
    print(
        f"| same, insecure-dev (no auth) | p50 {baseline_ms.get('p50', float('nan')):.1f} ms"
        f", p99 {baseline_ms.get('p99', float('nan')):.1f} ms |"
    )
    print(f"| fan-out p99, auth + audit on (median of {args.repeat}) | {on_p99:.1f} ms |")
    print(f"| fan-out p99, insecure-dev + audit off | {off_p99:.1f} ms |")
    verdict = "met" if ratio <= TARGET_RATIO else "MISSED"
    print(f"| ratio on / off (target <= {TARGET_RATIO}) | {ratio:.2f}x ({verdict}) |")
    print(f"| audit + access rows written at that typing load | {rows_per_s:.2f} rows/s |")
    print(f"| audit pipeline ceiling (embedded SQLite) | {ceiling:,.0f} rows/s |")
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
