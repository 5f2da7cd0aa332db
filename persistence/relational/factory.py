"""``open_relational(url)``: the relational stores on one engine."""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType

from sqlalchemy.ext.asyncio import AsyncConnection

from persistence.errors import SchemaOutdated
from persistence.relational.approvals import SqlApprovalStore
from persistence.relational.audit import SqlAuditStore
from persistence.relational.comments import SqlCommentStore
from persistence.relational.engine import RelationalOptions, SqlDatabase, create_engine
from persistence.relational.migrate import head_revision, prepare_sqlite_directory, stored_revision
from persistence.relational.notifications import SqlNotificationStore
from persistence.relational.permissions import SqlPermissionStore
from persistence.relational.ports import AuditStore, PermissionStore, RoleStore, UserStore
from persistence.relational.records import utc_now
from persistence.relational.review_ports import ApprovalStore, CommentStore, NotificationStore
from persistence.relational.users import Clock, SqlRoleStore, SqlUserStore


@dataclass(frozen=True, slots=True)
class RelationalStats:
    """The backend and the pool as seen now (SQLAlchemy's status line)."""

    backend: str
    pool: str


class RelationalStores:
    """The relational stores sharing one connection pool. Close with :meth:`aclose`.

    An async context manager. After ``aclose`` every store raises StorageClosed.
    """

    def __init__(self, db: SqlDatabase, clock: Clock) -> None:
        self._db = db
        self.users: UserStore = SqlUserStore(db, clock)
        self.roles: RoleStore = SqlRoleStore(db, clock)
        self.permissions: PermissionStore = SqlPermissionStore(db, clock)
        self.audit: AuditStore = SqlAuditStore(db)
        self.comments: CommentStore = SqlCommentStore(db, clock)
        self.notifications: NotificationStore = SqlNotificationStore(db, clock)
        self.approvals: ApprovalStore = SqlApprovalStore(db, clock)

    @property
    def backend(self) -> str:
        """``"postgresql"`` or ``"sqlite"``."""
        return self._db.dialect

    def stats(self) -> RelationalStats:
        return RelationalStats(self._db.dialect, self._db.engine.pool.status())

    async def schema_revision(self) -> str | None:
        """The migration revision the database is at (None: never migrated). Does I/O."""

        async def run(conn: AsyncConnection) -> str | None:
            return await conn.run_sync(stored_revision)

        return await self._db.read("reading the schema revision", run)

    async def check_schema(self) -> None:
        """Raise SchemaOutdated unless the database is migrated to this code's head.

        The probe a server runs at start: it connects (StorageUnavailable if it cannot).
        """
        stored, head = await self.schema_revision(), head_revision()
        if stored != head:
            raise SchemaOutdated(
                f"the database is at revision {stored!r}, this code needs {head!r}: "
                "run the migrations (collab migrate)"
            )

    async def aclose(self) -> None:
        """Close the pool. Idempotent."""
        await self._db.aclose()

    async def __aenter__(self) -> RelationalStores:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


async def open_relational(
    url: str, *, options: RelationalOptions | None = None, clock: Clock = utc_now
) -> RelationalStores:
    """The stores on the database at ``url`` (URL forms: :mod:`.engine`).

    Runs nothing on the database: no connection is made until the first call, and the
    schema is never created or migrated here (:func:`.migrate.migrate` does that, when
    asked). For SQLite the file's directory is created. ``clock`` gives the "now" the stores
    stamp rows with (aware datetimes). Raises ValueError for a URL it does not accept.
    """
    options = options or RelationalOptions()
    prepare_sqlite_directory(url)
    engine = create_engine(url, options)
    return RelationalStores(SqlDatabase(engine, options), clock)
