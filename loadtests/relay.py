"""A bare broadcast relay: the ceiling of a y-websocket server on this stack.

``python -m loadtests.relay --port PORT`` serves ``ws://127.0.0.1:PORT/<any path>``: every
binary message a client sends is broadcast, unchanged, to the other clients of the same path
with ``websockets.broadcast()`` (one write per recipient, no task or await per recipient).
No CRDT work, no persistence, no state: the cost of moving frames and nothing else.

One exception keeps y-websocket clients working: a client's sync step 1 is answered with an
empty sync step 2 (an update with no structs and no deletions), so that the client considers
itself synced and starts; it is not relayed. Everything else (updates, awareness, a client's
own step 2) is relayed. A client joining late therefore starts from an empty document: the
relay cannot serve late joiners or cold loads, which the benchmark reports as "n/a".

The server runs on uvloop and prints ``relay listening on ws://127.0.0.1:PORT`` once bound.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence

import uvloop
import websockets
from websockets.asyncio.server import ServerConnection, serve

from protocol.errors import ProtocolError
from protocol.ysync import SyncStep1, SyncStep2, decode, encode

EMPTY_STEP2 = encode(SyncStep2(b"\x00\x00"))


class Relay:
    """Clients by path; :meth:`handler` is the ``websockets.serve`` handler."""

    def __init__(self) -> None:
        self.paths: dict[str, set[ServerConnection]] = {}

    async def handler(self, ws: ServerConnection) -> None:
        path = ws.request.path if ws.request is not None else "/"
        peers = self.paths.setdefault(path, set())
        peers.add(ws)
        try:
            async for message in ws:
                if isinstance(message, str):
                    continue
                if _is_step1(message):
                    await ws.send(EMPTY_STEP2)
                    continue
                websockets.broadcast([peer for peer in peers if peer is not ws], message)
        except websockets.ConnectionClosed:
            pass
        finally:
            peers.discard(ws)
            if not peers:
                self.paths.pop(path, None)


def _is_step1(message: bytes) -> bool:
    # Only the first bytes decide; a 2-byte prefix check avoids decoding every update.
    if message[:2] != b"\x00\x00":
        return False
    try:
        return isinstance(decode(message), SyncStep1)
    except ProtocolError:
        return False


async def serve_relay(host: str, port: int, bound: asyncio.Future[int] | None = None) -> None:
    """Serve until cancelled or SIGTERM; prints the listening line once bound.

    ``bound`` receives the port once the server listens (for callers that asked for port 0).
    """
    relay = Relay()
    async with serve(
        relay.handler, host, port, compression=None, max_size=None, ping_interval=None
    ) as server:
        actual = next(iter(server.sockets)).getsockname()[1]
        print(f"relay listening on ws://{host}:{actual}", flush=True)
        if bound is not None:
            bound.set_result(actual)
        stop = asyncio.get_running_loop().create_future()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
        await stop


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.relay",
        description="Bare y-websocket broadcast relay (no CRDT, no persistence) on uvloop.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve_relay(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
