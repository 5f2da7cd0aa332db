"""Hostile frames against a real server: ``python -m loadtests.bench_hostile``.

Two parts, each against a fresh ``collab serve`` on embedded defaults (insecure-dev mode, rate
limits out of the way), started here with :class:`~loadtests.harness.ServerProcess` on
loopback:

* **bombs**: ``--connections`` sockets each send ``--rounds`` frame bombs, one per connection
  (the server closes a socket on its first bomb, so each round reconnects): a state vector
  claiming 900 million entries, an update header claiming 400 million clients, a delete set
  claiming 400 million ranges, in turn. Meanwhile a probe thread asks ``/healthz`` back to
  back; its worst and p99 latency are the measure (target: p99 under 100 ms). For
  comparison the same probe runs first on the idle server, then under the same connection
  churn with a harmless frame instead of the bomb (each bomb uses up a connection, and
  connecting is what costs the server most here).
* **fuzz**: ``--fuzz-frames`` malformed frames (valid sync frames bit-flipped, truncated,
  their CRDT payload mutated and re-wrapped, random bytes) over ``--fuzz-connections``
  sockets. After each frame the client asks for awareness (a frame the server always answers)
  and waits for that answer or the close, so every frame is known to be handled. Reported:
  frames handled per second, the close codes, and the server's CPU seconds per frame
  (psutil), also net of the cost of the connection each refused frame uses up (measured on
  the same server by opening and closing as many connections).
* **validator cost** (no server): the time :func:`protocol.yupdate.validate_update` takes on
  one keystroke's update and on a whole document of 20,000 keystrokes as one update, beside
  what pycrdt takes to apply the same bytes to a new document.

Both parts stop at ``--deadline`` seconds whatever is left. The markdown goes to stdout, the
JSON to ``loadtests/results/`` (git-ignored). Exit status 1 when the target is missed, 3 when
a run could not complete (a frame left unanswered, a bomb not closed with 1007).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import random
import shlex
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import psutil
import pycrdt
import websockets

from loadtests.bench_core import RESULTS_DIR, machine
from loadtests.harness import ServerProcess
from protocol.errors import MalformedUpdate
from protocol.varint import encode_varbytes, encode_varuint
from protocol.ysync import QueryAwareness, SyncStep1, SyncStep2, SyncUpdate, encode
from protocol.yupdate import validate_state_vector, validate_update

TARGET_P99_MS = 100.0
ANSWER_TIMEOUT = 10.0
QUERY_AWARENESS = encode(QueryAwareness())
MESSAGE_AWARENESS = 1

BOMBS: dict[str, bytes] = {
    "state vector claiming 900 million entries": bytes.fromhex("00000780d293ad030101"),
    "update header claiming 400 million clients": encode(
        SyncUpdate(encode_varuint(400_000_000) + b"\x01\x01\x01")
    ),
    "delete set claiming 400 million ranges": encode(
        SyncUpdate(b"\x00\x01\x07" + encode_varuint(400_000_000) + b"\x01\x01")
    ),
}


class HealthProbe:
    """A thread asking ``/healthz`` back to back until stopped (the request in flight then is
    the last); latencies in seconds."""

    def __init__(self, url: str) -> None:
        self.url = url + "/healthz"
        self.latencies: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="healthz probe", daemon=True)

    def _run(self) -> None:
        # At least one request, even when the work it watches ends before the thread runs.
        with httpx2.Client(timeout=30) as http:
            while True:
                started = time.perf_counter()
                try:
                    ok = http.get(self.url).status_code == 200
                except httpx2.HTTPError:
                    ok = False
                self.latencies.append(time.perf_counter() - started)
                self.failures += not ok
                if self._stop.is_set():
                    return

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        if not ordered:
            return {"requests": 0, "failures": self.failures}
        return {
            "requests": len(ordered),
            "failures": self.failures,
            "p50_ms": _percentile(ordered, 50) * 1e3,
            "p99_ms": _percentile(ordered, 99) * 1e3,
            "max_ms": ordered[-1] * 1e3,
        }


def _percentile(ordered: list[float], percent: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * percent / 100))]


def _idle_probe(url: str, requests: int) -> dict[str, Any]:
    probe = HealthProbe(url)
    with httpx2.Client(timeout=30) as http:
        for _ in range(requests):
            started = time.perf_counter()
            probe.failures += http.get(probe.url).status_code != 200
            probe.latencies.append(time.perf_counter() - started)
    return probe.summary()


async def _drain_until_closed(ws: websockets.ClientConnection) -> int | None:
    """Read (and drop) what the server sends until it closes; its close code."""
    try:
        async with asyncio.timeout(ANSWER_TIMEOUT):
            async for _ in ws:
                pass
    except websockets.ConnectionClosed:
        pass
    except TimeoutError:
        return None
    return ws.close_code


# -- part a: bombs ------------------------------------------------------------------------


@dataclass
class BombResult:
    sent: Counter[str] = field(default_factory=Counter)
    close_codes: Counter[int] = field(default_factory=Counter)
    close_seconds: list[float] = field(default_factory=list)


async def _bomber(
    url: str, rounds: int, offset: int, deadline: float, out: BombResult, harmless: bool
) -> None:
    """``rounds`` connections one after the other, each sending one bomb and reading until
    the server closes it; with ``harmless``, a frame the server answers instead, after which
    the client closes (the same connection churn without the bombs, for comparison)."""
    kinds = list(BOMBS)
    for index in range(rounds):
        if time.monotonic() > deadline:
            return
        kind = "harmless" if harmless else kinds[(offset + index) % len(kinds)]
        async with websockets.connect(url, max_size=None, compression=None) as ws:
            started = time.perf_counter()
            if harmless:
                code = 1000 if await _answer(ws) == "accepted" else None
            else:
                await ws.send(BOMBS[kind])
                code = await _drain_until_closed(ws)
        out.close_seconds.append(time.perf_counter() - started)
        out.sent[kind] += 1
        out.close_codes[code if code is not None else -1] += 1


def _bomb_round(
    server: ServerProcess, connections: int, rounds: int, deadline: float, harmless: bool
) -> tuple[BombResult, HealthProbe, float]:
    out = BombResult()
    url = f"{server.ws_url}/hostile/bombs"
    started = time.perf_counter()
    with HealthProbe(server.http_url) as probe:
        stop_at = time.monotonic() + deadline

        async def bomb_all() -> None:
            await asyncio.gather(
                *(
                    _bomber(url, rounds, index, stop_at, out, harmless)
                    for index in range(connections)
                )
            )

        asyncio.run(bomb_all())
    return out, probe, time.perf_counter() - started


def run_bombs(
    server: ServerProcess, connections: int, rounds: int, deadline: float
) -> dict[str, Any]:
    idle = _idle_probe(server.http_url, 200)
    _, churn_probe, churn_seconds = _bomb_round(server, connections, rounds, deadline, True)
    out, probe, elapsed = _bomb_round(server, connections, rounds, deadline, False)
    closes = sorted(out.close_seconds)
    return {
        "connections": connections,
        "rounds": rounds,
        "bombs_sent": sum(out.sent.values()),
        "by_kind": dict(out.sent),
        "close_codes": {str(code): count for code, count in out.close_codes.items()},
        "seconds": elapsed,
        "close_ms": {
            "p50": _percentile(closes, 50) * 1e3 if closes else None,
            "p99": _percentile(closes, 99) * 1e3 if closes else None,
            "max": closes[-1] * 1e3 if closes else None,
        },
        "healthz_idle": idle,
        "healthz_same_churn_harmless": {**churn_probe.summary(), "seconds": churn_seconds},
        "healthz_under_bombs": probe.summary(),
    }


# -- part b: fuzz -------------------------------------------------------------------------


def _seed_frames(rng: random.Random) -> list[bytes]:
    """Valid sync frames of a few documents: updates, step 2 and state vectors."""
    frames: list[bytes] = []
    for _ in range(8):
        doc: pycrdt.Doc[Any] = pycrdt.Doc()
        text = doc.get("content", type=pycrdt.Text)
        updates: list[bytes] = []
        doc.observe(lambda event, into=updates: into.append(event.update))
        for _ in range(rng.randint(1, 6)):
            text.insert(0, rng.choice(["a", "word ", "é", "🎉", "line\n"]))
        doc.get("meta", type=pycrdt.Map)["k"] = rng.choice([1.5, "v", [1, {"x": None}]])
        del text[0:1]
        frames += [encode(SyncUpdate(update)) for update in updates]
        frames += [encode(SyncStep2(doc.get_update())), encode(SyncStep1(doc.get_state()))]
    return frames


def _mutate(rng: random.Random, seeds: list[bytes]) -> tuple[str, bytes]:
    frame = bytearray(rng.choice(seeds))
    kind = rng.choice(("bit-flip", "truncate", "payload", "random"))
    if kind == "bit-flip":
        for _ in range(rng.randint(1, 3)):
            frame[rng.randrange(len(frame))] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        frame = frame[: rng.randrange(len(frame))]
    elif kind == "payload":
        # Keep the frame well-formed; mutate the CRDT payload inside (what the validator sees).
        payload = bytearray(frame[3:] if frame[2] < 0x80 else frame[4:])
        if payload:
            for _ in range(rng.randint(1, 3)):
                payload[rng.randrange(len(payload))] = rng.randrange(256)
            if rng.random() < 0.3:
                payload = payload[: rng.randrange(len(payload))]
        frame = bytearray(frame[:2] + encode_varbytes(bytes(payload)))
    else:
        frame = bytearray(rng.randbytes(rng.randint(1, 64)))
    return kind, bytes(frame)


@dataclass
class FuzzResult:
    sent: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    connections: int = 0


async def _answer(ws: websockets.ClientConnection) -> str:
    """Ask for awareness after a frame: ``accepted`` on the answer, else the close code."""
    try:
        await ws.send(QUERY_AWARENESS)
        async with asyncio.timeout(ANSWER_TIMEOUT):
            async for message in ws:
                if isinstance(message, bytes) and message[:1] == bytes((MESSAGE_AWARENESS,)):
                    return "accepted"
    except websockets.ConnectionClosed:
        pass
    except TimeoutError:
        return "unanswered"
    return f"closed {ws.close_code}"


async def _fuzzer(
    url: str, frames: list[tuple[str, bytes]], deadline: float, out: FuzzResult
) -> None:
    ws: websockets.ClientConnection | None = None
    try:
        for kind, frame in frames:
            if time.monotonic() > deadline:
                return
            if ws is None:
                ws = await websockets.connect(url, max_size=None, compression=None)
                out.connections += 1
            with contextlib.suppress(websockets.ConnectionClosed):
                await ws.send(frame)
            outcome = await _answer(ws)
            out.sent[kind] += 1
            out.outcomes[outcome] += 1
            if outcome != "accepted":
                await ws.close()
                ws = None
    finally:
        if ws is not None:
            await ws.close()


async def _open_and_close(url: str, count: int) -> None:
    for _ in range(count):
        async with websockets.connect(url, max_size=None, compression=None) as ws:
            if await _answer(ws) != "accepted":
                raise RuntimeError("the baseline connection was not answered")


def run_fuzz(
    server: ServerProcess, frames: int, connections: int, deadline: float, seed: int
) -> dict[str, Any]:
    rng = random.Random(seed)
    seeds = _seed_frames(rng)
    planned = [_mutate(rng, seeds) for _ in range(frames)]
    share = [planned[index::connections] for index in range(connections)]
    out = FuzzResult()
    process = psutil.Process(server.pid)
    cpu_before = sum(process.cpu_times()[:2])
    started = time.perf_counter()
    stop_at = time.monotonic() + deadline

    async def fuzz_all() -> None:
        await asyncio.gather(
            *(
                _fuzzer(f"{server.ws_url}/fuzz/c{index}", frames_of, stop_at, out)
                for index, frames_of in enumerate(share)
            )
        )

    asyncio.run(fuzz_all())
    elapsed = time.perf_counter() - started
    cpu_fuzz = sum(process.cpu_times()[:2]) - cpu_before
    handled = sum(out.sent.values())
    # What a connection alone costs the server (handshake, room join, query, close).
    baseline_count = max(1, out.connections)
    cpu_before = sum(process.cpu_times()[:2])
    per_task = max(1, baseline_count // connections)

    async def baseline() -> None:
        await asyncio.gather(
            *(
                _open_and_close(f"{server.ws_url}/fuzz/c{index}", per_task)
                for index in range(connections)
            )
        )

    asyncio.run(baseline())
    cpu_per_connection = (sum(process.cpu_times()[:2]) - cpu_before) / (per_task * connections)
    net = cpu_fuzz - out.connections * cpu_per_connection
    return {
        "frames_planned": frames,
        "frames_handled": handled,
        "connections_used": out.connections,
        "by_kind": dict(out.sent),
        "outcomes": dict(out.outcomes),
        "seconds": elapsed,
        "frames_per_second": handled / elapsed if elapsed else None,
        "server_cpu_seconds": cpu_fuzz,
        "server_cpu_us_per_frame": cpu_fuzz / handled * 1e6 if handled else None,
        "server_cpu_us_per_connection": cpu_per_connection * 1e6,
        "server_cpu_us_per_frame_net_of_connections": net / handled * 1e6 if handled else None,
    }


# -- part c: what the validator costs on the hot path ---------------------------------------


def _typing_updates(count: int, seed: int) -> tuple[bytes, bytes]:
    """One keystroke's update after ``count`` of them, and the whole document as one update
    (a client's first sync step 2, or a stored snapshot)."""
    rng = random.Random(seed)
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    text = doc.get("content", type=pycrdt.Text)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    for index in range(count):
        at = rng.randint(0, len(text)) if index % 3 == 0 else len(text)
        text.insert(at, "typing some words "[index % 18] * rng.randint(1, 3))
        if index % 7 == 0 and len(text) > 4:
            start = at % (len(text) - 2)
            del text[start : start + 2]
    text.insert(len(text), "x")  # the keystroke measured: typing at the end of the text
    return updates[-1], doc.get_update()


def _per_call(function: Any, argument: bytes, seconds: float) -> float:
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        function(argument)
        calls += 1
    return (time.perf_counter() - started) / calls


def _refusal(payload: bytes, state_vector: bool) -> None:
    try:
        (validate_state_vector if state_vector else validate_update)(payload)
    except MalformedUpdate:
        return
    raise RuntimeError("the validator accepted a bomb")


def run_validator_cost(seconds: float = 1.0) -> dict[str, Any]:
    """Seconds per call of the validator and of pycrdt's own decode+apply, same bytes; and
    of the validator refusing each bomb's payload (pycrdt is not run on those: a gigabyte and
    a second or two each)."""
    small, large = _typing_updates(20_000, 7)
    result: dict[str, Any] = {}
    for name, update in (("typing", small), ("large", large)):
        result[name] = {
            "bytes": len(update),
            "validate_us": _per_call(validate_update, update, seconds) * 1e6,
            "pycrdt_apply_us": _per_call(
                lambda data: pycrdt.Doc().apply_update(data), update, seconds
            )
            * 1e6,
        }
    for name, frame in BOMBS.items():
        payload = frame[3:]  # message type, sync type, one-byte length: the payload
        is_state_vector = frame[1] == 0
        result[name] = {
            "bytes": len(payload),
            "validate_us": _per_call(
                lambda data, sv=is_state_vector: _refusal(data, sv), payload, seconds / 4
            )
            * 1e6,
            "pycrdt_apply_us": None,
        }
    return result


# -- report -------------------------------------------------------------------------------


def _us(value: float | None) -> str:
    return "not run" if value is None else f"{value:.1f} us"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def render(
    bombs: dict[str, Any],
    fuzz: dict[str, Any],
    cost: dict[str, Any],
    info: dict[str, Any],
    command: str,
) -> str:
    health, idle = bombs["healthz_under_bombs"], bombs["healthz_idle"]
    churn = bombs["healthz_same_churn_harmless"]
    met = _bombs_target_met(bombs)
    codes = ", ".join(f"{code}: {count}" for code, count in sorted(bombs["close_codes"].items()))
    outcomes = ", ".join(f"{what}: {count}" for what, count in sorted(fuzz["outcomes"].items()))
    lines = [
        f"Machine: {info['nproc']} CPUs ({info['cpu_model']}), Python {info['python']}; "
        f"server CPU {info.get('server_cpu')}, generator CPU {info.get('generator_cpu')}.",
        f"Command: `{command}`",
        "",
        "| bombs | sent | close codes | close p50 / p99 / max | /healthz requests | "
        "/healthz p50 | /healthz p99 (target < 100 ms) | /healthz worst "
        "| same churn, harmless frames: p99 / worst | idle: p99 / worst |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {bombs['connections']} connections x {bombs['rounds']} rounds "
        f"| {bombs['bombs_sent']} in {bombs['seconds']:.1f} s | {codes} "
        f"| {_ms(bombs['close_ms']['p50'])} / {_ms(bombs['close_ms']['p99'])} / "
        f"{_ms(bombs['close_ms']['max'])} | {health['requests']} ({health['failures']} failed) "
        f"| {_ms(health.get('p50_ms'))} | {_ms(health.get('p99_ms'))} "
        f"({'met' if met else 'MISSED'}) | {_ms(health.get('max_ms'))} "
        f"| {_ms(churn.get('p99_ms'))} / {_ms(churn.get('max_ms'))} "
        f"| {_ms(idle.get('p99_ms'))} / {_ms(idle.get('max_ms'))} |",
        "",
        "| fuzz | frames handled | outcomes | frames/s | server CPU per frame | "
        "per connection (baseline) | per frame net of its connection |",
        "|---|---|---|---|---|---|---|",
        f"| {fuzz['frames_planned']} frames, {fuzz['connections_used']} connections used "
        f"| {fuzz['frames_handled']} in {fuzz['seconds']:.1f} s | {outcomes} "
        f"| {fuzz['frames_per_second']:.0f} | {fuzz['server_cpu_us_per_frame']:.0f} us "
        f"| {fuzz['server_cpu_us_per_connection']:.0f} us "
        f"| {fuzz['server_cpu_us_per_frame_net_of_connections']:.0f} us |",
        "",
        "| payload | bytes | validator | pycrdt: new doc + apply_update |",
        "|---|---|---|---|",
        *(
            f"| {name} | {row['bytes']} | {row['validate_us']:.1f} us "
            f"| {_us(row['pycrdt_apply_us'])} |"
            for name, row in cost.items()
        ),
    ]
    return "\n".join(lines)


def _bombs_target_met(bombs: dict[str, Any]) -> bool:
    p99 = bombs["healthz_under_bombs"].get("p99_ms")
    return p99 is not None and p99 < TARGET_P99_MS


def _complete(bombs: dict[str, Any], fuzz: dict[str, Any]) -> str | None:
    """Why the run cannot be trusted, or None."""
    if bombs["close_codes"] != {"1007": bombs["bombs_sent"]}:
        return f"bombs were not all closed with 1007: {bombs['close_codes']}"
    if bombs["healthz_under_bombs"]["failures"]:
        return "/healthz failed under the bombs"
    if fuzz["outcomes"].get("unanswered"):
        return f"{fuzz['outcomes']['unanswered']} fuzz frames were never answered"
    if not fuzz["frames_handled"]:
        return "no fuzz frame was handled"
    return None


def _pin() -> tuple[int | None, int | None]:
    if len(os.sched_getaffinity(0)) < 2:
        return None, None
    os.sched_setaffinity(0, {1})
    return 0, 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.bench_hostile",
        description="Frame bombs and fuzzed frames against a fresh 'collab serve': /healthz "
        "latency under bombs, malformed frames handled per second and server CPU per frame. "
        "See docs/benchmarks.md.",
    )
    parser.add_argument("--connections", type=int, default=10, help="bomb sockets (10)")
    parser.add_argument("--rounds", type=int, default=100, help="bombs per socket (100)")
    parser.add_argument("--fuzz-frames", type=int, default=5000, help="fuzzed frames (5000)")
    parser.add_argument("--fuzz-connections", type=int, default=50, help="fuzz sockets (50)")
    parser.add_argument("--deadline", type=float, default=120.0, help="seconds per part (120)")
    parser.add_argument("--seed", type=int, default=1, help="fuzz seed (1)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and generator")
    parser.add_argument("--out", type=Path, help="JSON file (default loadtests/results/...)")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "loadtests.bench_hostile", *(argv or sys.argv[1:])])
    info = machine()
    server_cpu, generator_cpu = (None, None) if args.no_pin else _pin()
    info.update(server_cpu=server_cpu, generator_cpu=generator_cpu)
    try:
        with tempfile.TemporaryDirectory(prefix="collab-bench-hostile-") as tmp:
            print("== bombs", file=sys.stderr)
            with ServerProcess(Path(tmp) / "bombs", cpu=server_cpu) as server:
                bombs = run_bombs(server, args.connections, args.rounds, args.deadline)
            print("== fuzz", file=sys.stderr)
            with ServerProcess(Path(tmp) / "fuzz", cpu=server_cpu) as server:
                fuzz = run_fuzz(
                    server, args.fuzz_frames, args.fuzz_connections, args.deadline, args.seed
                )
    except (OSError, RuntimeError, websockets.WebSocketException) as exc:
        print(f"bench_hostile: the run failed: {exc}", file=sys.stderr)
        return 3
    print("== validator cost", file=sys.stderr)
    cost = run_validator_cost()
    print(render(bombs, fuzz, cost, info, command))
    out = args.out or RESULTS_DIR / (
        "bench_hostile-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S") + ".json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    problem = _complete(bombs, fuzz)
    document = {
        "benchmark": "hostile frames",
        "command": command,
        "machine": info,
        "targets": {"healthz_p99_ms_under_bombs": TARGET_P99_MS},
        "targets_met": _bombs_target_met(bombs),
        "problem": problem,
        "bombs": bombs,
        "fuzz": fuzz,
        "validator_cost": cost,
    }
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nJSON: {out}", file=sys.stderr)
    if problem is not None:
        print(f"bench_hostile: {problem}", file=sys.stderr)
        return 3
    return 0 if document["targets_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
