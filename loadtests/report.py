"""Showing a run: the summary table, the JSON result file and the optional PNG plot."""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path
from types import ModuleType
from typing import Any

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
    rows.extend(_server_rows(result.server))
    rows.append(("generator CPU", _generator(result.generator)))
    lines = [header, "", "| metric | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    for failure in convergence["failed"][:5]:
        lines.append(f"not converged: {failure['room']}: {failure['why']}")
    if result.generator["saturated"]:
        lines.append("warning: a generator worker was over 85% busy; add --workers or cores")
    return "\n".join(lines)


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


def write_json(result: RunResult, path: Path) -> None:
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


def plot(result: RunResult, path: Path) -> None:
    """Latency, throughput and server CPU over the window, as a PNG.

    Raises PlotUnavailableError when matplotlib is missing.
    """
    require_matplotlib()
    pyplot = importlib.import_module("matplotlib.pyplot")
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
