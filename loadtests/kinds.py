"""The scenario kinds that are not one measured window: saturation steps and cold loads.

``editing``, ``presence``, ``reconnect`` and ``herd`` are one window of the coordinator
(:func:`loadtests.runner.run_load`). Two kinds are built on top:

* ``saturation`` runs the editing scenario once per rate of ``stage_rates`` (fresh rooms and
  connections each stage) and stops at the first stage whose fan-out p99 passes
  ``p99_limit_ms`` or that leaves an edit undelivered; the result is the last good stage.
* ``cold_load`` (:mod:`loadtests.coldload`) ingests a long history into a fresh room, then
  times late joiners.

:func:`run_scenario` runs any kind.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from loadtests.coldload import ColdLoadResult, run_cold_load
from loadtests.runner import RunOptions, RunResult, run_load
from loadtests.scenario import Scenario

_GENERATOR_BOUND_PERCENT = 85.0


@dataclass(slots=True)
class Stage:
    rate: float
    result: RunResult
    good: bool
    why: str

    def to_json(self) -> dict[str, Any]:
        result = self.result
        server = result.server or {}
        return {
            "rate_per_writer": self.rate,
            "good": self.good,
            "why": self.why,
            "edits_sent_per_second": result.edits["sent_per_second"],
            "deliveries_per_second": result.edits["delivered_per_second"],
            "frames_per_second": round(result.edits["frames_in_window"] / result.window_seconds),
            "fanout_ms": result.fanout.to_json(),
            "lost_deliveries": result.errors.get("lost_delivery", 0),
            "server_cpu_percent": server.get("cpu_percent_of_core"),
            "server_cpu_us_per_frame": server.get("cpu_us_per_frame"),
            "generator_cpu_percent": result.generator["cpu_percent_of_core"],
            "generator_bound": generator_bound(result),
            "converged": result.converged,
        }


def generator_bound(result: RunResult) -> bool:
    """Whether the generator, not the server, may have set the pace of this run."""
    return (
        bool(result.generator["saturated"])
        or max(result.generator["worker_cpu_percent"] or [0.0]) > _GENERATOR_BOUND_PERCENT
    )


@dataclass(slots=True)
class SaturationResult:
    scenario: Scenario
    target: str
    stages: list[Stage] = field(default_factory=list)

    @property
    def last_good(self) -> Stage | None:
        good = [stage for stage in self.stages if stage.good]
        return good[-1] if good else None

    @property
    def saturated(self) -> bool:
        """A stage failed: the server's limit lies between the last good stage and it."""
        return any(not stage.good for stage in self.stages)

    @property
    def converged(self) -> bool:
        return all(stage.result.converged for stage in self.stages if stage.good)

    @property
    def errors(self) -> dict[str, int]:
        last = self.last_good
        return {} if last is None else last.result.errors

    def to_json(self) -> dict[str, Any]:
        last = self.last_good
        return {
            "tool": "collab-loadtests",
            "format": 1,
            "kind": "saturation",
            "scenario": self.scenario.to_dict(),
            "target": self.target,
            "saturated": self.saturated,
            "last_good": None if last is None else last.to_json(),
            "stages": [stage.to_json() for stage in self.stages],
        }


def judge(result: RunResult, limit_ms: float) -> tuple[bool, str]:
    """Is this stage within the server's capacity? ``(good, why not)``."""
    lost = result.errors.get("lost_delivery", 0) + result.errors.get("drain_timeout_clients", 0)
    if result.clients["connected"] < result.clients["planned"]:
        return False, "not every client connected"
    if lost:
        return False, f"{lost} deliveries lost"
    p99 = result.fanout.p99
    if math.isnan(p99):
        return False, "no edit reached every client"
    if p99 > limit_ms:
        return False, f"fan-out p99 {p99:.1f} ms > {limit_ms:g} ms"
    return True, ""


def run_saturation(
    scenario: Scenario, base_url: str, options: RunOptions, *, warmup: float = 0.0
) -> SaturationResult:
    """Step the writers' rate up until a stage fails; blocks for every stage run.

    ``warmup`` seconds at the first rate are run first and discarded (a JIT-compiled server
    such as Node's is slow for its first second of traffic).
    """
    outcome = SaturationResult(scenario, base_url)
    if warmup > 0:
        first = dataclasses.replace(scenario.stage(scenario.stage_rates[0]), duration=warmup)
        run_load(first, base_url, options)
    for rate in scenario.stage_rates:
        if options.progress is not None:
            options.progress(f"[saturation] stage: {rate:g} edits/s per writer")
        result = run_load(scenario.stage(rate), base_url, options)
        good, why = judge(result, scenario.p99_limit_ms)
        outcome.stages.append(Stage(rate, result, good, why))
        if not good:
            break
    return outcome


AnyResult = RunResult | SaturationResult | ColdLoadResult


def run_scenario(
    scenario: Scenario,
    base_url: str,
    options: RunOptions | None = None,
    *,
    warmup: float = 0.0,
) -> AnyResult:
    """Run a scenario of any kind against ``base_url`` (already checked by the caller).

    ``warmup``: seconds of discarded load before a saturation run's first stage.
    """
    options = options or RunOptions()
    if scenario.kind == "saturation":
        return run_saturation(scenario, base_url, options, warmup=warmup)
    if scenario.kind == "cold_load":
        return run_cold_load(scenario, base_url, options)
    return run_load(scenario, base_url, options)
