"""Unfinished request heads against a fresh server: ``python -m loadtests.bench_heads``.

Opens ``--connections`` raw TCP connections to a ``collab serve`` child process, each
sending part of a WebSocket upgrade head (or a request line past 8 KiB that never ends),
and samples the server's open file descriptors until they are all closed or
``--max-seconds`` pass. With ``COLLAB_HEADER_TIMEOUT_SECONDS`` (``--timeout``) the
descriptors come back at the deadline. Loopback only; markdown to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from loadtests.harness import ServerProcess

PARTIAL_HEAD = b"GET /ws/bench/heads HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConn"


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def _attack(
    server: ServerProcess, connections: int, payload: bytes, max_seconds: float
) -> list[tuple[float, int]]:
    """Open the connections, send ``payload`` on each; (seconds since, server fds) samples."""
    writers: list[asyncio.StreamWriter] = []
    samples = [(0.0, _fds(server.pid))]
    started = time.monotonic()
    for _ in range(connections):
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(payload)
        writers.append(writer)
    await asyncio.gather(*(writer.drain() for writer in writers), return_exceptions=True)
    baseline = samples[0][1]
    while time.monotonic() - started < max_seconds:
        samples.append((time.monotonic() - started, _fds(server.pid)))
        if len(samples) > 2 and samples[-1][1] <= baseline:
            break
        await asyncio.sleep(0.5)  # a sampling interval, not a synchronisation
    for writer in writers:
        writer.close()
    return samples


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.bench_heads")
    parser.add_argument("--connections", type=int, default=300)
    parser.add_argument("--timeout", type=float, default=10.0, help="header timeout, s")
    parser.add_argument("--max-seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    cases = {
        "partial upgrade head": PARTIAL_HEAD,
        "9 KB request line, unfinished": b"GET /ws/" + b"a" * 9000,
    }
    print(f"{args.connections} connections, COLLAB_HEADER_TIMEOUT_SECONDS={args.timeout:g}\n")
    print(
        "| case | server fds before | fds with the connections open | fds back to baseline after |"
    )
    print("| --- | --- | --- | --- |")
    for name, payload in cases.items():
        with tempfile.TemporaryDirectory() as data:
            env = {"COLLAB_HEADER_TIMEOUT_SECONDS": str(args.timeout)}
            with ServerProcess(Path(data) / "data", env=env) as server:
                samples = asyncio.run(_attack(server, args.connections, payload, args.max_seconds))
        before = samples[0][1]
        peak = max(count for _, count in samples)
        back = next((t for t, count in samples[1:] if count <= before), None)
        after = f"{back:.1f} s" if back is not None else f"not within {args.max_seconds:g} s"
        print(f"| {name} | {before} | {peak} | {after} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
