"""Two nodes sharing Redis (issue 5): ``python -m loadtests.bench_cluster``.

Starts a throwaway ``redis-server`` (AOF, ``appendfsync always``, loopback, a temporary
directory) and two ``collab serve`` processes in service mode on one data directory (its
SQLite files stand in for the shared MongoDB and PostgreSQL). On a machine with two CPUs node A
is pinned to CPU 0 and node B to CPU 1 (a node per core, as two hosts would have); Redis and
the generators float. The clients of every room alternate between the nodes, so most
deliveries cross from one node to the other through the Redis stream.

Measures, in one run:

* fan-out latency p50/p99 (sender to the last receiver) at 1 room x 20 clients and at
  100 rooms x 4 clients (target p99 under 50 ms);
* Redis commands per edit (``INFO commandstats`` before and after, divided by edits sent);
* section lock acquire latency (REST ``POST .../lock`` then ``DELETE``, 200 times), p50/p99.

With ``--redis-cluster`` it measures the same again, in the same run, with the two nodes on a
throwaway Redis Cluster (three masters with a replica each, AOF always, all on this machine:
:mod:`loadtests.redis_cluster`), and prints both.

Markdown to stdout, JSON to ``loadtests/results/``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2

from loadtests.bench_core import RESULTS_DIR, machine
from loadtests.cli import progress_printer
from loadtests.harness import ServerProcess
from loadtests.metrics import LatencySummary
from loadtests.redis_cluster import ThrowawayRedisCluster
from loadtests.runner import RunOptions, run_load
from loadtests.scenario import SCENARIO_DIR, load_scenario

TARGET_P99_MS = 50.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def redis_server(directory: Path) -> Iterator[str]:
    """A throwaway redis-server with AOF always on a free loopback port."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not on PATH")
    port = _free_port()
    process = subprocess.Popen(
        [
            binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(directory),
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


def redis_commands(url: str) -> int:
    """Commands Redis has run so far (INFO commandstats), with redis-py."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return sum(int(v["calls"]) for v in stats.values() if isinstance(v, dict))


def lock_latency(node: ServerProcess, rounds: int = 200) -> LatencySummary:
    """REST lock then unlock of one section, ``rounds`` times; the acquire latencies."""
    samples: list[float] = []
    base = node.http_url
    with httpx2.Client(base_url=base, timeout=10) as http:
        created = http.post(
            "/api/documents",
            json={"documentId": "lockbench", "title": "Lock bench", "sections": [
                {"id": "s1", "title": "One", "content": "text"}
            ]},
        )  # fmt: skip
        if created.status_code not in (201, 409):
            raise RuntimeError(f"creating the lock bench document: {created.text}")
        for _ in range(rounds):
            started = time.perf_counter()
            taken = http.post("/api/documents/lockbench/sections/s1/lock")
            samples.append(time.perf_counter() - started)
            if taken.status_code != 201:
                raise RuntimeError(f"lock refused: {taken.status_code} {taken.text}")
            http.delete("/api/documents/lockbench/sections/s1/lock")
    return LatencySummary.of(samples)


def measure_nodes(
    root: Path, env: dict[str, str], commands: Callable[[], int], workers: int, two: bool
) -> dict[str, Any]:
    """The fan-out scenarios and the lock latency on two nodes with ``env``."""
    results: dict[str, Any] = {}
    data = root / "data"
    with (
        ServerProcess(data, env=env, cpu=0 if two else None) as a,
        ServerProcess(data, env=env, cpu=1 if two else None) as b,
    ):
        urls = f"{a.ws_url},{b.ws_url}"
        for name in ("cluster-one-room", "cluster-many-rooms"):
            print(f"{name}: clients alternating between two nodes", file=sys.stderr)
            scenario = load_scenario(SCENARIO_DIR / f"{name}.toml", {})
            before = commands()
            options = RunOptions(workers=workers, server_pid=a.pid, progress=progress_printer())
            result = run_load(scenario, urls, options)
            count = commands() - before
            sent = int(result.edits.get("sent", 0)) or 1
            results[name] = {
                "fanout_ms": result.fanout.to_json(),
                "converged": result.converged,
                "errors": result.errors,
                "edits_sent": sent,
                "redis_commands": count,
                "redis_commands_per_edit": count / sent,
            }
        results["lock_acquire_ms"] = lock_latency(a).to_json()
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.bench_cluster", description=__doc__)
    parser.add_argument("--workers", type=int, default=2, help="generator processes")
    parser.add_argument(
        "--redis-cluster",
        action="store_true",
        help="measure again, in the same run, on a throwaway Redis Cluster (three masters "
        "with a replica each, AOF always; COLLAB_REDIS_CLUSTER=true) and compare",
    )
    args = parser.parse_args(argv)
    two = (os.cpu_count() or 1) >= 2
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="collab-bench-cluster-") as tmp:
        root = Path(tmp)
        (root / "redis").mkdir()
        with redis_server(root / "redis") as url:
            runs["one Redis"] = measure_nodes(
                root / "single",
                {"COLLAB_REDIS_URL": url},
                lambda: redis_commands(url),
                args.workers,
                two,
            )
        if args.redis_cluster:
            cluster = ThrowawayRedisCluster().start()
            try:
                ports = [server.port for server in cluster.servers]
                runs["Redis Cluster"] = measure_nodes(
                    root / "cluster",
                    {"COLLAB_REDIS_URL": cluster.url, "COLLAB_REDIS_CLUSTER": "true"},
                    lambda: sum(redis_commands(f"redis://127.0.0.1:{port}/0") for port in ports),
                    args.workers,
                    two,
                )
            finally:
                cluster.stop()
    summary = {
        "machine": machine(),
        "command": "python -m loadtests.bench_cluster " + " ".join(argv or sys.argv[1:]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        **runs["one Redis"],
        "runs": runs,
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    (RESULTS_DIR / f"bench-cluster-{stamp}.json").write_text(json.dumps(summary, indent=2))
    ok = True
    print("| two nodes on | scenario | fan-out p50 | p99 | converged | Redis commands / edit |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, results in runs.items():
        for name in ("cluster-one-room", "cluster-many-rooms"):
            row = results[name]
            p99 = row["fanout_ms"].get("p99") or float("nan")
            ok = ok and p99 < TARGET_P99_MS and row["converged"]
            print(
                f"| {label} | {name} | {row['fanout_ms'].get('p50', float('nan')):.1f} ms | "
                f"{p99:.1f} ms | {'yes' if row['converged'] else 'NO'} | "
                f"{row['redis_commands_per_edit']:.1f} |"
            )
    for label, results in runs.items():
        lock_ms = results["lock_acquire_ms"]
        print(
            f"\nSection lock acquire over REST (200 times), {label}: "
            f"p50 {lock_ms.get('p50', 0):.1f} ms, p99 {lock_ms.get('p99', 0):.1f} ms"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
