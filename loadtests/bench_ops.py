"""What observability costs (issue 16): ``python -m loadtests.bench_ops``.

One run, the same editing scenario (default ``core-a-one-room``: 1 room x 50 clients, 5
typing at 10 edits/s) against a fresh ``collab serve`` in two configurations, interleaved
(off, on, on, off, ... so that a noisy minute of the machine hits both alike):

* **off**: text logs, ``/metrics`` never scraped;
* **on**: ``COLLAB_LOG_FORMAT=json`` and ``/metrics`` scraped every ``--scrape-interval``
  seconds (1 s by default: fifteen times more often than Prometheus' usual 15 s, so the
  figure errs on the expensive side).

The figure is the server's CPU time per frame the clients received (process CPU seconds over
the measurement window / frames delivered), its median over ``--repeat`` runs of each
configuration, and the ratio on / off (target: at most 1.05), with the median of the ratios
of adjacent on/off pairs beside it (less sensitive to a slow drift of the machine). Because
the run-to-run spread on a shared machine is larger than the cost measured, the run then
measures the scrape directly: the server's CPU for ``--scrapes`` back-to-back ``/metrics``
requests (a room of clients connected, so the figures are real), per scrape. The server is
pinned to CPU 0, this process, its scraper thread and its generator workers to CPU 1. The
markdown table goes to stdout and, with the JSON of every run, to ``loadtests/results/``
(git-ignored). Exit status 0 when the target is met, 1 when it is missed, 3 when a run could
not complete.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests.bench_core import RESULTS_DIR, _pin, machine
from loadtests.cli import progress_printer
from loadtests.harness import ServerProcess
from loadtests.monitor import ProcessMonitor
from loadtests.runner import RunError, RunOptions, RunResult, run_load
from loadtests.scenario import SCENARIO_DIR, LoadConfigError, load_scenario

TARGET_RATIO = 1.05
VARIANTS = ("off", "on")


@dataclass(slots=True)
class Run:
    variant: str
    result: RunResult
    scrapes: int
    scrape_failures: int
    log_lines: int
    json_lines: int

    @property
    def us_per_frame(self) -> float | None:
        server = self.result.server or {}
        value = server.get("cpu_us_per_frame")
        return float(value) if value is not None else None


class Scraper:
    """A thread asking ``/metrics`` every ``interval`` seconds until stopped."""

    def __init__(self, url: str, interval: float) -> None:
        self.url = url + "/metrics"
        self.interval = interval
        self.scrapes = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics scraper", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    response.read()
                    self.scrapes += response.status == 200
            except OSError:
                self.failures += 1

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(10)


def run_variant(
    variant: str,
    scenario_name: str,
    overrides: dict[str, Any],
    *,
    workers: int,
    server_cpu: int | None,
    scrape_interval: float,
) -> Run:
    scenario = load_scenario(SCENARIO_DIR / f"{scenario_name}.toml", overrides)
    env = {"COLLAB_LOG_FORMAT": "json" if variant == "on" else "text"}
    with (
        tempfile.TemporaryDirectory(prefix="collab-bench-ops-") as data_dir,
        ServerProcess(Path(data_dir), cpu=server_cpu, env=env) as server,
    ):
        options = RunOptions(workers=workers, server_pid=server.pid, progress=progress_printer())
        if variant == "on":
            with Scraper(server.http_url, scrape_interval) as scraper:
                result = run_load(scenario, server.ws_url, options)
            scrapes, failures = scraper.scrapes, scraper.failures
        else:
            result = run_load(scenario, server.ws_url, options)
            scrapes = failures = 0
        lines = list(server.lines)
    json_lines = sum(1 for line in lines if line.startswith("{") and _parses(line))
    return Run(variant, result, scrapes, failures, len(lines), json_lines)


def scrape_cost(scrapes: int, server_cpu: int | None) -> dict[str, Any]:
    """The server's CPU per ``/metrics`` scrape: ``scrapes`` requests in a row against a
    server with JSON logs and 20 connected clients."""
    env = {"COLLAB_LOG_FORMAT": "json"}
    with (
        tempfile.TemporaryDirectory(prefix="collab-bench-ops-") as data_dir,
        ServerProcess(Path(data_dir), cpu=server_cpu, env=env) as server,
    ):
        scenario = load_scenario(
            SCENARIO_DIR / "core-a-one-room.toml",
            {"duration": 1.0, "clients_per_room": 20, "writers_per_room": 2},
        )
        run_load(scenario, server.ws_url, RunOptions(workers=1))  # counters that move
        monitor = ProcessMonitor(server.pid)
        url = server.http_url + "/metrics"
        before = monitor.cpu_seconds()
        started = time.monotonic()
        size = 0
        for _ in range(scrapes):
            with urllib.request.urlopen(url, timeout=5) as response:
                size = len(response.read())
        elapsed = time.monotonic() - started
        after = monitor.cpu_seconds()
    cpu = None if before is None or after is None else after - before
    return {
        "scrapes": scrapes,
        "server_cpu_seconds": None if cpu is None else round(cpu, 3),
        "server_cpu_ms_per_scrape": None if cpu is None else round(1000 * cpu / scrapes, 3),
        "wall_ms_per_scrape": round(1000 * elapsed / scrapes, 3),
        "body_bytes": size,
    }


def _paired_ratio(runs: Sequence[Run]) -> float | None:
    """The median over the repeats of on / off within each repeat (adjacent runs)."""
    ratios = []
    for index in range(0, len(runs) - 1, 2):
        pair = {run.variant: run.us_per_frame for run in runs[index : index + 2]}
        off, on = pair.get("off"), pair.get("on")
        if off and on:
            ratios.append(on / off)
    return statistics.median(ratios) if ratios else None


def _parses(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _median(runs: Sequence[Run], variant: str) -> float | None:
    values = [r.us_per_frame for r in runs if r.variant == variant and r.us_per_frame is not None]
    return statistics.median(values) if values else None


def render(
    runs: Sequence[Run], info: dict[str, Any], command: str, cost: dict[str, Any] | None
) -> str:
    off, on = _median(runs, "off"), _median(runs, "on")
    ratio = None if off is None or on is None or off == 0 else on / off
    paired = _paired_ratio(runs)
    lines = [
        f"Machine: {info['nproc']} CPUs ({info['cpu_model']}), Python {info['python']}; "
        f"server pinned to CPU {info['server_cpu']}, generators to CPU {info['generator_cpu']}.",
        f"Command: `{command}`",
        "",
        "| run | metrics + JSON logs | frames delivered | server CPU | us per frame | "
        "/metrics scrapes | log lines (JSON) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for index, run in enumerate(runs, 1):
        server = run.result.server or {}
        lines.append(
            f"| {index} | {run.variant} | {server.get('frames_in_window')} "
            f"| {server.get('cpu_seconds')} s | {run.us_per_frame} "
            f"| {run.scrapes} ({run.scrape_failures} failed) | {run.log_lines} ({run.json_lines}) |"
        )
    lines += [
        "",
        f"Median us per frame: off {off}, on {on}; on / off = "
        + (f"{ratio:.3f}" if ratio is not None else "unknown")
        + f" (target <= {TARGET_RATIO}); median of the paired ratios "
        + (f"{paired:.3f}" if paired is not None else "unknown"),
    ]
    if cost is not None:
        per_scrape = cost["server_cpu_ms_per_scrape"]
        lines.append(
            f"/metrics measured alone: {cost['scrapes']} scrapes, {per_scrape} ms of server CPU "
            f"each ({cost['body_bytes']} bytes, {cost['wall_ms_per_scrape']} ms wall)"
        )
        off_runs = [r for r in runs if r.variant == "off" and r.result.server]
        if per_scrape is not None and off_runs:
            busy = statistics.median(
                float(r.result.server["cpu_seconds"]) / r.result.scenario.duration
                for r in off_runs
                if r.result.server is not None
            )
            for interval in (1.0, 15.0):
                share = (per_scrape / 1000 / interval) / busy if busy else 0.0
                lines.append(
                    f"  scraped every {interval:g} s under this load: {100 * share:.2f}% more "
                    "server CPU"
                )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.bench_ops",
        description="CPU per delivered frame with metrics scraping and JSON logs on vs off, "
        "in one run (docs/benchmarks.md).",
    )
    parser.add_argument("--scenario", default="core-a-one-room", help="scenario file name")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each variant (3)")
    parser.add_argument("--duration", type=float, help="override the scenario's duration")
    parser.add_argument("--clients", type=int, help="override the scenario's clients per room")
    parser.add_argument("--rate", type=float, help="override its edits/s per writer")
    parser.add_argument("--scrape-interval", type=float, default=1.0, help="seconds (1)")
    parser.add_argument("--scrapes", type=int, default=300, help="for the scrape cost (300)")
    parser.add_argument("--workers", type=int, default=2, help="generator processes (2)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and generators")
    parser.add_argument("--out", type=Path, help="JSON file (default loadtests/results/...)")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.scrape_interval <= 0:
        parser.error("--repeat must be >= 1 and --scrape-interval > 0")
    command = shlex.join(["python", "-m", "loadtests.bench_ops", *(argv or sys.argv[1:])])
    info = machine()
    server_cpu, generator_cpu = _pin(None if args.no_pin else 1)
    info.update(server_cpu=server_cpu, generator_cpu=generator_cpu, workers=args.workers)
    overrides: dict[str, Any] = {"duration": args.duration} if args.duration else {}
    if args.clients:
        overrides["clients_per_room"] = args.clients
    if args.rate:
        overrides["edits_per_second"] = args.rate
    runs: list[Run] = []
    started = time.monotonic()
    try:
        for repeat in range(args.repeat):
            order = VARIANTS if repeat % 2 == 0 else tuple(reversed(VARIANTS))
            for variant in order:
                print(f"== run {len(runs) + 1}: {variant}", file=sys.stderr)
                runs.append(
                    run_variant(
                        variant,
                        args.scenario,
                        overrides,
                        workers=args.workers,
                        server_cpu=server_cpu,
                        scrape_interval=args.scrape_interval,
                    )
                )
        cost = scrape_cost(args.scrapes, server_cpu) if args.scrapes > 0 else None
    except (RunError, LoadConfigError, RuntimeError, OSError) as exc:
        print(f"bench_ops: the run failed: {exc}", file=sys.stderr)
        return 3
    print(render(runs, info, command, cost))
    off, on = _median(runs, "off"), _median(runs, "on")
    ratio = None if off is None or on is None or off == 0 else on / off
    out = args.out or RESULTS_DIR / (
        "bench_ops-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S") + ".json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": "observability cost (issue 16)",
        "command": command,
        "machine": info,
        "seconds": round(time.monotonic() - started, 1),
        "target_ratio": TARGET_RATIO,
        "median_us_per_frame": {"off": off, "on": on},
        "ratio": ratio,
        "paired_ratio": _paired_ratio(runs),
        "scrape_cost": cost,
        "runs": [
            {
                "variant": run.variant,
                "scrapes": run.scrapes,
                "scrape_failures": run.scrape_failures,
                "log_lines": run.log_lines,
                "json_log_lines": run.json_lines,
                **run.result.to_json(),
            }
            for run in runs
        ],
    }
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nJSON: {out}")
    return 0 if ratio is not None and ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
