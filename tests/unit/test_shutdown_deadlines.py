"""The shutdown deadlines: a step that hangs is abandoned, tasks that never end are
cancelled, and the watchdog ends a process whose shutdown hangs anyway."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from server.shutdown import WATCHDOG_EXIT_CODE, TaskGroup, bounded


async def test_a_hanging_step_is_abandoned_and_a_failing_one_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    forever = asyncio.Event()
    assert not await bounded("waiting for ever", forever.wait, 0.05)
    assert "waiting for ever did not finish within" in caplog.text

    async def broken() -> None:
        raise RuntimeError("boom")

    assert not await bounded("a broken step", broken, 1.0)
    assert "a broken step failed" in caplog.text
    assert await bounded("a quick step", lambda: asyncio.sleep(0), 1.0)


async def test_settle_cancels_the_tasks_that_do_not_end() -> None:
    finished = asyncio.Event()
    async with TaskGroup() as tasks:
        endless = tasks.create_task(asyncio.Event().wait(), name="endless")
        quick = tasks.create_task(finished.wait(), name="quick")
        finished.set()
        assert await tasks.settle(0.05) == 1
    assert endless.cancelled()
    assert quick.done()
    assert not quick.cancelled()


def test_the_watchdog_ends_a_hung_process() -> None:
    code = (
        "import time\nfrom server.shutdown import Watchdog\nWatchdog(0.2).start()\ntime.sleep(60)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == WATCHDOG_EXIT_CODE
    assert "shutdown did not finish within 0.2 s" in result.stderr
