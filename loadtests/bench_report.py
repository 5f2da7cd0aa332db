"""The report of the side-by-side benchmark (:mod:`loadtests.bench`): the markdown tables of
every scenario, memory per idle connection and per room, and the plain statement of each
target (met, not met, not measured)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from loadtests.peers import peer
from loadtests.scenario import SCENARIO_DIR, Scenario, load_scenario

Figures = dict[str, float | None]


@dataclass(frozen=True, slots=True)
class BenchScenario:
    key: str
    file: str
    title: str
    repeats: bool = True
    """Short scenarios repeat; long or deterministic ones (saturation, memory) run once."""
    quick: dict[str, Any] = field(default_factory=dict)
    """Overrides for ``--quick``."""


class Bench(Protocol):
    """What the report reads of a finished benchmark (:class:`loadtests.bench.Bench`)."""

    def medians(self, scenario: str, server: str) -> tuple[Figures, str, int]:
        """Median of every figure over the repeats; the status of the first run; run count."""
        ...

    def overrides(self, item: BenchScenario) -> dict[str, Any]:
        """The scenario settings the run used."""
        ...


# The figure each table's ratio column compares, and whether higher is better.
KEY_FIGURE: dict[str, tuple[str, bool]] = {
    "editing": ("us_per_frame", False),
    "saturation": ("edits_per_s", True),
    "idle": ("rss_open_mb", False),
    "cold_load": ("ingest_edits_per_s", True),
    "herd": ("connect_p99_ms", False),
}

COLUMNS: dict[str, list[tuple[str, str]]] = {
    "editing": [
        ("p50_ms", "fan-out p50 ms"),
        ("p99_ms", "fan-out p99 ms"),
        ("max_ms", "max ms"),
        ("edits_per_s", "edits/s"),
        ("frames_per_s", "frames/s"),
        ("server_cpu_pct", "server CPU %"),
        ("us_per_frame", "server CPU us/frame"),
        ("generator_cpu_pct", "generator CPU %"),
        ("converged", "converged"),
        ("errors", "errors"),
    ],
    "saturation": [
        ("us_per_frame_at_100", "server CPU us/frame at 100 edits/s"),
        ("p99_at_100", "p99 ms at 100 edits/s"),
        ("edits_per_s", "edits/s at saturation"),
        ("frames_per_s", "frames/s"),
        ("deliveries_per_s", "deliveries/s"),
        ("p99_ms", "p99 ms"),
        ("us_per_frame", "server CPU us/frame"),
        ("server_cpu_pct", "server CPU %"),
        ("generator_cpu_pct", "generator CPU %"),
        ("saturated", "saturated"),
    ],
    "idle": [
        ("connected", "connected"),
        ("rss_before_mb", "RSS before MB"),
        ("rss_open_mb", "RSS open MB"),
        ("kb_per_connection", "KB per connection (incl. rooms)"),
        ("connect_p99_ms", "connect p99 ms"),
    ],
    "cold_load": [
        ("ingest_edits_per_s", "ingest edits/s"),
        ("join_p50_ms", "join to full state p50 ms"),
        ("join_max_ms", "join max ms"),
        ("us_per_edit", "server CPU us/edit"),
        ("converged", "converged"),
    ],
    "herd": [
        ("connected", "synced"),
        ("connect_p50_ms", "connect+sync p50 ms"),
        ("connect_p99_ms", "p99 ms"),
        ("connect_max_ms", "max ms"),
        ("sync_p99_ms", "sync p99 ms"),
        ("converged", "converged"),
    ],
}


def family(scenario: Scenario) -> str:
    if scenario.kind in ("saturation", "cold_load", "herd"):
        return scenario.kind
    return "idle" if scenario.idle else "editing"


def brief(figures: Figures) -> str:
    return ", ".join(f"{k} {_fmt(v)}" for k, v in list(figures.items())[:6])


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None or theirs == 0:
        return "-"
    return f"{ours / theirs:.2f}"


def scenario_table(
    bench: Bench, item: BenchScenario, scenario: Scenario, servers: list[str]
) -> str:
    kind = family(scenario)
    columns = COLUMNS[kind]
    key, _ = KEY_FIGURE[kind]
    key_label = dict(columns)[key]
    collab, _, _ = bench.medians(item.key, "collab")
    header = "| server | runs | " + " | ".join(label for _, label in columns)
    header += f" | collab / server ({key_label}) |"
    lines = [header, "|" + "---|" * (len(columns) + 3)]
    for name in servers:
        figures, status, runs = bench.medians(item.key, name)
        label = peer(name).label
        if not figures:
            lines.append(f"| {label} | 0 | {status} |" + " |" * (len(columns) + 0))
            continue
        cells = []
        for column, _ in columns:
            value = figures.get(column)
            if column == "saturated" and value is not None:
                cells.append("yes" if value else "no (last stage good)")
            elif column == "converged" and value is not None:
                cells.append("yes" if value == 1 else ("no" if value == 0 else f"{value:.0%}"))
            elif column.startswith("join") and status.startswith("joins n/a"):
                cells.append("n/a")
            else:
                cells.append(_fmt(value))
        compare = "1" if name == "collab" else ratio(collab.get(key), figures.get(key))
        lines.append(f"| {label} | {runs} | " + " | ".join(cells) + f" | {compare} |")
    notes = [
        f"{peer(name).label}: {status}"
        for name in servers
        if (status := bench.medians(item.key, name)[1]) not in ("ok", "not run")
    ]
    return "\n".join(lines + ([""] + [f"- {note}" for note in notes] if notes else []))


def memory_table(bench: Bench, servers: list[str]) -> str:
    """Per connection and per room, from the 1,000- and 5,000-connection runs (100 rooms)."""
    lines = [
        "| server | RSS before | 1,000 open | 5,000 open | per connection (5,000 - 1,000) "
        "| per room (rest of 1,000) |",
        "|---|---|---|---|---|---|",
    ]
    for name in servers:
        small, _, _ = bench.medians("idle-1000", name)
        large, _, _ = bench.medians("idle-5000", name)
        before = small.get("rss_before_mb")
        rss1 = small.get("rss_open_mb")
        rss5 = large.get("rss_open_mb")
        if before is None or rss1 is None or rss5 is None:
            continue
        per_conn = (rss5 - rss1) / 4000 * 1e3
        per_room = (rss1 - before - per_conn * 1000 / 1e3) / 100 * 1e3
        lines.append(
            f"| {peer(name).label} | {before:.1f} MB | {rss1:.1f} MB | {rss5:.1f} MB "
            f"| {per_conn:.1f} KB | {per_room:.1f} KB |"
        )
    return "\n".join(lines)


def render(
    bench: Bench, scenarios: Sequence[BenchScenario], servers: list[str], header: list[str]
) -> str:
    lines = list(header)
    for item in scenarios:
        scenario = load_scenario(SCENARIO_DIR / f"{item.file}.toml", bench.overrides(item))
        lines += ["", f"### {item.title}", "", scenario_table(bench, item, scenario, servers)]
    if any(item.key in ("idle-1000", "idle-5000") for item in scenarios):
        lines += [
            "",
            "### Memory per idle connection and per room",
            "",
            memory_table(bench, servers),
        ]
    lines += ["", "### Targets (collab on embedded defaults)", "", *targets(bench)]
    return "\n".join(lines)


def _get(bench: Bench, scenario: str, server: str, name: str) -> float | None:
    return bench.medians(scenario, server)[0].get(name)


def targets(bench: Bench) -> list[str]:
    """A plain statement per target of issue 7: met, not met, or not measured."""
    out = []

    def say(name: str, ok: bool | None, detail: str) -> None:
        verdict = "not measured" if ok is None else ("met" if ok else "NOT met")
        out.append(f"- {name}: **{verdict}** ({detail})")

    ours = _get(bench, "saturation", "collab", "us_per_frame_at_100")
    node = _get(bench, "saturation", "node", "us_per_frame_at_100")
    say(
        "CPU per delivered frame at or below the Node reference's (1 room x 210 clients, "
        "100 edits/s)",
        None if ours is None or node is None else ours <= node,
        f"collab {_fmt(ours)} us, Node {_fmt(node)} us; at 1 room x 50 clients, 25 edits/s: "
        f"collab {_fmt(_get(bench, 'room50', 'collab', 'us_per_frame'))} us, Node "
        f"{_fmt(_get(bench, 'room50', 'node', 'us_per_frame'))} us",
    )
    ours_sat = _get(bench, "saturation", "collab", "edits_per_s")
    pycrdt = _get(bench, "saturation", "pycrdt-websocket", "edits_per_s")
    say(
        "saturation at least 4x pycrdt-websocket's",
        None if ours_sat is None or pycrdt is None else ours_sat >= 4 * pycrdt,
        f"collab {_fmt(ours_sat)} edits/s, pycrdt-websocket {_fmt(pycrdt)} edits/s"
        + _unsaturated(bench, "collab"),
    )
    frames = _get(bench, "saturation", "collab", "frames_per_s")
    relay = _get(bench, "saturation", "relay", "frames_per_s")
    say(
        "at least 50% of the bare relay's frames/s (at saturation)",
        None if frames is None or relay is None else frames >= 0.5 * relay,
        f"collab {_fmt(frames)} frames/s, relay {_fmt(relay)} frames/s"
        + _unsaturated(bench, "relay"),
    )
    for key in ("room50", "room50-cursors"):
        p99 = _get(bench, key, "collab", "p99_ms")
        say(
            f"p99 under 50 ms at 1 room x 50 clients ({key})",
            None if p99 is None else p99 < 50,
            f"{_fmt(p99)} ms",
        )
    rss1 = _get(bench, "idle-1000", "collab", "rss_open_mb")
    rss5 = _get(bench, "idle-5000", "collab", "rss_open_mb")
    per = None if rss1 is None or rss5 is None else (rss5 - rss1) / 4000 * 1e3
    say(
        "memory per idle connection under 20 KB",
        None if per is None else per < 20,
        f"{_fmt(per)} KB",
    )
    say(
        "5,000 idle connections in under 500 MB RSS",
        None if rss5 is None else rss5 < 500,
        f"{_fmt(rss5)} MB",
    )
    ingest = _get(bench, "cold-load", "collab", "ingest_edits_per_s")
    say(
        "cold ingest at least 9,000 edits/s",
        None if ingest is None else ingest >= 9000,
        f"{_fmt(ingest)} edits/s",
    )
    join = _get(bench, "cold-load", "collab", "join_max_ms")
    say(
        "join to full state under 20 ms",
        None if join is None else join < 20,
        f"max {_fmt(join)} ms (median of the runs' maxima)",
    )
    synced = _get(bench, "herd", "collab", "connected")
    converged = _get(bench, "herd", "collab", "converged")
    say(
        "the herd all synced",
        None if synced is None else synced == 50 and converged == 1,
        f"{_fmt(synced)} of 50 synced, converged {'yes' if converged == 1 else 'no'}",
    )
    return out


def _unsaturated(bench: Bench, server: str) -> str:
    figures = bench.medians("saturation", server)[0]
    if figures.get("saturated") == 0:
        return f" ({peer(server).label} was not saturated by the last stage: a lower bound)"
    if figures.get("generator_bound"):
        return f" ({peer(server).label}'s failing stage had the generator over 85% busy)"
    return ""
