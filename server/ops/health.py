"""Liveness and readiness.

* live: the process runs and its event loop answers (``/livez``: always 200 when it can
  answer at all).
* ready: the node should receive traffic (``/readyz``): not while it is starting (until
  the app's lifespan finished opening everything), not while it drains (from the stop
  signal on: the load balancer takes it out of rotation before its sockets close with
  1012), and not while a configured dependency is down (Redis, PostgreSQL, MongoDB: each
  checked with one cheap call, at most once per ``cache_seconds``, each within
  ``timeout`` seconds), each failure with its reason.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from persistence.errors import StorageError
from server.flights import Flights

CHECK_TIMEOUT_SECONDS: Final = 1.0
CACHE_SECONDS: Final = 1.0
MAX_REASON: Final = 200

Probe = Callable[[], Awaitable[object]]


class Phase(enum.StrEnum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    ok: bool
    reason: str = ""
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class Report:
    ready: bool
    phase: Phase
    checks: tuple[CheckResult, ...]

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "status": "ready" if self.ready else "not ready",
            "phase": str(self.phase),
            "checks": {
                check.name: {"ok": check.ok, **({"reason": check.reason} if check.reason else {})}
                for check in self.checks
            },
        }
        return body


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:MAX_REASON]


class Readiness:
    """The node's phase and the checks of its dependencies."""

    def __init__(
        self,
        *,
        timeout: float = CHECK_TIMEOUT_SECONDS,
        cache_seconds: float = CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.phase = Phase.STARTING
        self.drain_reason = ""
        self._timeout = timeout
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._probes: dict[str, Probe] = {}
        self._cached: tuple[float, tuple[CheckResult, ...]] | None = None
        self._round: Flights[None, tuple[CheckResult, ...]] = Flights()
        # For /metrics: the last result of each dependency check, and failures by check.
        self.last: dict[str, CheckResult] = {}
        self.failures: Counter[str] = Counter()

    def add_check(self, name: str, probe: Probe) -> None:
        """Check ``probe()`` (it raises when the dependency is down) before saying ready."""
        self._probes[name] = probe
        self._cached = None

    def clear_checks(self) -> None:
        self._probes.clear()
        self._cached = None

    def started(self) -> None:
        if self.phase is Phase.STARTING:
            self.phase = Phase.READY

    def drain(self, reason: str = "stopping") -> None:
        """From now on the node is not ready (idempotent; the first reason is kept). Safe to
        call from a signal handler: it only sets two attributes."""
        if self.phase is not Phase.DRAINING:
            self.drain_reason = reason
            self.phase = Phase.DRAINING

    async def report(self) -> Report:
        phase = self.phase
        checks = await self._checks()
        if phase is Phase.DRAINING:
            checks = (CheckResult("draining", False, self.drain_reason), *checks)
        elif phase is Phase.STARTING:
            checks = (CheckResult("starting", False, "the app is still starting"), *checks)
        ready = phase is Phase.READY and all(check.ok for check in checks)
        return Report(ready, phase, checks)

    async def _checks(self) -> tuple[CheckResult, ...]:
        now = self._clock()
        if self._cached is not None and now - self._cached[0] < self._cache_seconds:
            return self._cached[1]
        # Concurrent probes of /readyz share one round of checks.
        results = await self._round.run(None, self._run_checks)
        self._cached = (self._clock(), results)
        return results

    async def _run_checks(self) -> tuple[CheckResult, ...]:
        names = list(self._probes)
        results = await asyncio.gather(*(self._check(name, self._probes[name]) for name in names))
        for result in results:
            self.last[result.name] = result
            if not result.ok:
                self.failures[result.name] += 1
        return tuple(results)

    async def _check(self, name: str, probe: Probe) -> CheckResult:
        started = self._clock()
        try:
            async with asyncio.timeout(self._timeout):
                await probe()
        except TimeoutError:
            return CheckResult(
                name, False, f"no answer within {self._timeout:g} s", self._clock() - started
            )
        except (StorageError, OSError, RuntimeError, ValueError) as exc:
            return CheckResult(name, False, _reason(exc), self._clock() - started)
        return CheckResult(name, True, "", self._clock() - started)
