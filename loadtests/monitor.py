"""CPU and memory of the server process under test, read through psutil.

CPU is user + system time of the process itself (all its threads, children excluded), so a
number of 100 % means one core fully busy. Reads are cheap and never raise once the process
is gone: they return None and the report says the server metrics are missing.
"""

from __future__ import annotations

import time

import psutil


class ProcessMonitor:
    """Samples one process; :meth:`sample` once a second gives the CPU % of the last interval."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._process = psutil.Process(pid)
        self.rss_peak = 0
        self._last: tuple[float, float] | None = None

    def cpu_seconds(self) -> float | None:
        try:
            times = self._process.cpu_times()
        except psutil.Error:
            return None
        return float(times.user + times.system)

    def rss_bytes(self) -> int | None:
        try:
            rss = int(self._process.memory_info().rss)
        except psutil.Error:
            return None
        self.rss_peak = max(self.rss_peak, rss)
        return rss

    def sample(self) -> float | None:
        """CPU % of one core since the previous call (None on the first call)."""
        cpu = self.cpu_seconds()
        self.rss_bytes()
        now = time.monotonic()
        last, self._last = self._last, (now, cpu) if cpu is not None else None
        if last is None or cpu is None or now <= last[0]:
            return None
        return round(100 * (cpu - last[1]) / (now - last[0]), 1)
