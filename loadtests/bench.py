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
from loadtests.cli import progress_printer
from loadtests.coldload import ColdLoadResult
from loadtests.kinds import AnyResult, SaturationResult, generator_bound, run_scenario
from loadtests.monitor import ProcessMonitor
from loadtests.peers import PEER_NAMES, PeerSpec, PeerUnavailableError, peer
from loadtests.runner import RunError, RunOptions, RunResult
from loadtests.scenario import SCENARIO_DIR, LoadConfigError, Scenario, load_scenario

Figures = dict[str, float | None]
_WARMUP = 2.0
REFERENCE_RATE = 10.0
"""The saturation stage (edits/s per writer: 100 edits/s into 210 clients) whose CPU per
frame every server is compared on: the load of the "Measured" table of DESIGN.md."""


@dataclass(frozen=True, slots=True)
class BenchScenario:
    key: str
    file: str
    title: str
    repeats: bool = True
    """Short scenarios repeat; long or deterministic ones (saturation, memory) run once."""
    quick: dict[str, Any] = field(default_factory=dict)
    """Overrides for ``--quick``."""


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

# The figure each table's ratio column compares, and whether higher is better.
KEY_FIGURE: dict[str, tuple[str, bool]] = {
    "editing": ("us_per_frame", False),
    "saturation": ("edits_per_s", True),
    "idle": ("rss_open_mb", False),
    "cold_load": ("ingest_edits_per_s", True),
    "herd": ("connect_p99_ms", False),
}

COLUMNS: dict[str, list[tuple[str, str]]] = {
    "editing": [
        ("p50_ms", "fan-out p50 ms"),
        ("p99_ms", "fan-out p99 ms"),
        ("max_ms", "max ms"),
        ("edits_per_s", "edits/s"),
        ("frames_per_s", "frames/s"),
        ("server_cpu_pct", "server CPU %"),
        ("us_per_frame", "server CPU us/frame"),
        ("generator_cpu_pct", "generator CPU %"),
        ("converged", "converged"),
        ("errors", "errors"),
    ],
    "saturation": [
        ("us_per_frame_at_100", "server CPU us/frame at 100 edits/s"),
        ("p99_at_100", "p99 ms at 100 edits/s"),
        ("edits_per_s", "edits/s at saturation"),
        ("frames_per_s", "frames/s"),
        ("deliveries_per_s", "deliveries/s"),
        ("p99_ms", "p99 ms"),
        ("us_per_frame", "server CPU us/frame"),
        ("server_cpu_pct", "server CPU %"),
        ("generator_cpu_pct", "generator CPU %"),
        ("saturated", "saturated"),
    ],
    "idle": [
        ("connected", "connected"),
        ("rss_before_mb", "RSS before MB"),
        ("rss_open_mb", "RSS open MB"),
        ("kb_per_connection", "KB per connection (incl. rooms)"),
        ("connect_p99_ms", "connect p99 ms"),
    ],
    "cold_load": [
        ("ingest_edits_per_s", "ingest edits/s"),
        ("join_p50_ms", "join to full state p50 ms"),
        ("join_max_ms", "join max ms"),
        ("us_per_edit", "server CPU us/edit"),
        ("converged", "converged"),
    ],
    "herd": [
        ("connected", "synced"),
        ("connect_p50_ms", "connect+sync p50 ms"),
        ("connect_p99_ms", "p99 ms"),
        ("connect_max_ms", "max ms"),
        ("sync_p99_ms", "sync p99 ms"),
        ("converged", "converged"),
    ],
}


def family(scenario: Scenario) -> str:
    if scenario.kind in ("saturation", "cold_load", "herd"):
        return scenario.kind
    return "idle" if scenario.idle else "editing"


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
            scenario = load_scenario(SCENARIO_DIR / f"{item.file}.toml", self._overrides(item))
            repeats = self.args.repeat if item.repeats else 1
            for repeat in range(repeats):
                for spec in ready:
                    self.measurements.append(self._measure(item, scenario, spec, repeat))

    def _overrides(self, item: BenchScenario) -> dict[str, Any]:
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
        self.say(f"[{spec.name}] {item.key} #{repeat + 1}: " + _brief(figures))
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


def _brief(figures: Figures) -> str:
    return ", ".join(f"{k} {_fmt(v)}" for k, v in list(figures.items())[:6])


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None or theirs == 0:
        return "-"
    return f"{ours / theirs:.2f}"


def scenario_table(
    bench: Bench, item: BenchScenario, scenario: Scenario, servers: list[str]
) -> str:
    kind = family(scenario)
    columns = COLUMNS[kind]
    key, _ = KEY_FIGURE[kind]
    key_label = dict(columns)[key]
    collab, _, _ = bench.medians(item.key, "collab")
    header = "| server | runs | " + " | ".join(label for _, label in columns)
    header += f" | collab / server ({key_label}) |"
    lines = [header, "|" + "---|" * (len(columns) + 3)]
    for name in servers:
        figures, status, runs = bench.medians(item.key, name)
        label = peer(name).label
        if not figures:
            lines.append(f"| {label} | 0 | {status} |" + " |" * (len(columns) + 0))
            continue
        cells = []
        for column, _ in columns:
            value = figures.get(column)
            if column == "saturated" and value is not None:
                cells.append("yes" if value else "no (last stage good)")
            elif column == "converged" and value is not None:
                cells.append("yes" if value == 1 else ("no" if value == 0 else f"{value:.0%}"))
            elif column.startswith("join") and status.startswith("joins n/a"):
                cells.append("n/a")
            else:
                cells.append(_fmt(value))
        compare = "1" if name == "collab" else ratio(collab.get(key), figures.get(key))
        lines.append(f"| {label} | {runs} | " + " | ".join(cells) + f" | {compare} |")
    notes = [
        f"{peer(name).label}: {status}"
        for name in servers
        if (status := bench.medians(item.key, name)[1]) not in ("ok", "not run")
    ]
    return "\n".join(lines + ([""] + [f"- {note}" for note in notes] if notes else []))


def memory_table(bench: Bench, servers: list[str]) -> str:
    """Per connection and per room, from the 1,000- and 5,000-connection runs (100 rooms)."""
    lines = [
        "| server | RSS before | 1,000 open | 5,000 open | per connection (5,000 - 1,000) "
        "| per room (rest of 1,000) |",
        "|---|---|---|---|---|---|",
    ]
    for name in servers:
        small, _, _ = bench.medians("idle-1000", name)
        large, _, _ = bench.medians("idle-5000", name)
        before = small.get("rss_before_mb")
        rss1 = small.get("rss_open_mb")
        rss5 = large.get("rss_open_mb")
        if before is None or rss1 is None or rss5 is None:
            continue
        per_conn = (rss5 - rss1) / 4000 * 1e3
        per_room = (rss1 - before - per_conn * 1000 / 1e3) / 100 * 1e3
        lines.append(
            f"| {peer(name).label} | {before:.1f} MB | {rss1:.1f} MB | {rss5:.1f} MB "
            f"| {per_conn:.1f} KB | {per_room:.1f} KB |"
        )
    return "\n".join(lines)


def render(
    bench: Bench, scenarios: Sequence[BenchScenario], servers: list[str], header: list[str]
) -> str:
    lines = list(header)
    for item in scenarios:
        scenario = load_scenario(SCENARIO_DIR / f"{item.file}.toml", bench._overrides(item))
        lines += ["", f"### {item.title}", "", scenario_table(bench, item, scenario, servers)]
    if any(item.key in ("idle-1000", "idle-5000") for item in scenarios):
        lines += [
            "",
            "### Memory per idle connection and per room",
            "",
            memory_table(bench, servers),
        ]
    lines += ["", "### Targets (collab on embedded defaults)", "", *targets(bench)]
    return "\n".join(lines)


def _get(bench: Bench, scenario: str, server: str, name: str) -> float | None:
    return bench.medians(scenario, server)[0].get(name)


def targets(bench: Bench) -> list[str]:
    """A plain statement per target of issue 7: met, not met, or not measured."""
    out = []

    def say(name: str, ok: bool | None, detail: str) -> None:
        verdict = "not measured" if ok is None else ("met" if ok else "NOT met")
        out.append(f"- {name}: **{verdict}** ({detail})")

    ours = _get(bench, "saturation", "collab", "us_per_frame_at_100")
    node = _get(bench, "saturation", "node", "us_per_frame_at_100")
    say(
        "CPU per delivered frame at or below the Node reference's (1 room x 210 clients, "
        "100 edits/s)",
        None if ours is None or node is None else ours <= node,
        f"collab {_fmt(ours)} us, Node {_fmt(node)} us; at 1 room x 50 clients, 25 edits/s: "
        f"collab {_fmt(_get(bench, 'room50', 'collab', 'us_per_frame'))} us, Node "
        f"{_fmt(_get(bench, 'room50', 'node', 'us_per_frame'))} us",
    )
    ours_sat = _get(bench, "saturation", "collab", "edits_per_s")
    pycrdt = _get(bench, "saturation", "pycrdt-websocket", "edits_per_s")
    say(
        "saturation at least 4x pycrdt-websocket's",
        None if ours_sat is None or pycrdt is None else ours_sat >= 4 * pycrdt,
        f"collab {_fmt(ours_sat)} edits/s, pycrdt-websocket {_fmt(pycrdt)} edits/s"
        + _unsaturated(bench, "collab"),
    )
    frames = _get(bench, "saturation", "collab", "frames_per_s")
    relay = _get(bench, "saturation", "relay", "frames_per_s")
    say(
        "at least 50% of the bare relay's frames/s (at saturation)",
        None if frames is None or relay is None else frames >= 0.5 * relay,
        f"collab {_fmt(frames)} frames/s, relay {_fmt(relay)} frames/s"
        + _unsaturated(bench, "relay"),
    )
    for key in ("room50", "room50-cursors"):
        p99 = _get(bench, key, "collab", "p99_ms")
        say(
            f"p99 under 50 ms at 1 room x 50 clients ({key})",
            None if p99 is None else p99 < 50,
            f"{_fmt(p99)} ms",
        )
    rss1 = _get(bench, "idle-1000", "collab", "rss_open_mb")
    rss5 = _get(bench, "idle-5000", "collab", "rss_open_mb")
    per = None if rss1 is None or rss5 is None else (rss5 - rss1) / 4000 * 1e3
    say(
        "memory per idle connection under 20 KB",
        None if per is None else per < 20,
        f"{_fmt(per)} KB",
    )
    say(
        "5,000 idle connections in under 500 MB RSS",
        None if rss5 is None else rss5 < 500,
        f"{_fmt(rss5)} MB",
    )
    ingest = _get(bench, "cold-load", "collab", "ingest_edits_per_s")
    say(
        "cold ingest at least 9,000 edits/s",
        None if ingest is None else ingest >= 9000,
        f"{_fmt(ingest)} edits/s",
    )
    join = _get(bench, "cold-load", "collab", "join_max_ms")
    say(
        "join to full state under 20 ms",
        None if join is None else join < 20,
        f"max {_fmt(join)} ms (median of the runs' maxima)",
    )
    synced = _get(bench, "herd", "collab", "connected")
    converged = _get(bench, "herd", "collab", "converged")
    say(
        "the herd all synced",
        None if synced is None else synced == 50 and converged == 1,
        f"{_fmt(synced)} of 50 synced, converged {'yes' if converged == 1 else 'no'}",
    )
    return out


def _unsaturated(bench: Bench, server: str) -> str:
    figures = bench.medians("saturation", server)[0]
    if figures.get("saturated") == 0:
        return f" ({peer(server).label} was not saturated by the last stage: a lower bound)"
    if figures.get("generator_bound"):
        return f" ({peer(server).label}'s failing stage had the generator over 85% busy)"
    return ""


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
