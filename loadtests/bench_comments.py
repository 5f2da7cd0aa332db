"""Live comments under typing load (issue 6): ``python -m loadtests.bench_comments``.

Against a fresh ``collab serve`` (:class:`~loadtests.harness.ServerProcess`, insecure-dev,
embedded stores; ``--postgres-url`` puts the relational tables, comments included, on a
PostgreSQL database):

* 50 clients join one section of one document with application events on; 5 of them type
  (one-character inserts at random places through the y-websocket protocol, ~5 edits/s
  each) for the whole run;
* **comment fan-out**: one client (not a typist) posts anchored comments over the socket,
  one at a time, paced; latency = from the send to the moment the last of the 49 other
  clients received the ``comment`` event, p50/p99. For comparison, the **edit fan-out** of
  probe edits (one typist appends a marker every second; latency to the last of the 49
  others seeing it) is measured in the same run;
* **comments stored per second**: a burst of comments from a few clients at once (each
  sends all of its requests without waiting), acknowledgements counted (a ``comment.ack``
  is only sent once the database stored the comment), while the typing goes on.

On a machine with two cores or more the server is pinned to CPU 0 and this process to
CPU 1. Markdown to stdout, JSON to ``loadtests/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2

from loadtests.bench_core import RESULTS_DIR, machine
from loadtests.client import YClient
from loadtests.harness import ServerProcess
from protocol.events import AppEvent, decode_event, encode_event
from protocol.ysync import AppEventMessage, Message, SyncUpdate

DOCUMENT = "bench-comments"
SECTION = "s"
SEED = (
    "Our plan for the next quarter focuses on three markets. Revenue should grow while costs "
    "stay flat, and the board expects a clear answer on pricing before the summer. "
) * 4


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (nearest rank) of some values, None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


@dataclass
class Listener:
    """What one client saw: when each comment (by content) and each probe arrived."""

    client: YClient
    comments: dict[str, float] = field(default_factory=dict)
    acks: dict[str, float] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    probes: dict[str, float] = field(default_factory=dict)
    pending_probes: set[str] = field(default_factory=set)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.client.on_message = self.on_message

    def on_message(self, message: Message) -> None:
        now = time.perf_counter()
        if isinstance(message, AppEventMessage):
            event = decode_event(message.payload)
            if event.type == "comment" and event.get("action") == "created":
                self.comments.setdefault(str(event.get("comment")["content"]), now)
                self.changed.set()
            elif event.type == "comment.ack":
                self.acks[str(event.get("requestId"))] = now
                self.changed.set()
            elif event.type == "error":
                self.errors.append(dict(event.fields))
                self.changed.set()
        elif isinstance(message, SyncUpdate) and self.pending_probes:
            # The client applies the update after this hook: look at the update's bytes.
            for probe in list(self.pending_probes):
                if probe.encode() in message.update:
                    self.probes[probe] = now
                    self.pending_probes.discard(probe)
                    self.changed.set()


async def send_comment(client: YClient, request_id: str, content: str, start: int) -> None:
    fields = {
        "requestId": request_id,
        "section": SECTION,
        "start": start,
        "end": start + 20,
        "content": content,
    }
    await client.send(AppEventMessage(encode_event(AppEvent("comment.create", fields))))


async def wait_until(listeners: Sequence[Listener], done: Any, timeout: float) -> bool:
    """Wait until ``done()`` holds, re-checked whenever a listener saw something."""
    deadline = time.monotonic() + timeout
    while not done():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        waiters = [asyncio.ensure_future(x.changed.wait()) for x in listeners]
        try:
            await asyncio.wait(waiters, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        for listener in listeners:
            listener.changed.clear()
    return True


async def type_along(client: YClient, rate: float, stop: asyncio.Event, rng: random.Random) -> int:
    """One-character inserts at random places, ~``rate`` per second, until ``stop``."""
    typed = 0
    while not stop.is_set():
        await asyncio.sleep(rng.expovariate(rate))
        length = len(str(client.text))
        await client.insert(rng.randint(0, length), rng.choice("abcdefghijklmnopqrstuvwxyz "))
        typed += 1
    return typed


async def probe_edits(
    client: YClient, others: Sequence[Listener], stop: asyncio.Event, interval: float
) -> list[tuple[float, float]]:
    """Append a unique marker every ``interval`` s: ``(sent at, latency in ms to the last
    other client)`` per probe."""
    latencies: list[tuple[float, float]] = []
    while not stop.is_set():
        await asyncio.sleep(interval)
        probe = f"<{uuid.uuid4().hex[:10]}>"
        for other in others:
            other.pending_probes.add(probe)
        sent = time.perf_counter()
        await client.insert(len(str(client.text)), probe)
        ok = await wait_until(others, lambda p=probe: all(p in o.probes for o in others), 10)
        if ok:
            latencies.append((sent, (max(o.probes[probe] for o in others) - sent) * 1000))
        for other in others:
            other.pending_probes.discard(probe)
    return latencies


async def comment_fanout(
    commenter: Listener, others: Sequence[Listener], count: int, rng: random.Random
) -> tuple[list[float], int]:
    """Comments one at a time; latency to the last other client, and how many timed out."""
    latencies: list[float] = []
    missed = 0
    for index in range(count):
        content = f"fan-out {index} {uuid.uuid4().hex[:6]}"
        start = rng.randint(0, len(SEED) // 2)
        sent = time.perf_counter()
        await send_comment(commenter.client, uuid.uuid4().hex, content, start)
        ok = await wait_until(others, lambda c=content: all(c in o.comments for o in others), 10)
        if ok:
            latencies.append((max(o.comments[content] for o in others) - sent) * 1000)
        else:
            missed += 1
        await asyncio.sleep(rng.uniform(0.05, 0.15))
    return latencies, missed


async def comment_burst(
    senders: Sequence[Listener], per_sender: int, window: int
) -> dict[str, Any]:
    """Every sender sends ``per_sender`` comments as fast as it may, at most ``window``
    unanswered at a time (the server lets 64 wait per connection); acks counted."""

    async def send_all(index: int, sender: Listener) -> list[str]:
        ids = [f"burst-{index}-{n}-{uuid.uuid4().hex[:6]}" for n in range(per_sender)]
        for n, request_id in enumerate(ids):
            await wait_until(
                [sender], lambda n=n: n - len(sender.acks) - len(sender.errors) < window, 60
            )
            await send_comment(sender.client, request_id, f"burst {request_id}", (n * 7) % 300)
        await wait_until([sender], lambda: len(sender.acks) + len(sender.errors) >= per_sender, 60)
        return ids

    began = time.perf_counter()
    requests = await asyncio.gather(*(send_all(i, s) for i, s in enumerate(senders)))
    acked = [
        s.acks[r] for s, ids in zip(senders, requests, strict=True) for r in ids if r in s.acks
    ]
    elapsed = (max(acked) - began) if acked else float("nan")
    return {
        "sent": per_sender * len(senders),
        "window": window,
        "acked": len(acked),
        "errors": sum(len(s.errors) for s in senders),
        "seconds": round(elapsed, 3),
        "stored_per_second": round(len(acked) / elapsed, 1) if acked else 0.0,
    }


async def run(args: argparse.Namespace, http_url: str, ws_url: str) -> dict[str, Any]:
    rng = random.Random(args.seed)
    async with httpx2.AsyncClient(base_url=http_url, timeout=30) as http:
        created = await http.post(
            "/api/documents",
            json={
                "documentId": DOCUMENT,
                "title": "Bench",
                "sections": [{"id": SECTION, "title": "S", "content": SEED}],
            },
        )
        created.raise_for_status()
    room = f"{DOCUMENT}/{SECTION}"
    listeners = [Listener(YClient(ws_url, room, query="events=1")) for _ in range(args.clients)]
    for listener in listeners:
        await listener.client.connect()
    await asyncio.gather(*(x.client.synced.wait() for x in listeners))
    typists = listeners[: args.typists]
    commenter = listeners[args.typists]
    others = [x for x in listeners if x is not commenter]
    probed = [x for x in listeners if x is not typists[0]]
    stop = asyncio.Event()
    typing = [
        asyncio.create_task(type_along(t.client, args.edit_rate, stop, random.Random(n)))
        for n, t in enumerate(typists)
    ]
    probing = asyncio.create_task(probe_edits(typists[0].client, probed, stop, 0.5))
    await asyncio.sleep(1.0)  # let the typing get going
    async with httpx2.AsyncClient(base_url=http_url, timeout=30) as http:
        marks = [await _mark(http)]
        fanout, missed = await comment_fanout(commenter, others, args.comments, rng)
        marks.append(await _mark(http))
        burst_senders = listeners[args.typists + 1 : args.typists + 1 + args.burst_clients]
        burst = await comment_burst(burst_senders, args.burst_per_client, args.window)
        marks.append(await _mark(http))
    stop.set()
    typed = sum(await asyncio.gather(*typing))
    probes = await probing
    for listener in listeners:
        await listener.client.close()
    phases = {}
    for name, (begin, end) in (("fanout", marks[0:2]), ("burst", marks[1:3])):
        seconds = end["at"] - begin["at"]
        phases[name] = {
            "seconds": round(seconds, 3),
            "server_cpu_percent": round(100 * (end["server"] - begin["server"]) / seconds, 1),
            "client_cpu_percent": round(100 * (end["client"] - begin["client"]) / seconds, 1),
        }
    during = {
        name: [ms for at, ms in probes if begin["at"] <= at < end["at"]]
        for name, (begin, end) in (("fanout", marks[0:2]), ("burst", marks[1:3]))
    }
    return {
        "comment_fanout_ms": {
            "count": len(fanout),
            "missed": missed,
            "p50": percentile(fanout, 50),
            "p99": percentile(fanout, 99),
            "max": max(fanout) if fanout else None,
            "mean": statistics.fmean(fanout) if fanout else None,
        },
        "edit_fanout_ms": {
            name: {
                "count": len(values),
                "p50": percentile(values, 50),
                "p99": percentile(values, 99),
                "max": max(values) if values else None,
            }
            for name, values in during.items()
        },
        "burst": burst,
        "phases": phases,
        "edits_typed": typed,
    }


async def _mark(http: httpx2.AsyncClient) -> dict[str, float]:
    """The time, the server's CPU seconds (``/healthz``) and this process's CPU seconds."""
    health = (await http.get("/healthz")).json()
    return {
        "at": time.perf_counter(),
        "server": float(health["cpu_seconds"]),
        "client": time.process_time(),
    }


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def table(result: dict[str, Any]) -> str:
    fan, burst = result["comment_fanout_ms"], result["burst"]
    edit, edit_burst = result["edit_fanout_ms"]["fanout"], result["edit_fanout_ms"]["burst"]
    params, phases = result["parameters"], result["phases"]
    rows = [
        "| measure | value |",
        "| --- | --- |",
        f"| clients in the document (events on) | {params['clients']} |",
        f"| typing | {params['typists']} clients x ~{params['edit_rate']} edits/s "
        f"({result['edits_typed']} edits) |",
        f"| relational store | {params['relational']} |",
        f"| comment fan-out p50 / p99 (ms, to the last of {params['clients'] - 1}) | "
        f"{_fmt(fan['p50'])} / {_fmt(fan['p99'])} ({fan['count']} comments, "
        f"{fan['missed']} missed) |",
        f"| edit fan-out p50 / p99 (ms, same phase) | {_fmt(edit['p50'])} / "
        f"{_fmt(edit['p99'])} ({edit['count']} probes) |",
        f"| server / client CPU, fan-out phase | {phases['fanout']['server_cpu_percent']}% / "
        f"{phases['fanout']['client_cpu_percent']}% |",
        f"| comments stored per second (burst) | {burst['stored_per_second']} "
        f"({burst['acked']}/{burst['sent']} acked in {burst['seconds']} s, "
        f"{burst['errors']} errors, {params['burst_clients']} clients x {params['window']} "
        "in flight) |",
        f"| edit fan-out p50 / p99 during the burst (ms) | {_fmt(edit_burst['p50'])} / "
        f"{_fmt(edit_burst['p99'])} ({edit_burst['count']} probes) |",
        f"| server / client CPU, burst | {phases['burst']['server_cpu_percent']}% / "
        f"{phases['burst']['client_cpu_percent']}% |",
    ]
    return "\n".join(rows)


def _migrate(data_dir: Path, postgres_url: str) -> None:
    env = {**os.environ, "COLLAB_POSTGRES_URL": postgres_url}
    command = [sys.executable, "-m", "server", "migrate", "--data-dir", str(data_dir)]
    subprocess.run(command, check=True, capture_output=True, text=True, env=env, timeout=120)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.bench_comments", description=__doc__)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--typists", type=int, default=5)
    parser.add_argument("--edit-rate", type=float, default=5.0, help="edits/s per typist")
    parser.add_argument("--comments", type=int, default=200, help="comments for the fan-out")
    parser.add_argument("--burst-clients", type=int, default=5)
    parser.add_argument("--burst-per-client", type=int, default=200)
    parser.add_argument("--window", type=int, default=32, help="unanswered comments per client")
    parser.add_argument("--postgres-url", help="a migrated or empty PostgreSQL database")
    parser.add_argument("--seed", type=int, default=6)
    args = parser.parse_args(argv)
    if args.clients < args.typists + 1 + args.burst_clients:
        parser.error("--clients must cover the typists, the commenter and the burst clients")
    two = (os.cpu_count() or 1) >= 2
    if two:
        os.sched_setaffinity(0, {1})
    env = {"COLLAB_LOG_LEVEL": "warning"}
    with tempfile.TemporaryDirectory(prefix="collab-bench-comments-") as tmp:
        data_dir = Path(tmp)
        if args.postgres_url:
            _migrate(data_dir, args.postgres_url)
            env["COLLAB_POSTGRES_URL"] = args.postgres_url
        with ServerProcess(data_dir, env=env, cpu=0 if two else None) as server:
            result = asyncio.run(run(args, server.http_url, server.ws_url))
    result["parameters"] = {
        "clients": args.clients,
        "typists": args.typists,
        "edit_rate": args.edit_rate,
        "comments": args.comments,
        "burst_clients": args.burst_clients,
        "burst_per_client": args.burst_per_client,
        "window": args.window,
        "relational": "postgresql" if args.postgres_url else "sqlite (embedded)",
    }
    result["machine"] = machine()
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"bench-comments-{stamp}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"\nJSON: {path}", file=sys.stderr)
    fan = result["comment_fanout_ms"]
    return 0 if fan["count"] and not fan["missed"] and result["burst"]["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
