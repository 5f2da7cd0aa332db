"""How many rows per second the audit pipeline writes: ``python -m loadtests.inprocess.audit_bench
[ROWS]``.

Feeds ROWS (default 50,000) audit entries through an :class:`~server.identity.audit.AuditTrail`
into a
fresh embedded database in a temporary directory, the way a server's event loop would (record
is synchronous; the writer batches), and prints the rate. Used by ``loadtests/bench_auth.py``.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time

from persistence.relational import AuditEntry, NewUser, migrate, open_relational
from server.identity.audit import AuditTrail


async def rows_per_second(rows: int) -> float:
    with tempfile.TemporaryDirectory(prefix="collab-audit-bench-") as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/relational.sqlite3"
        await migrate(url)
        async with await open_relational(url) as stores:
            user = await stores.users.add(NewUser("bench@example.com", "Bench", "analyst"))
            async with AuditTrail(stores.audit) as trail:
                started = time.perf_counter()
                for index in range(rows):
                    trail.record(
                        AuditEntry(
                            user_id=user.id,
                            action="edit",
                            resource_type="business_document",
                            resource_id="bench",
                            changes={"updates": index},
                        )
                    )
                    if index % 1000 == 0:
                        await asyncio.sleep(0)  # the writer runs between events, as it would
                await trail.flush()
                return rows / (time.perf_counter() - started)


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    print(f"{asyncio.run(rows_per_second(rows)):.0f}")


if __name__ == "__main__":
    main()
