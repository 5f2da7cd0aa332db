"""Search at scale, on the embedded default: ``python -m loadtests.inprocess.search_bench``.

Seeds a fresh data directory with ``--documents`` business documents of ``--words`` words
each (default 10,000 of 1,000) and ``--records`` records in each of the five other
collections (default 10,000), written straight into the embedded content store (one
transaction; the search triggers index them as they go), then starts ``collab serve`` on it
(insecure-dev, loopback) and measures through ``GET /api/search``:

* the latency of ``--queries`` one-word and three-word searches, one at a time (p50, p99);
* the time from an edit (a word typed into a section over the WebSocket) to the search
  finding it, ``--edits`` times, with the server's default snapshot settings.

The words follow a Zipf law over a vocabulary of pseudo-words, as prose does; the queries use
words of middling frequency. Prints a markdown table; the numbers belong in
``docs/benchmarks.md``. Bounded: the seed size and the query counts are the only loops.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from loadtests.client import YClient
from loadtests.harness import ServerProcess
from persistence.content import sqlite_search
from persistence.content.ports import collection_spec, prepare_insert
from persistence.content.sqlite import SqliteContentStore
from persistence.content.sqlite_json import dumps

VOCABULARY = 20_000
SYLLABLES = ("ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "va", "de", "zu", "fe", "gi", "ho")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _vocabulary(rng: random.Random) -> list[str]:
    words: dict[str, None] = {}
    while len(words) < VOCABULARY:
        words["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))] = None
    return list(words)


class Prose:
    """Zipf-distributed words of a fixed vocabulary."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.words = _vocabulary(rng)
        weights = [1.0 / (rank + 1) for rank in range(VOCABULARY)]
        total = sum(weights)
        self.cumulative = []
        running = 0.0
        for weight in weights:
            running += weight / total
            self.cumulative.append(running)

    def text(self, count: int) -> str:
        return " ".join(self.rng.choices(self.words, cum_weights=self.cumulative, k=count))

    def middling(self, count: int) -> list[str]:
        """Words of middling frequency (ranks 200..2000): found in a few hundred records."""
        return self.rng.sample(self.words[200:2000], count)

    def together(self, sample: str, count: int) -> list[str]:
        """``count`` words of one document, none of the 50 commonest: they match it."""
        common = set(self.words[:50])
        present = sorted({word for word in sample.split() if word not in common})
        return self.rng.sample(present, count)


def _records(
    collection: str, count: int, prose: Prose, words: int, samples: list[str]
) -> list[tuple[str, str | None, str]]:
    """The rows of ``count`` records; the first texts of documents go into ``samples``."""
    spec = collection_spec(collection)
    rows: list[tuple[str, str | None, str]] = []
    for index in range(count):
        doc_id = f"{collection[:3]}-{index:05d}"
        moment = T0 + timedelta(minutes=index)
        doc: dict[str, Any] = {spec.id_field: doc_id, "createdAt": moment, "owner": "bench"}
        title = prose.text(4).title()
        if collection == "business_documents":
            markdown = prose.text(words)
            if len(samples) < 1000:
                samples.append(markdown)
            doc.update(
                title=title,
                status="draft",
                type="custom",
                description=prose.text(20),
                tags=[],
                permissions={"view": [], "edit": [], "comment": []},
                content={"markdown": markdown, "sections": []},
                updatedAt=moment,
            )
        elif collection == "projects":
            doc.update(name=title, status="active", description=prose.text(50), updatedAt=moment)
        elif collection == "knowledge_articles":
            doc.update(
                title=title, author="bench", content=prose.text(50), updatedDate=moment, tags=[]
            )
        elif collection == "sales_opportunities":
            doc.update(title=title, stage="prospect", description=prose.text(50), updatedAt=moment)
        elif collection == "market_research":
            finding = {"id": "f1", "title": title, "description": prose.text(50)}
            doc.update(title=title, author="bench", status="draft", findings=[finding])
        else:
            doc.update(title=title, status="draft", vision=prose.text(50), updatedAt=moment)
        stored = prepare_insert(spec, doc)
        rows.append((doc_id, None, dumps(stored, doc_id)))
    return rows


def seed(
    path: Path, documents: int, records: int, words: int, prose: Prose, samples: list[str]
) -> float:
    """Write the records into a fresh content store; returns the seconds it took."""

    async def create() -> None:
        store = await SqliteContentStore.open(path)  # tables, indexes, search triggers
        await store.aclose()

    asyncio.run(create())
    started = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        sqlite_search.register(conn)
        conn.execute("BEGIN")
        for collection, count in (
            ("business_documents", documents),
            ("projects", records),
            ("market_research", records),
            ("strategic_plans", records),
            ("sales_opportunities", records),
            ("knowledge_articles", records),
        ):
            size = words if collection == "business_documents" else 0
            conn.executemany(
                f'INSERT INTO "{collection}" (id, slug, doc) VALUES (?, ?, ?)',
                _records(collection, count, prose, size, samples),
            )
            print(f"seeded {count} {collection}", file=sys.stderr, flush=True)
        conn.execute("COMMIT")
    finally:
        conn.close()
    return time.perf_counter() - started


def _search(base: str, text: str) -> tuple[float, int]:
    url = f"{base}/api/search?" + urllib.parse.urlencode({"q": text})
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as response:
        body = json.loads(response.read())
    return (time.perf_counter() - started) * 1000, int(body["total"])


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _edit_to_searchable(server: ServerProcess, edits: int, timeout: float) -> list[float]:
    seconds = []
    for index in range(edits):
        word = f"zebrafish{index}x"
        async with YClient(server.ws_url, f"bus-{index:05d}/s") as editor:
            await asyncio.wait_for(editor.synced.wait(), 10)
            await editor.insert(0, f"{word} ")
            started = time.perf_counter()
            deadline = started + timeout
            while True:
                _, total = await asyncio.to_thread(_search, server.http_url, word)
                if total:
                    seconds.append(time.perf_counter() - started)
                    break
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"{word!r} not searchable after {timeout} s")
                await asyncio.sleep(0.05)  # a poll of the API: what is measured
    return seconds


def run(args: argparse.Namespace) -> dict[str, Any]:
    prose = Prose(random.Random(7))
    with tempfile.TemporaryDirectory(prefix="collab-search-bench-") as tmp:
        data = Path(tmp)
        samples: list[str] = []
        seeded = seed(
            data / "content.sqlite3", args.documents, args.records, args.words, prose, samples
        )
        with ServerProcess(data) as server:
            one = [[word] for word in prose.middling(args.queries)]
            three = [prose.together(prose.rng.choice(samples), 3) for _ in range(args.queries)]
            results: dict[str, Any] = {"seed_seconds": round(seeded, 1)}
            for name, queries in (("one word", one), ("three words", three)):
                _search(server.http_url, " ".join(queries[0]))  # warm the page cache
                timings, totals = [], []
                for words in queries:
                    millis, total = _search(server.http_url, " ".join(words))
                    timings.append(millis)
                    totals.append(total)
                results[name] = {
                    "p50_ms": round(statistics.median(timings), 2),
                    "p99_ms": round(_percentile(timings, 0.99), 2),
                    "median_total": statistics.median(totals),
                }
            edits = asyncio.run(_edit_to_searchable(server, args.edits, 30.0))
            results["edit_to_searchable_s"] = {
                "median": round(statistics.median(edits), 2),
                "max": round(max(edits), 2),
            }
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.inprocess.search_bench",
        description="Search latency and edit-to-searchable time on the embedded default.",
    )
    parser.add_argument("--documents", type=int, default=10_000, help="business documents")
    parser.add_argument("--words", type=int, default=1_000, help="words per document")
    parser.add_argument("--records", type=int, default=10_000, help="records per collection")
    parser.add_argument("--queries", type=int, default=200, help="queries of each kind")
    parser.add_argument("--edits", type=int, default=10, help="edits timed to searchable")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    results = run(args)
    print(f"Command: `python -m loadtests.inprocess.search_bench {' '.join(argv or sys.argv[1:])}`")
    print()
    print("| measure | p50 | p99 | matches (median) |")
    print("|---|---|---|---|")
    for name in ("one word", "three words"):
        row = results[name]
        print(f"| {name} | {row['p50_ms']} ms | {row['p99_ms']} ms | {row['median_total']} |")
    edit = results["edit_to_searchable_s"]
    print(f"| edit to searchable | {edit['median']} s (median) | {edit['max']} s (max) | - |")
    print(f"\nseeded in {results['seed_seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
