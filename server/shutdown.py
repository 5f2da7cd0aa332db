"""Bounded shutdown: a deadline for every step, and one for the whole process.

On SIGTERM (or SIGINT) uvicorn stops listening, closes the sockets (1012) and waits at most
:data:`SOCKETS_SECONDS` for them; then the app's lifespan flushes rooms, snapshots and
signals, settles its background tasks and closes its stores, each step within its own
deadline below (a step that overruns is logged and abandoned, and the next one runs).
Whatever still hangs (a driver call that never returns, a worker thread stuck in I/O), the
:class:`Watchdog` ends the process :data:`PROCESS_SECONDS` after the signal, with exit code
70 and every thread's stack on stderr. An orderly stop exits 0.

Nothing is lost by an abandoned step that was not already at risk: accepted updates are in
the journal (or the spool) before anyone saw them; flushing and compacting only shorten the
next load.
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine, Generator
from contextvars import Context
from typing import Any, Final, TypeVar

log = logging.getLogger(__name__)

SOCKETS_SECONDS: Final = 5  # closing handshakes of the open sockets (uvicorn's graceful wait)
ROOMS_SECONDS: Final = 5.0  # rooms' pending journal writes and final compactions
SNAPSHOTS_SECONDS: Final = 5.0  # derived content of the documents edited last
SIGNALS_SECONDS: Final = 2.0  # leaves and unlocks reaching the other nodes
TASKS_SECONDS: Final = 3.0  # background tasks finishing; then they are cancelled
CLOSE_SECONDS: Final = 5.0  # each store, spool and service closing
PROCESS_SECONDS: Final = 30.0  # from the signal to the end of the process, whatever happens
WATCHDOG_EXIT_CODE: Final = 70  # EX_SOFTWARE

T = TypeVar("T")


async def bounded(what: str, step: Callable[[], Awaitable[object]], seconds: float) -> bool:
    """Run ``step()`` for at most ``seconds``; on timeout it is cancelled and a WARNING
    logged. Errors are logged, never raised: the next shutdown step must run. Returns
    whether the step completed."""
    try:
        async with asyncio.timeout(seconds):
            await step()
    except TimeoutError:
        log.warning("shutdown: %s did not finish within %.1f s; abandoned", what, seconds)
        return False
    except Exception:
        log.exception("shutdown: %s failed", what)
        return False
    return True


class TaskGroup(asyncio.TaskGroup):
    """An :class:`asyncio.TaskGroup` whose tasks can be given a deadline at shutdown.

    A task group waits for all its tasks when it exits, for ever if one never ends;
    :meth:`settle` waits at most ``seconds`` and cancels the rest, so that the exit
    that follows is quick."""

    def __init__(self) -> None:
        super().__init__()
        self._running: set[asyncio.Task[Any]] = set()

    def create_task(
        self,
        coro: Generator[Any, None, T] | Coroutine[Any, Any, T],
        *,
        name: str | None = None,
        context: Context | None = None,
    ) -> asyncio.Task[T]:
        task = super().create_task(coro, name=name, context=context)
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return task

    async def settle(self, seconds: float) -> int:
        """Wait at most ``seconds`` for the running tasks, then cancel the others (and wait
        up to a second for them to unwind). Returns how many were cancelled."""
        pending = set(self._running)
        if pending:
            _, pending = await asyncio.wait(pending, timeout=seconds)
        for task in pending:
            log.warning(
                "shutdown: task %r still running after %.1f s; cancelled", task.get_name(), seconds
            )
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)
        return len(pending)


class Watchdog:
    """Ends the process ``seconds`` after :meth:`start` unless it has exited by then.

    A daemon thread, so that it runs whatever the event loop and the interpreter's exit
    (which joins worker threads) are stuck on. Idempotent."""

    def __init__(self, seconds: float = PROCESS_SECONDS) -> None:
        self._seconds = seconds
        self._timer: threading.Timer | None = None

    def start(self) -> None:
        if self._timer is not None:
            return
        self._timer = threading.Timer(self._seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def _expire(self) -> None:
        print(
            f"collab: shutdown did not finish within {self._seconds:g} s of the signal; "
            "exiting now. Threads:",
            file=sys.stderr,
            flush=True,
        )
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        sys.stderr.flush()
        os._exit(WATCHDOG_EXIT_CODE)
