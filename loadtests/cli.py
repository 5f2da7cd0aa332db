"""``python -m loadtests``: drive a y-websocket server with a scenario and report what it did.

Exit status: 0 the run completed, every room converged and nothing went wrong; 1 it completed
with errors or diverging rooms; 2 the command or the scenario is invalid; 3 the run could not
complete (a worker crashed, the server could not be started).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil

from loadtests.harness import ServerProcess
from loadtests.kinds import AnyResult, run_scenario
from loadtests.report import (
    PlotUnavailableError,
    format_result,
    plot,
    require_matplotlib,
    write_json,
)
from loadtests.runner import RunError, RunOptions
from loadtests.scenario import (
    SCENARIO_DIR,
    LoadConfigError,
    Scenario,
    check_target,
    load_scenario,
    parse_overrides,
)

EXIT_OK = 0
EXIT_DEGRADED = 1
EXIT_USAGE = 2
EXIT_FAILED = 3


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog or "python -m loadtests",
        description="Drive a y-websocket-compatible server with scripted clients and measure "
        "fan-out latency, throughput, convergence and the server's CPU and memory.",
        epilog=f"Bundled scenarios (pass the name or a path): {_bundled()}. "
        "See docs/loadtests.md for the file format.",
    )
    parser.add_argument("scenario", type=Path, help="scenario TOML file, or a bundled name")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--url",
        metavar="URL",
        action="append",
        help="base WebSocket URL; rooms are URL/ROOM (ws://127.0.0.1:8765/ws). Give it "
        "several times to spread the clients of every room over several server nodes "
        "(round robin: fan-out latency then crosses nodes)",
    )
    target.add_argument(
        "--start-server",
        action="store_true",
        help="start 'collab serve' on embedded defaults in a temporary directory and measure it",
    )
    parser.add_argument(
        "--server-pid", type=int, metavar="PID", help="pid of the server: measure its CPU and RSS"
    )
    parser.add_argument(
        "--server-cpu", type=int, metavar="CPU", help="with --start-server: pin it to this CPU"
    )
    parser.add_argument(
        "--generator-cpus",
        metavar="CPUS",
        help="pin the load generator to these CPUs (taskset list: 1 or 1,2 or 2-3)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        default=min(4, os.cpu_count() or 1),
        help="generator processes (default: min(4, CPUs))",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a scenario key (TOML value), e.g. --set duration=30",
    )
    parser.add_argument("--out", type=Path, metavar="FILE", help="write the JSON result here")
    parser.add_argument(
        "--plot", type=Path, metavar="FILE", help="write a PNG of latency and throughput here"
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a target that is not on the loopback interface",
    )
    parser.add_argument(
        "--token-env",
        metavar="VAR",
        default="COLLAB_LOAD_TOKEN",
        help="environment variable holding the access token the clients present "
        "(default COLLAB_LOAD_TOKEN; unset: no token, for --start-server or an insecure-dev "
        "server); kept out of the command line and the scenario file",
    )
    parser.add_argument(
        "--tokens-file",
        type=Path,
        metavar="FILE",
        help="access tokens of many users, one per line; client i presents line i modulo "
        "their number (a storm of many users: per-user limits stay in play)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    return parser


def read_tokens(path: Path | None) -> tuple[str, ...]:
    """The tokens of ``--tokens-file`` (blank lines skipped); LoadConfigError if unreadable
    or empty."""
    if path is None:
        return ()
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise LoadConfigError(f"--tokens-file {path}: {exc.strerror}") from exc
    tokens = tuple(line.strip() for line in lines if line.strip())
    if not tokens:
        raise LoadConfigError(f"--tokens-file {path}: no token in it")
    return tokens


def _bundled() -> str:
    return ", ".join(sorted(path.stem for path in SCENARIO_DIR.glob("*.toml")))


def parse_cpus(text: str) -> set[int]:
    """``1,3-4`` -> {1, 3, 4}; raises ValueError."""
    cpus: set[int] = set()
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    if not cpus:
        raise ValueError("empty CPU list")
    return cpus


def progress_printer() -> Callable[[str], None]:
    """Progress to stderr: rewritten in place on a terminal, one line per second otherwise."""
    stream = sys.stderr
    if stream.isatty():

        def show(line: str) -> None:
            stream.write("\r" + line + "\x1b[K")
            stream.flush()

        return show

    def log(line: str) -> None:
        stream.write(line + "\n")
        stream.flush()

    return log


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        scenario = load_scenario(args.scenario, parse_overrides(args.overrides))
        token = os.environ.get(args.token_env)
        if token:
            query = f"token={urllib.parse.quote(token, safe='')}"
            scenario = dataclasses.replace(
                scenario, query=f"{scenario.query}&{query}" if scenario.query else query
            )
        url = (
            None
            if args.start_server
            else ",".join(check_target(u, allow_remote=args.allow_remote) for u in args.url)
        )
        _check_options(args)
        args.tokens = read_tokens(args.tokens_file)
        if args.generator_cpus:
            os.sched_setaffinity(0, parse_cpus(args.generator_cpus))
    except (LoadConfigError, PlotUnavailableError, ValueError, OSError) as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = _run(scenario, url, args)
    except (RunError, RuntimeError) as exc:
        print(f"\n{parser.prog}: the run failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"\n{parser.prog}: interrupted", file=sys.stderr)
        return EXIT_FAILED
    print(format_result(result))
    if args.out:
        write_json(result, args.out)
        print(f"JSON result: {args.out}")
    if args.plot:
        try:
            plot(result, args.plot)
            print(f"plot: {args.plot}")
        except PlotUnavailableError as exc:
            print(f"{parser.prog}: {exc}", file=sys.stderr)
            return EXIT_USAGE
    return EXIT_OK if result.converged and not result.errors else EXIT_DEGRADED


def _check_options(args: argparse.Namespace) -> None:
    """Refuse before the run what would only fail after it (a missing matplotlib...)."""
    if not 1 <= args.workers <= 64:
        raise LoadConfigError("--workers must be between 1 and 64")
    if args.server_cpu is not None and not args.start_server:
        raise LoadConfigError("--server-cpu only applies with --start-server")
    if args.server_pid is not None and not psutil.pid_exists(args.server_pid):
        raise LoadConfigError(f"--server-pid {args.server_pid}: no such process")
    if args.plot:
        require_matplotlib()


def _run(scenario: Scenario, url: str | None, args: argparse.Namespace) -> AnyResult:
    progress = None if args.quiet else progress_printer()
    tokens: tuple[str, ...] = args.tokens
    options = RunOptions(
        workers=args.workers, server_pid=args.server_pid, progress=progress, tokens=tokens
    )
    if url is not None:
        return _finish_line(run_scenario(scenario, url, options), progress)
    with (
        tempfile.TemporaryDirectory(prefix="collab-load-") as data_dir,
        ServerProcess(Path(data_dir), cpu=args.server_cpu) as server,
    ):
        options = RunOptions(
            workers=args.workers, server_pid=server.pid, progress=progress, tokens=tokens
        )
        return _finish_line(run_scenario(scenario, server.ws_url, options), progress)


def _finish_line(result: AnyResult, progress: Callable[[str], None] | None) -> AnyResult:
    if progress is not None and sys.stderr.isatty():
        sys.stderr.write("\n")
    return result
