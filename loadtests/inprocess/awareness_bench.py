"""Awareness micro-benchmark: ``python -m loadtests.inprocess.awareness_bench``.

What one awareness message (a cursor move) costs the server's room, in process: no sockets,
each connection's transport is a counter. One sender, ``--clients`` connections in the room,
``--messages`` cursor moves, one per event-loop turn (so each is relayed alone, the common
case). Reports CPU microseconds per message for ``Room.receive`` alone (decode, ownership,
the state's parse and identity stamp, storage) and for the whole path including the relay
to every other connection (encode once, write to each). Loopback-free and bounded: about a
second per run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import cast

from crdt.document import RoomDoc
from crdt.ids import RoomName
from persistence.rooms.memory import MemoryRoomStore
from protocol import awareness as awareness_codec
from protocol.awareness import AwarenessEntry, AwarenessUpdate
from protocol.ysync import AwarenessMessage, Limits, encode
from server.identity.authentication import Principal
from server.realtime.connection import Connection
from server.realtime.direct import FanoutWriter
from server.realtime.rooms import Room


class CountingWriter:
    """Stands in for a transport: counts the frames written to it."""

    def __init__(self) -> None:
        self.frames = 0

    def write(self, frame: bytes, max_buffered: int) -> bool:
        self.frames += 1
        return True

    def close(self, code: int, reason: str) -> None:
        pass


def _frames(client_id: int, count: int, with_user: bool) -> list[bytes]:
    frames = []
    for clock in range(1, count + 1):
        fields: dict[str, object] = {"cursor": {"anchor": clock % 500, "head": clock % 500 + 3}}
        if with_user:
            fields["user"] = {"name": "Eve", "color": "#30bced"}
        state = json.dumps(fields)
        update = AwarenessUpdate((AwarenessEntry(client_id, clock, state),))
        frames.append(encode(AwarenessMessage(awareness_codec.encode(update))))
    return frames


async def _run(clients: int, messages: int, with_user: bool) -> dict[str, float]:
    room = Room(
        RoomName("bench", "aw"),
        RoomDoc(),
        MemoryRoomStore(),
        limits=Limits(),
        max_awareness_entries=64,
        on_failure=lambda room, exc: None,
        on_tainted=lambda room: None,
    )
    writers = [CountingWriter() for _ in range(clients)]
    conns = []
    for number, writer in enumerate(writers):
        conn = Connection("bench/aw", max_buffered_bytes=1 << 30, fast=cast(FanoutWriter, writer))
        conn.principal = Principal(
            f"user-{number}", f"u{number}@example.com", "Eve", "analyst", "s"
        )
        room.join(conn)
        conns.append(conn)
    frames = _frames(client_id=4242, count=messages, with_user=with_user)
    sender = conns[0]
    receive = 0.0
    start = time.process_time()
    for frame in frames:
        before = time.process_time()
        room.receive(sender, frame)
        receive += time.process_time() - before
        await asyncio.sleep(0)  # the relay runs at the end of this turn
    await asyncio.sleep(0)
    total = time.process_time() - start
    delivered = sum(writer.frames for writer in writers[1:]) - (clients - 1)  # minus joins
    return {
        "receive_us": receive / messages * 1e6,
        "total_us": total / messages * 1e6,
        "delivered_per_message": delivered / messages,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    for with_user in (True, False):
        runs = [
            asyncio.run(_run(args.clients, args.messages, with_user)) for _ in range(args.repeat)
        ]
        best = {key: min(run[key] for run in runs) for key in runs[0]}
        print(
            f"{args.clients} clients, {args.messages} cursor moves "
            f"({'with' if with_user else 'without'} a user field), best of {args.repeat}: "
            f"receive {best['receive_us']:.1f} us/message, with the relay "
            f"{best['total_us']:.1f} us/message ({best['delivered_per_message']:.0f} frames each)"
        )


if __name__ == "__main__":
    main()
