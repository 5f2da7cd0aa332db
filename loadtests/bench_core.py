"""The collaboration-core benchmark (issue 2): ``python -m loadtests.bench_core``.

One run measures three scenarios, each against a fresh ``collab serve`` on its embedded
defaults (durable SQLite journal in a temporary directory), started here with
:class:`~loadtests.harness.ServerProcess`:

* A. ``core-a-one-room``: 1 room x 50 clients, 5 typing at 10 edits/s each, 20 s;
* B. ``core-b-many-rooms``: 100 rooms x 5 clients, 2 typing at 5 edits/s each, 20 s;
* C. ``core-c-idle``: 1,000 idle connections over 100 rooms: RSS with them open.

On a machine with two cores or more the server is pinned to CPU 0 and the generators (this
process and its workers) to CPU 1, so neither steals the other's cycles. The markdown table
goes to stdout, the JSON to ``loadtests/results/`` (git-ignored). Exit status 1 when a target
is missed, 3 when a run could not complete.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests.cli import progress_printer
from loadtests.harness import ServerProcess
from loadtests.monitor import ProcessMonitor
from loadtests.runner import RunError, RunOptions, RunResult, run_load
from loadtests.scenario import SCENARIO_DIR, LoadConfigError, load_scenario

RESULTS_DIR = Path(__file__).parent / "results"
TARGET_P99_MS = 50.0
TARGET_IDLE_RSS_BYTES = 150_000_000


@dataclass(frozen=True, slots=True)
class Part:
    key: str
    scenario: str


PARTS = (Part("A", "core-a-one-room"), Part("B", "core-b-many-rooms"), Part("C", "core-c-idle"))


@dataclass(slots=True)
class Measured:
    part: Part
    result: RunResult
    baseline_rss: int | None
    steal_percent: dict[str, float]

    @property
    def title(self) -> str:
        scenario = self.result.scenario
        if scenario.idle:
            return (
                f"{self.part.key}: {scenario.total_clients:,} idle connections over "
                f"{scenario.rooms} rooms, held {scenario.duration:g} s"
            )
        return (
            f"{self.part.key}: {scenario.rooms} room(s) x {scenario.clients_per_room} clients, "
            f"{scenario.writers_per_room} typing at {scenario.edits_per_second:g} edits/s each, "
            f"{scenario.duration:g} s"
        )


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def steal_ticks() -> dict[str, int]:
    """Per-CPU steal time (``/proc/stat``, in clock ticks): cycles a hypervisor took away."""
    ticks: dict[str, int] = {}
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            fields = line.split()
            if fields[0].startswith("cpu") and fields[0] != "cpu" and len(fields) > 8:
                ticks[fields[0]] = int(fields[8])
    except (OSError, ValueError):
        pass
    return ticks


def steal_percent(
    before: dict[str, int], after: dict[str, int], seconds: float
) -> dict[str, float]:
    hertz = os.sysconf("SC_CLK_TCK")
    return {
        cpu: round(100 * (after[cpu] - before[cpu]) / hertz / seconds, 1)
        for cpu in after
        if cpu in before and seconds > 0
    }


def run_part(
    part: Part, workers: int, server_cpu: int | None, overrides: dict[str, Any]
) -> Measured:
    scenario = load_scenario(SCENARIO_DIR / f"{part.scenario}.toml", overrides)
    with (
        tempfile.TemporaryDirectory(prefix="collab-bench-") as data_dir,
        ServerProcess(Path(data_dir), cpu=server_cpu) as server,
    ):
        # The RSS of a server that has answered /healthz and holds no connection yet.
        baseline = ProcessMonitor(server.pid).rss_bytes()
        options = RunOptions(workers=workers, server_pid=server.pid, progress=progress_printer())
        steal_before, started = steal_ticks(), time.monotonic()
        result = run_load(scenario, server.ws_url, options)
        steal = steal_percent(steal_before, steal_ticks(), time.monotonic() - started)
    return Measured(part, result, baseline, steal)


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} us"


def _mb(value: int | None) -> str:
    return "-" if value is None else f"{value / 1e6:.1f} MB"


def editing_table(rows: Sequence[Measured]) -> str:
    lines = [
        "| scenario | fan-out p50 | fan-out p99 (target < 50 ms) | max "
        "| updates delivered/s (edit x receiver) "
        "| edits sent/s | server CPU (% of one core) | server CPU per frame | server RSS at end "
        "| converged (target 100%) | generator CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        result = row.result
        server = result.server or {}
        convergence = result.convergence
        share = 100 * convergence["converged"] / convergence["rooms"]
        p99 = result.fanout.p99
        lines.append(
            f"| {row.title} | {_ms(result.fanout.p50)} "
            f"| {_ms(p99)} ({_verdict(p99 < TARGET_P99_MS)}) | {_ms(result.fanout.max)} "
            f"| {result.edits['delivered_per_second']:.0f} | {result.edits['sent_per_second']:.0f} "
            f"| {server.get('cpu_percent_of_core')}% | {_us(server.get('cpu_us_per_frame'))} "
            f"| {_mb(server.get('rss_bytes_end'))} "
            f"| {share:.0f}% of {convergence['rooms']} rooms ({_verdict(result.converged)}) "
            f"| {result.generator['cpu_percent_of_core']}% |"
        )
    return "\n".join(lines)


def idle_table(row: Measured) -> str:
    result = row.result
    server = result.server or {}
    rss = server.get("rss_bytes_end")
    connections = result.clients["connected"]
    per_connection = "-"
    if rss is not None and row.baseline_rss is not None and connections:
        per_connection = f"{(rss - row.baseline_rss) / connections / 1e3:.1f} KB"
    ok = rss is not None and rss < TARGET_IDLE_RSS_BYTES
    return "\n".join(
        [
            "| scenario | connections open | server RSS before | server RSS with them open "
            "(target < 150 MB) | RSS per connection | connect p50 / p99 |",
            "|---|---|---|---|---|---|",
            f"| {row.title} | {connections} / {result.clients['planned']} "
            f"| {_mb(row.baseline_rss)} | {_mb(rss)} ({_verdict(ok)}) | {per_connection} "
            f"| {_ms(result.clients['connect_ms']['p50'])} / "
            f"{_ms(result.clients['connect_ms']['p99'])} |",
        ]
    )


def targets_met(rows: Sequence[Measured]) -> bool:
    ok = True
    for row in rows:
        result = row.result
        if row.part.key == "C":
            rss = (result.server or {}).get("rss_bytes_end")
            ok = ok and rss is not None and rss < TARGET_IDLE_RSS_BYTES
        else:
            ok = ok and result.fanout.p99 < TARGET_P99_MS
        ok = ok and result.converged and result.clients["connected"] == result.clients["planned"]
    return ok


def _pin(generator_cpu: int | None) -> tuple[int | None, int | None]:
    """Server on CPU 0, generators (this process, inherited by workers) on CPU 1."""
    if generator_cpu is None or len(os.sched_getaffinity(0)) < 2:
        return None, None
    os.sched_setaffinity(0, {generator_cpu})
    return 0, generator_cpu


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.bench_core",
        description="The collaboration-core benchmark (issue 2): parts A, B and C, each against "
        "a fresh 'collab serve' on embedded defaults; server on CPU 0, generators on CPU 1. "
        "See docs/benchmarks.md.",
    )
    parser.add_argument("--parts", default="ABC", help="which parts to run (default ABC)")
    parser.add_argument("--workers", type=int, default=2, help="generator processes (2)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and generators")
    parser.add_argument("--duration", type=float, help="override A and B's 20 s (quick checks)")
    parser.add_argument("--out", type=Path, help="JSON file (default loadtests/results/...)")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "loadtests.bench_core", *(argv or sys.argv[1:])])
    info = machine()
    server_cpu, generator_cpu = _pin(None if args.no_pin else 1)
    rows: list[Measured] = []
    try:
        for part in PARTS:
            if part.key not in args.parts.upper():
                continue
            overrides = {"duration": args.duration} if args.duration and part.key != "C" else {}
            print(f"== part {part.key}: {part.scenario}", file=sys.stderr)
            rows.append(run_part(part, args.workers, server_cpu, overrides))
    except (RunError, LoadConfigError, RuntimeError) as exc:
        print(f"bench_core: the run failed: {exc}", file=sys.stderr)
        return 3
    info.update(server_cpu=server_cpu, generator_cpu=generator_cpu, workers=args.workers)
    print(render(rows, info, command))
    out = args.out or RESULTS_DIR / (
        "bench_core-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S") + ".json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": "collaboration core (issue 2)",
        "command": command,
        "machine": info,
        "targets": {"fanout_p99_ms": TARGET_P99_MS, "idle_rss_bytes": TARGET_IDLE_RSS_BYTES},
        "targets_met": targets_met(rows),
        "parts": {
            row.part.key: {
                "baseline_rss_bytes": row.baseline_rss,
                "cpu_steal_percent": row.steal_percent,
                **row.result.to_json(),
            }
            for row in rows
        },
    }
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nJSON: {out}")
    return 0 if targets_met(rows) else 1


def render(rows: Sequence[Measured], info: dict[str, Any], command: str) -> str:
    lines = [
        f"Machine: {info['nproc']} CPUs ({info['cpu_model']}), Python {info['python']}; "
        f"server pinned to CPU {info['server_cpu']}, generators to CPU {info['generator_cpu']} "
        f"({info['workers']} worker processes).",
        f"Command: `{command}`",
        "",
    ]
    editing = [row for row in rows if row.part.key != "C"]
    if editing:
        lines += [editing_table(editing), ""]
    lines += [idle_table(row) for row in rows if row.part.key == "C"]
    steal = "; ".join(
        f"{row.part.key}: "
        + ", ".join(f"{cpu} {value:g}%" for cpu, value in sorted(row.steal_percent.items()))
        for row in rows
    )
    lines.append(f"\nCPU steal time (hypervisor) during each part: {steal or 'unknown'}")
    lines.append(f"All targets met: {'yes' if targets_met(rows) else 'NO'}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
