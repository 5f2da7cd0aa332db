"""The services the server runs on besides its rooms: relational stores (users, rights,
audit), the coordinator (sessions, rate limits, presence...), authentication and the audit
pipeline. Embedded by default; each switches to the real service when its URL is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from persistence.coordinator.memory import MemoryCoordinator
from persistence.coordinator.ports import Coordinator
from persistence.relational import (
    AccessQuery,
    AuditEntry,
    AuditQuery,
    CursorPage,
    DataAccessEntry,
    RelationalStores,
    UserQuery,
    migrate,
    open_relational,
)
from server.errors import AuthError
from server.identity.admin import first_admin_hint, token_service
from server.identity.audit import AuditTrail, EditTally
from server.identity.authentication import Authenticator, ensure_dev_user
from server.settings import Settings
from server.shutdown import CLOSE_SECONDS as CLOSE
from server.shutdown import bounded

log = logging.getLogger(__name__)

INSECURE_BANNER = (
    "INSECURE DEVELOPMENT MODE (--insecure-dev): requests without a token act as the local "
    "admin dev@localhost. Never run this where anyone else can reach the server."
)


@dataclass(frozen=True, slots=True)
class Services:
    relational: RelationalStores
    coordinator: Coordinator
    authn: Authenticator
    audit: AuditTrail
    edits: EditTally | None


async def open_coordinator(settings: Settings) -> Coordinator:
    """Redis when ``redis_url`` is set (checked with a first command), else in-process."""
    if not settings.redis_url:
        return MemoryCoordinator()
    # Imported only when configured.
    from persistence.coordinator.redis import RedisCoordinator

    if settings.redis_cluster:
        coordinator = RedisCoordinator.cluster_from_url(
            settings.redis_url, wait_replicas=settings.redis_wait_replicas
        )
    else:
        coordinator = RedisCoordinator.from_url(settings.redis_url)
    try:
        report = await coordinator.durability()
    except BaseException:
        await coordinator.aclose()
        raise
    if not report.durable:
        log.warning("Redis is not durable (%s)", report.detail)
    return coordinator


async def open_services(settings: Settings, stack: contextlib.AsyncExitStack) -> Services:
    """Open every service; ``stack`` closes them in reverse order."""
    if settings.insecure_dev:
        for line in ("!" * 78, INSECURE_BANNER, "!" * 78):
            log.warning("%s", line)
    url = settings.relational_url
    if not settings.postgres_url:
        # The embedded database is ours: keep it at the schema this code needs.
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        await migrate(url)
    relational = await open_relational(url)
    stack.push_async_callback(bounded, "closing the relational stores", relational.aclose, CLOSE)
    await relational.check_schema()
    coordinator = await open_coordinator(settings)
    stack.push_async_callback(bounded, "closing the coordinator", coordinator.aclose, CLOSE)
    dev_user = await ensure_dev_user(relational.users) if settings.insecure_dev else None
    admins = await relational.users.find(UserQuery(role="admin", status="active", limit=1))
    if admins.total == 0:
        # Printed whatever the log level: the operator of a fresh install needs it.
        print(first_admin_hint(settings), file=sys.stderr, flush=True)
    authn = Authenticator(
        token_service(settings),
        relational.users,
        coordinator.sessions,
        cookie_name=settings.session_cookie,
        dev_user=dev_user,
        cache_ttl=settings.access_cache_seconds,
        outage_grace=settings.session_outage_grace_seconds,
    )
    if settings.jwt_jwks_url:
        # Fetched before serving (a fetch blocks: later ones happen on key rotation only).
        try:
            keys = await asyncio.to_thread(authn.tokens.prefetch_keys)
            log.info("identity provider: %d signing keys", keys)
        except AuthError as exc:
            log.warning("%s; its tokens are refused until it answers", exc)
    audit = AuditTrail(relational.audit if settings.audit else NullAuditStore())
    await audit.start()
    # The trail writes what is queued for at most CLOSE_SECONDS, then says what it lost.
    stack.push_async_callback(
        bounded, "closing the audit trail", lambda: audit.aclose(CLOSE), CLOSE + 1.0
    )
    edits: EditTally | None = None
    if settings.audit:
        edits = EditTally(audit)
        await edits.start()
        # Closes first: its last rows reach the trail.
        stack.push_async_callback(bounded, "closing the edit tally", edits.aclose, CLOSE)
    else:
        log.warning("audit is off (COLLAB_AUDIT=false): no audit or data-access rows are written")
    return Services(relational, coordinator, authn, audit, edits)


class NullAuditStore:
    """Where audit rows go when audit is off (``COLLAB_AUDIT=false``): nowhere."""

    async def append(self, entries: Sequence[AuditEntry]) -> None:
        return None

    async def append_access(
        self, entries: Sequence[DataAccessEntry], *, batch_size: int = 500
    ) -> int:
        return 0

    async def query(self, query: AuditQuery) -> CursorPage[AuditEntry]:
        return CursorPage([], None)

    async def query_access(self, query: AccessQuery) -> CursorPage[DataAccessEntry]:
        return CursorPage([], None)
