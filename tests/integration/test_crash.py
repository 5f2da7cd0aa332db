"""kill -9 at any moment loses no update that any client had received from the server."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from loadtests.client import YClient
from loadtests.crash import clocks
from loadtests.harness import ServerProcess

ROOMS = ["crash/a", "crash/b", "crash/c"]


@pytest.mark.slow
async def test_sigkill_mid_stream_loses_nothing_any_client_saw(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    try:
        writers = [YClient(server.ws_url, room) for room in ROOMS]
        watchers = [YClient(server.ws_url, room) for room in ROOMS]
        for client in writers + watchers:
            await client.connect()
            await asyncio.wait_for(client.synced.wait(), 10)
        rng = random.Random(7)

        async def type_into(writer: YClient) -> None:
            for i in range(2000):
                writer.text.insert(rng.randint(0, len(writer.text)), f"{i % 10}")
                await writer.flush()
                if i % 20 == 0:
                    await asyncio.sleep(0)

        typing = [asyncio.create_task(type_into(writer)) for writer in writers]
        # Kill while the edits are streaming: once every watcher has seen some of them.
        for watcher in watchers:
            await watcher.wait_for(lambda w=watcher: len(w.text) >= 50)  # type: ignore[misc]
        server.kill()
        seen = {watcher.room: (str(watcher.text), watcher.doc.get_state()) for watcher in watchers}
        for task in typing:
            task.cancel()
        await asyncio.gather(*typing, return_exceptions=True)
        for client in writers + watchers:
            await client.close()
    finally:
        server.kill()

    restarted = ServerProcess(tmp_path / "data").start()
    try:
        for room, (text, state_vector) in seen.items():
            async with YClient(restarted.ws_url, room) as fresh:
                # Everything a watcher had received was durable before it was sent: the
                # restarted server has at least every (client, clock) the watcher had.
                had, has = clocks(state_vector), clocks(fresh.doc.get_state())
                assert all(has.get(client, 0) >= clock for client, clock in had.items()), room
                assert _contains_in_order(str(fresh.text), text), room
    finally:
        restarted.stop()


def _contains_in_order(whole: str, part: str) -> bool:
    """Whether ``part`` is a subsequence of ``whole`` (the watcher's text may lack edits the
    server stored after the watcher's last frame, never the other way round)."""
    chars = iter(whole)
    return all(char in chars for char in part)
