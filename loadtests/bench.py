"""The side-by-side benchmark (issue 7): ``python -m loadtests.bench``.

The same scenarios, in one run, against collab on embedded defaults, collab with a real Redis
and PostgreSQL (throwaway servers from this machine's binaries; the content store stays
embedded SQLite), pycrdt-websocket, the Node reference ``@y/websocket-server`` and a bare
broadcast relay (:mod:`loadtests.peers`). A server whose binaries or packages are missing is
reported unavailable, with the reason, and the others still run. Each server is started fresh
for every measurement, pinned to CPU 0 (collab's Redis and PostgreSQL float over every CPU and
are not counted in its CPU and RSS figures); this process and its generator workers are
pinned to CPU 1. Measurements are interleaved (scenario, then repeat,
then server) so that a noisy minute of the machine hits every server alike. Short scenarios
repeat (``--repeat``, default 3) and the report gives medians, and the ratio of collab to each
other server on the scenario's key figure. The key efficiency figure is the server's CPU time
per frame it sent (process CPU seconds over the window / frames the clients received).

The markdown table goes to stdout and, with the JSON of every run, to
``loadtests/results/`` (git-ignored). Exit status: 0 done, 3 collab itself could not be run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtests.bench_core import RESULTS_DIR, machine, steal_percent, steal_ticks
from loadtests.bench_report import BenchScenario, Figures, brief, render
from loadtests.cli import progress_printer
from loadtests.coldload import ColdLoadResult
from loadtests.kinds import AnyResult, SaturationResult, generator_bound, run_scenario
from loadtests.monitor import ProcessMonitor
from loadtests.peers import PEER_NAMES, PeerSpec, PeerUnavailableError, peer
from loadtests.runner import RunError, RunOptions, RunResult
from loadtests.scenario import SCENARIO_DIR, LoadConfigError, Scenario, load_scenario

_WARMUP = 2.0
REFERENCE_RATE = 10.0
"""The saturation stage (edits/s per writer: 100 edits/s into 210 clients) whose CPU per
frame every server is compared on: the load of the "Measured" table of DESIGN.md."""


SCENARIOS = (
    BenchScenario(
        "rooms",
        "bench-rooms",
        "10 rooms x 5 clients, 2 writers at 5 edits/s",
        quick={"duration": 3.0},
    ),
    BenchScenario(
        "room50",
        "bench-room50",
        "1 room x 50 clients, 5 writers at 5 edits/s",
        quick={"duration": 3.0},
    ),
    BenchScenario(
        "room50-cursors",
        "bench-room50-cursors",
        "1 room x 50 clients, 5 writers at 5 edits/s + a cursor update per edit",
        quick={"duration": 3.0},
    ),
    BenchScenario(
        "saturation",
        "bench-saturation",
        "1 room x (10 writers + 200 passive listeners), writers' rate stepped up",
        repeats=False,
        quick={"duration": 2.0, "stage_rates": [10.0, 40.0, 100.0]},
    ),
    BenchScenario(
        "idle-1000",
        "bench-idle-1000",
        "1,000 idle connections over 100 rooms",
        repeats=False,
        quick={"duration": 1.0, "ramp_up": 1.0},
    ),
    BenchScenario(
        "idle-5000",
        "bench-idle-5000",
        "5,000 idle connections over 100 rooms",
        repeats=False,
        quick={"duration": 1.0, "ramp_up": 3.0},
    ),
    BenchScenario(
        "cold-load",
        "cold-load",
        "cold load: 20,000 one-character edits, then 5 late joiners",
        quick={"history_edits": 5000, "late_joiners": 3},
    ),
    BenchScenario("herd", "herd", "herd: 50 clients join 5 new rooms at the same instant"),
)
SCENARIO_KEYS = tuple(item.key for item in SCENARIOS)


@dataclass(slots=True)
class Measurement:
    scenario: str
    server: str
    repeat: int
    status: str
    figures: Figures
    result: dict[str, Any] | None = None
    steal: dict[str, float] = field(default_factory=dict)


def _num(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def figures_of(result: AnyResult, baseline_rss: int | None) -> Figures:
    """The numbers the tables compare, drawn from one result of any kind."""
    if isinstance(result, SaturationResult):
        return _saturation_figures(result)
    if isinstance(result, ColdLoadResult):
        join = result.join
        server = result.server or {}
        return {
            "ingest_edits_per_s": result.ingest_edits_per_second,
            "join_p50_ms": _num(join.p50) if result.joins_checked else None,
            "join_max_ms": _num(join.max) if result.joins_checked else None,
            "us_per_edit": _num(server.get("cpu_us_per_edit")),
            "converged": float(result.converged),
        }
    return _run_figures(result, baseline_rss)


def _run_figures(result: RunResult, baseline_rss: int | None) -> Figures:
    server = result.server or {}
    connect = result.clients["connect_ms"]
    scenario = result.scenario
    if scenario.idle:
        rss = server.get("rss_bytes_end")
        connected = result.clients["connected"]
        per = None
        if rss is not None and baseline_rss is not None and connected:
            per = (rss - baseline_rss) / connected / 1e3
        return {
            "connected": float(connected),
            "rss_before_mb": None if baseline_rss is None else baseline_rss / 1e6,
            "rss_open_mb": None if rss is None else rss / 1e6,
            "kb_per_connection": per,
            "connect_p99_ms": _num(connect["p99"]),
        }
    if scenario.kind == "herd":
        return {
            "connected": float(result.clients["connected"]),
            "connect_p50_ms": _num(connect["p50"]),
            "connect_p99_ms": _num(connect["p99"]),
            "connect_max_ms": _num(connect["max"]),
            "sync_p99_ms": _num(result.clients["sync_ms"]["p99"]),
            "converged": float(result.converged),
        }
    return {
        "p50_ms": _num(result.fanout.p50),
        "p99_ms": _num(result.fanout.p99),
        "max_ms": _num(result.fanout.max),
        "edits_per_s": result.edits["sent_per_second"],
        "frames_per_s": result.edits["frames_in_window"] / result.window_seconds,
        "server_cpu_pct": _num(server.get("cpu_percent_of_core")),
        "us_per_frame": _num(server.get("cpu_us_per_frame")),
        "generator_cpu_pct": result.generator["cpu_percent_of_core"],
        "converged": float(result.converged),
        "errors": float(sum(result.errors.values())),
    }


def _saturation_figures(result: SaturationResult) -> Figures:
    last = result.last_good
    failing = [stage for stage in result.stages if not stage.good]
    figures: Figures = {
        "saturated": float(result.saturated),
        "generator_bound": float(bool(failing) and generator_bound(failing[0].result)),
    }
    if last is None:
        return figures
    for stage in result.stages:
        if stage.rate == REFERENCE_RATE:
            reference = stage.to_json()
            figures["us_per_frame_at_100"] = _num(reference["server_cpu_us_per_frame"])
            figures["p99_at_100"] = _num(reference["fanout_ms"]["p99"])
    row = last.to_json()
    figures.update(
        edits_per_s=row["edits_sent_per_second"],
        frames_per_s=float(row["frames_per_second"]),
        deliveries_per_s=row["deliveries_per_second"],
        p99_ms=_num(row["fanout_ms"]["p99"]),
        us_per_frame=_num(row["server_cpu_us_per_frame"]),
        server_cpu_pct=_num(row["server_cpu_percent"]),
        generator_cpu_pct=row["generator_cpu_percent"],
    )
    return figures


def not_applicable(spec: PeerSpec, scenario: Scenario) -> str | None:
    """Why a scenario cannot measure this server, or None."""
    if spec.stateless and scenario.kind == "cold_load":
        return "joins n/a: the relay keeps no document, so a late joiner starts empty"
    return None


class Bench:
    def __init__(self, args: argparse.Namespace, say: Callable[[str], None]) -> None:
        self.args = args
        self.say = say
        self.progress = None if args.quiet else progress_printer()
        self.measurements: list[Measurement] = []
        self.unavailable: dict[str, str] = {}

    def run(self, scenarios: Sequence[BenchScenario], servers: Sequence[PeerSpec]) -> None:
        ready = []
        for spec in servers:
            try:
                spec.prepare()
                ready.append(spec)
            except PeerUnavailableError as exc:
                self.unavailable[spec.name] = str(exc)
                self.say(f"[{spec.name}] {exc}")
        for item in scenarios:
            scenario = load_scenario(SCENARIO_DIR / f"{item.file}.toml", self.overrides(item))
            repeats = self.args.repeat if item.repeats else 1
            for repeat in range(repeats):
                for spec in ready:
                    self.measurements.append(self._measure(item, scenario, spec, repeat))

    def overrides(self, item: BenchScenario) -> dict[str, Any]:
        overrides = dict(item.quick) if self.args.quick else {}
        if self.args.duration and item.key in ("rooms", "room50", "room50-cursors"):
            overrides["duration"] = self.args.duration
        return overrides

    def _measure(
        self, item: BenchScenario, scenario: Scenario, spec: PeerSpec, repeat: int
    ) -> Measurement:
        server = spec.server(self.args.server_cpu).start()
        try:
            baseline = ProcessMonitor(server.pid).rss_bytes()
            options = RunOptions(
                workers=self.args.workers,
                server_pid=server.pid,
                progress=self.progress,
                fresh_join=not spec.stateless,
            )
            steal_before, started = steal_ticks(), time.monotonic()
            try:
                warmup = 0.0 if self.args.quick else _WARMUP
                result = run_scenario(scenario, server.ws_url, options, warmup=warmup)
            except (RunError, RuntimeError, OSError) as exc:
                self.say(f"[{spec.name}] {item.key} #{repeat + 1}: failed: {exc}")
                return Measurement(item.key, spec.name, repeat, f"failed: {exc}", {})
            steal = steal_percent(steal_before, steal_ticks(), time.monotonic() - started)
        finally:
            server.stop()
        figures = figures_of(result, baseline)
        status = not_applicable(spec, scenario) or "ok"
        self.say(f"[{spec.name}] {item.key} #{repeat + 1}: " + brief(figures))
        return Measurement(item.key, spec.name, repeat, status, figures, result.to_json(), steal)

    # -- results --------------------------------------------------------------------------

    def medians(self, scenario: str, server: str) -> tuple[Figures, str, int]:
        """Median of every figure over the repeats; the status of the first run; run count."""
        runs = [m for m in self.measurements if m.scenario == scenario and m.server == server]
        if not runs:
            return {}, self.unavailable.get(server, "not run"), 0
        ok = [m for m in runs if not m.status.startswith("failed")]
        status = ok[0].status if ok else runs[0].status
        names = {name for m in ok for name in m.figures}
        medians: Figures = {}
        for name in names:
            values = [v for m in ok if (v := m.figures.get(name)) is not None]
            medians[name] = statistics.median(values) if values else None
        return medians, status, len(ok)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.bench",
        description="Side-by-side benchmark (issue 7): collab and its peers under the same "
        "scenarios; servers on CPU 0, generators on CPU 1. See docs/benchmarks.md.",
    )
    parser.add_argument(
        "--servers",
        default="collab,collab-services,pycrdt-websocket,node,relay",
        help=f"comma-separated, from {', '.join(PEER_NAMES)} (default: all)",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIO_KEYS),
        help=f"comma-separated, from {', '.join(SCENARIO_KEYS)} (default: all)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs of short scenarios (3)")
    parser.add_argument("--quick", action="store_true", help="short runs, one repeat")
    parser.add_argument("--duration", type=float, help="seconds of the editing scenarios")
    parser.add_argument("--workers", type=int, help="generator processes (default: 1 per CPU)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin servers and generators")
    parser.add_argument("--out", type=Path, help="JSON file (default loadtests/results/...)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser


def _select(text: str, known: Sequence[str], what: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise LoadConfigError(f"unknown {what}: {', '.join(unknown) or '(none)'}")
    return names


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    raw = list(argv) if argv is not None else sys.argv[1:]
    command = shlex.join(["python", "-m", "loadtests.bench", *raw])
    try:
        servers = _select(args.servers, PEER_NAMES, "servers")
        keys = _select(args.scenarios, SCENARIO_KEYS, "scenarios")
        if not 1 <= args.repeat <= 20:
            raise LoadConfigError("--repeat must be between 1 and 20")
    except LoadConfigError as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return 2
    if args.quick:
        args.repeat = 1
    info = machine()  # before pinning: nproc is the machine's, not this process's share
    args.server_cpu, generator_cpus = _pin(not args.no_pin)
    args.workers = args.workers or max(1, len(generator_cpus))
    scenarios = [item for item in SCENARIOS if item.key in keys]

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    bench = Bench(args, say)
    started = time.monotonic()
    bench.run(scenarios, [peer(name) for name in servers])
    if any(m.server == "collab" and m.status.startswith("failed") for m in bench.measurements):
        code = 3
    else:
        code = 0
    info.update(server_cpu=args.server_cpu, generator_cpus=sorted(generator_cpus))
    info.update(workers=args.workers, minutes=round((time.monotonic() - started) / 60, 1))
    header = [
        f"Machine: {info['nproc']} CPUs ({info['cpu_model']}), Python {info['python']}, "
        f"{info['platform']}; servers pinned to CPU {info['server_cpu']}, generators to CPUs "
        f"{info['generator_cpus']} ({info['workers']} worker process(es)); "
        f"{info['minutes']} minutes.",
        f"Command: `{command}`",
    ]
    text = render(bench, scenarios, servers, header)
    print(text)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or RESULTS_DIR / f"bench-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": "side by side (issue 7)",
        "command": command,
        "machine": info,
        "unavailable": bench.unavailable,
        "measurements": [
            {
                "scenario": m.scenario,
                "server": m.server,
                "repeat": m.repeat,
                "status": m.status,
                "figures": m.figures,
                "cpu_steal_percent": m.steal,
                "result": m.result,
            }
            for m in bench.measurements
        ],
    }
    out.write_text(json.dumps(document, indent=1, default=str) + "\n")
    out.with_suffix(".md").write_text(text + "\n")
    print(f"\nJSON: {out}\nmarkdown: {out.with_suffix('.md')}")
    return code


def _pin(pin: bool) -> tuple[int | None, set[int]]:
    """Servers on CPU 0, this process (inherited by the workers) on the other CPUs."""
    cpus = os.sched_getaffinity(0)
    if not pin or len(cpus) < 2:
        return None, cpus
    generators = cpus - {0} if 0 in cpus else cpus - {min(cpus)}
    server = 0 if 0 in cpus else min(cpus)
    os.sched_setaffinity(0, generators)
    return server, generators


if __name__ == "__main__":
    sys.exit(main())
