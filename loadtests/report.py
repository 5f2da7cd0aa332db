"""Showing a run: the summary table, the JSON result file and the optional PNG plot."""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path
from types import ModuleType
from typing import Any

from loadtests.coldload import ColdLoadResult
from loadtests.kinds import AnyResult, SaturationResult
from loadtests.metrics import LatencySummary
from loadtests.runner import RunResult


class PlotUnavailableError(RuntimeError):
    """matplotlib is not installed (it is the optional dependency group ``load``)."""


def _ms(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.1f}"


def _mb(value: int | None) -> str:
    return "-" if value is None else f"{value / 1e6:.1f} MB"


def _latencies(summary: LatencySummary, *fields: str) -> str:
    values = " / ".join(_ms(getattr(summary, name)) for name in fields)
    return f"{values} ms (n={summary.count})"


def format_result(result: AnyResult) -> str:
    """The summary of a run of any kind (markdown)."""
    if isinstance(result, SaturationResult):
        return format_saturation(result)
    if isinstance(result, ColdLoadResult):
        return format_cold_load(result)
    return format_table(result)


def _summary(values: dict[str, Any], *fields: str) -> str:
    return " / ".join(_ms(values.get(name)) for name in fields) + f" ms (n={values['count']})"


def format_saturation(result: SaturationResult) -> str:
    """One row per stage, then the last good stage (the saturation point)."""
    scenario = result.scenario
    lines = [
        f"{scenario.name}: {scenario.rooms} room(s) x {scenario.clients_per_room} clients, "
        f"{scenario.writers_per_room} writers/room, stages of {scenario.duration:g} s "
        f"-> {result.target}",
        "",
        "| edits/s per writer | edits sent/s | deliveries/s | frames/s | fan-out p50 / p99 "
        "| lost | server CPU | server us/frame | generator CPU | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for stage in result.stages:
        row = stage.to_json()
        fanout = row["fanout_ms"]
        verdict = "good" if stage.good else f"saturated: {stage.why}"
        if row["generator_bound"]:
            verdict += " (generator over 85% busy)"
        lines.append(
            f"| {stage.rate:g} | {row['edits_sent_per_second']:g} "
            f"| {row['deliveries_per_second']:g} | {row['frames_per_second']} "
            f"| {_ms(fanout['p50'])} / {_ms(fanout['p99'])} ms | {row['lost_deliveries']} "
            f"| {row['server_cpu_percent']}% | {row['server_cpu_us_per_frame']} "
            f"| {row['generator_cpu_percent']}% | {verdict} |"
        )
    last = result.last_good
    if last is None:
        lines.append("saturation point: below the first stage")
    else:
        row = last.to_json()
        bound = "" if result.saturated else " (not saturated: the last stage was still good)"
        lines.append(
            f"saturation point: {row['edits_sent_per_second']:g} edits/s, "
            f"{row['frames_per_second']} frames/s, {row['deliveries_per_second']:g} "
            f"deliveries/s at the last good stage{bound}"
        )
    return "\n".join(lines)


def format_cold_load(result: ColdLoadResult) -> str:
    scenario = result.scenario
    join = result.join.to_json()
    rate = result.ingest_edits_per_second
    server = result.server or {}
    rows = [
        ("ingest", "-" if rate is None else f"{rate:,.0f} edits/s (median over rooms)"),
        (
            "join to full state p50 / p95 / max",
            _summary(join, "p50", "p95", "max") if result.joins_checked else "not checked",
        ),
        ("first join (per room, worst)", _ms(result.first_join_ms) + " ms"),
        ("incomplete joins", str(sum(room.incomplete_joins for room in result.rooms))),
        ("errors", ", ".join(f"{k}={v}" for k, v in result.errors.items()) or "none"),
        (
            "converged rooms",
            f"{sum(room.converged for room in result.rooms)} / {len(result.rooms)}",
        ),
        (
            "server CPU during ingest",
            f"{server.get('ingest_cpu_percent_of_core')}% of a core, "
            f"{server.get('cpu_us_per_edit')} us per edit"
            if server
            else "not measured",
        ),
        ("generator CPU during ingest", f"{result.generator['cpu_percent_of_core']}% of a core"),
    ]
    lines = [
        f"{scenario.name}: {scenario.history_edits} edits x {scenario.rooms} room(s), "
        f"{scenario.late_joiners} late joiners -> {result.target}",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    lines += [f"| {name} | {value} |" for name, value in rows]
    lines += [f"not converged: {room.room}: {room.why}" for room in result.rooms if room.why]
    return "\n".join(lines)


def format_table(result: RunResult) -> str:
    """A markdown table of the headline numbers, preceded by one line naming the run."""
    scenario = result.scenario
    edits = result.edits
    convergence = result.convergence
    connect = result.clients["connect_ms"]
    header = (
        f"{scenario.name}: {scenario.rooms} rooms x {scenario.clients_per_room} clients, "
        + (
            "idle"
            if scenario.idle
            else f"{scenario.writers_per_room} writers/room "
            f"at {scenario.edits_per_second:g} edits/s"
        )
        + f", {scenario.duration:g} s, {result.workers} workers -> {result.target}"
    )
    rows = [
        ("clients connected", f"{result.clients['connected']} / {result.clients['planned']}"),
        ("connect time p50 / p99", f"{_ms(connect['p50'])} / {_ms(connect['p99'])} ms"),
        *_herd_rows(result),
        (
            "fan-out latency p50 / p95 / p99 / max",
            _latencies(result.fanout, "p50", "p95", "p99", "max"),
        ),
        ("delivery latency p50 / p99", _latencies(result.delivery, "p50", "p99")),
        (
            "edits sent",
            f"{edits['sent']} ({edits['sent_per_second']:g}/s, "
            f"planned {edits['planned_per_second']:g}/s)",
        ),
        (
            "updates delivered (edit x receiver)",
            f"{edits['deliveries']} ({edits['delivered_per_second']:g}/s; "
            f"{edits['expected_deliveries']} expected)",
        ),
        ("frames received in the window", f"{edits['frames_in_window']}"),
        ("errors", ", ".join(f"{k}={v}" for k, v in result.errors.items()) or "none"),
        (
            "converged rooms",
            f"{convergence['converged']} / {convergence['rooms']} "
            f"({'yes' if convergence['all'] else 'NO'})",
        ),
    ]
    rows.extend(_reconnect_rows(result))
    rows.extend(_server_rows(result.server))
    rows.append(("generator CPU", _generator(result.generator)))
    lines = [header, "", "| metric | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    for failure in convergence["failed"][:5]:
        lines.append(f"not converged: {failure['room']}: {failure['why']}")
    if result.generator["saturated"]:
        lines.append("warning: a generator worker was over 85% busy; add --workers or cores")
    return "\n".join(lines)


def _herd_rows(result: RunResult) -> list[tuple[str, str]]:
    if result.scenario.kind != "herd":
        return []
    clients = result.clients
    return [
        ("connect time max", f"{_ms(clients['connect_ms']['max'])} ms"),
        ("handshake p50 / p99 / max", _summary(clients["handshake_ms"], "p50", "p99", "max")),
        ("sync p50 / p99 / max", _summary(clients["sync_ms"], "p50", "p99", "max")),
    ]


def _reconnect_rows(result: RunResult) -> list[tuple[str, str]]:
    storm = result.extra.get("reconnect")
    if not storm:
        return []
    return [
        ("dropped / came back", f"{storm['dropped']} / {storm['returned']}"),
        ("upgrades shed (503, retried)", str(storm.get("shed", 0))),
        ("connections reset (retried)", str(storm.get("reset", 0))),
        ("resync p50 / p99 / max", _summary(storm["resync_ms"], "p50", "p99", "max")),
    ]


def _server_rows(server: dict[str, Any] | None) -> list[tuple[str, str]]:
    if server is None:
        return [("server metrics", "not measured (start the server or pass --server-pid)")]
    cpu = server["cpu_seconds"]
    per_frame = server["cpu_us_per_frame"]
    return [
        (
            "server CPU",
            "-"
            if cpu is None
            else f"{cpu:.2f} s ({server['cpu_percent_of_core']:g}% of a core), "
            + (f"{per_frame:g} us per frame sent" if per_frame is not None else "no frames"),
        ),
        (
            "server RSS at end / peak",
            f"{_mb(server['rss_bytes_end'])} / {_mb(server['rss_bytes_peak'])}",
        ),
    ]


def _generator(generator: dict[str, Any]) -> str:
    workers = ", ".join(f"{value:g}%" for value in generator["worker_cpu_percent"])
    return (
        f"{generator['cpu_percent_of_core']:g}% of a core (workers {workers}; "
        f"coordinator {generator['coordinator_cpu_percent']:g}%; cpus {generator['cpus']})"
    )


def write_json(result: AnyResult, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_json(), indent=2) + "\n")


def require_matplotlib() -> ModuleType:
    """Import matplotlib (headless backend); raise PlotUnavailableError if it is missing."""
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError as exc:
        raise PlotUnavailableError(
            "--plot needs matplotlib, the optional dependency group 'load': "
            "pip install -e '.[load]' (or pip install matplotlib)"
        ) from exc
    matplotlib.use("Agg")
    return matplotlib


def plot(result: AnyResult, path: Path) -> None:
    """Latency, throughput and server CPU over the window (per stage for a saturation run,
    per joiner for a cold load), as a PNG. Raises PlotUnavailableError without matplotlib.
    """
    require_matplotlib()
    pyplot = importlib.import_module("matplotlib.pyplot")
    if isinstance(result, SaturationResult):
        _plot_stages(pyplot, result, path)
        return
    if isinstance(result, ColdLoadResult):
        _plot_joins(pyplot, result, path)
        return
    series = result.timeseries
    seconds = [row["t"] for row in series]
    figure, (latency, throughput, cpu) = pyplot.subplots(3, 1, figsize=(9, 9), sharex=True)
    latency.plot(seconds, [row["fanout_p50_ms"] for row in series], label="fan-out p50")
    latency.plot(seconds, [row["fanout_p99_ms"] for row in series], label="fan-out p99")
    latency.set_ylabel("ms")
    latency.legend()
    latency.set_title(f"{result.scenario.name} -> {result.target}")
    throughput.plot(seconds, [row["edits"] for row in series], label="edits sent/s")
    throughput.plot(seconds, [row["deliveries"] for row in series], label="updates delivered/s")
    throughput.set_ylabel("per second")
    throughput.legend()
    cpu.plot(seconds, [row["server_cpu_percent"] for row in series], label="server CPU %")
    cpu.set_ylabel("% of a core")
    cpu.set_xlabel("seconds into the measured window")
    cpu.legend()
    for axes in (latency, throughput, cpu):
        axes.set_ylim(bottom=0)
        axes.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def _plot_stages(pyplot: Any, result: SaturationResult, path: Path) -> None:
    rows = [stage.to_json() for stage in result.stages]
    sent = [row["edits_sent_per_second"] for row in rows]
    figure, (latency, throughput) = pyplot.subplots(2, 1, figsize=(9, 7), sharex=True)
    latency.plot(sent, [row["fanout_ms"]["p50"] for row in rows], marker="o", label="p50")
    latency.plot(sent, [row["fanout_ms"]["p99"] for row in rows], marker="o", label="p99")
    latency.axhline(result.scenario.p99_limit_ms, color="red", linestyle="--", label="limit")
    latency.set_ylabel("fan-out latency, ms")
    latency.set_title(f"{result.scenario.name} -> {result.target}")
    latency.legend()
    throughput.plot(sent, [row["frames_per_second"] for row in rows], marker="o", label="frames/s")
    throughput.plot(
        sent, [row["deliveries_per_second"] for row in rows], marker="o", label="deliveries/s"
    )
    throughput.set_xlabel("edits sent per second (stage)")
    throughput.legend()
    _finish(pyplot, figure, (latency, throughput), path)


def _plot_joins(pyplot: Any, result: ColdLoadResult, path: Path) -> None:
    figure, axes = pyplot.subplots(1, 1, figsize=(9, 4))
    for room in result.rooms:
        joins = [1000 * value for value in room.join_seconds]
        axes.plot(range(1, len(joins) + 1), joins, marker="o", label=room.room)
    axes.set_xlabel("joiner (in order)")
    axes.set_ylabel("join to full state, ms")
    rate = result.ingest_edits_per_second
    axes.set_title(
        f"{result.scenario.name}: ingest "
        + ("-" if rate is None else f"{rate:,.0f} edits/s")
        + f" -> {result.target}"
    )
    axes.legend()
    _finish(pyplot, figure, (axes,), path)


def _finish(pyplot: Any, figure: Any, axes: tuple[Any, ...], path: Path) -> None:
    for each in axes:
        each.set_ylim(bottom=0)
        each.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
