"""The Starlette application: ``/ws/{room}`` for y-websocket clients, ``/healthz``, lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import psutil
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.routing import Mount, WebSocketRoute
from starlette.websockets import WebSocket

from crdt.ids import RoomName
from persistence.content.ports import ContentStore
from persistence.errors import StorageConflict, StorageError
from persistence.rooms.ports import RoomStore
from persistence.rooms.service import ServiceRoomStore
from protocol.ysync import AuthPermissionDenied, encode
from server import shutdown
from server.api import api_routes
from server.api import health as health_routes
from server.api.common import exception_handlers, lower_headers
from server.api.request_ids import RequestIds
from server.documents.revisions import Revisions
from server.documents.snapshots import LockClaims, Snapshotter, new_document
from server.errors import (
    AuthError,
    CollabError,
    PermissionDenied,
    RoomNotFound,
    ServerShuttingDown,
)
from server.hooks import (
    Edited,
    Hooks,
    Joined,
    Joining,
    Left,
    PermissionChange,
    Rejected,
)
from server.identity.authentication import Principal
from server.identity.rights import DOCUMENTS, AccessControl, Right, may_create
from server.ops import context, counters
from server.ops.health import Readiness
from server.ops.observe import PROBE_DOCUMENT, check_dependencies, metrics_of
from server.ops.proxies import client_address
from server.presence import locks
from server.presence import tracker as presence
from server.realtime.cluster import Cluster
from server.realtime.connection import Connection, Frame
from server.realtime.guard import Guard, apply_right
from server.realtime.hub import Hub
from server.realtime.limits import MessageLimiter, SharedLimits
from server.realtime.registry import RoomRegistry
from server.realtime.sessions import WS_PREFIX, Admission, Refusal, Session, admit
from server.realtime.transport import DIRECT_HANDLER, FanoutWriter
from server.review import approvals, comments, notifications
from server.review.counters import review_counters
from server.services import Services, open_services
from server.settings import Settings
from server.shutdown import CLOSE_SECONDS as CLOSE
from server.shutdown import TaskGroup, bounded
from server.stores import node_name, open_content_store, open_store

log = logging.getLogger(__name__)

# How long a node keeps a document it froze read-only by itself: longer than its cached
# document facts can lag behind the status change (COLLAB_ACCESS_CACHE_SECONDS is at most 4).
FREEZE_OVERLAP_SECONDS = 5.0

_apps = itertools.count(1)


def problem_body(status: int, title: str, detail: str = "") -> dict[str, Any]:
    """An RFC 9457 problem document."""
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    return body


def problem(status: int, title: str, detail: str = "") -> JSONResponse:
    """An RFC 9457 problem+json response."""
    return JSONResponse(
        problem_body(status, title, detail),
        status_code=status,
        media_type="application/problem+json",
    )


# A third-party extension: called once with the app's hooks and connection hub, it subscribes.
Extension = Callable[[Hooks, Hub], object]


class Collab:
    """Everything the app owns while it runs; created and torn down by the lifespan."""

    def __init__(
        self,
        settings: Settings,
        store: RoomStore,
        content: ContentStore,
        tasks: asyncio.TaskGroup,
        services: Services,
        node_id: str = "node",
    ) -> None:
        self.settings = settings
        self.node_id = node_id
        # Run first thing at shutdown, before sockets close (features stop their tasks).
        self.shutdown_callbacks: list[Callable[[], None]] = []
        self.store = store
        self.content = content
        self.relational = services.relational
        self.coordinator = services.coordinator
        self.authn = services.authn
        self.audit = services.audit
        self.edits = services.edits
        self.access = AccessControl(
            content, services.relational.permissions, ttl=settings.access_cache_seconds
        )
        # The extension API: made before anything that fires or subscribes (server.hooks).
        self.hooks = hooks = Hooks()
        self.registry = RoomRegistry(store, settings, tasks, hooks)
        if self.edits is not None:
            hooks.on_edit.subscribe(self._count_edit)
        service_mode = isinstance(store, ServiceRoomStore)
        self.snapshots = Snapshotter(
            content,
            store,
            self.registry.live_doc,
            tasks,
            idle=settings.snapshot_idle_seconds,
            max_wait=settings.snapshot_max_wait_seconds,
            retry_base=settings.snapshot_retry_seconds,
            retry_max=settings.snapshot_retry_max_seconds,
            hooks=hooks,
            # Each node snapshots what its own clients changed: updates applied from other
            # nodes do not make this node's copy dirty (their node writes them).
            claims=LockClaims(services.coordinator.locks, node_id) if service_mode else None,
        )
        hooks.on_change.subscribe(lambda changed: self.snapshots.touched(changed.room.document_id))
        self.revisions = Revisions(
            content,
            self.registry,
            self.snapshots,
            keep_inline=settings.revisions_inline,
            interval=settings.revision_interval_seconds,
        )
        hooks.after_store.subscribe(lambda stored: self.revisions.on_snapshot(stored.document_id))
        self._freezing: dict[str, float] = {}  # document -> until when (monotonic)
        self.cluster: Cluster | None = None
        if isinstance(store, ServiceRoomStore):
            self.cluster = Cluster(
                self.registry,
                services.coordinator.journal,
                services.coordinator.signals,
                node_id,
                # The hub exists before the cluster starts following (in the lifespan).
                on_event=lambda *remote: self.hub.receive_remote(*remote),
                mark_applied=store.mark_applied,
                hooks=hooks,
            )
        # This node's connections and the delivery of application events to them.
        self.hub = Hub(hooks, self.cluster.publish_event if self.cluster is not None else None)
        self.guard = Guard(self.hub, self.authn, self.access, self.frozen_here)
        self.messages = MessageLimiter(settings.rate_messages_per_second * 10, 10.0)
        self.started = time.monotonic()
        self.process = psutil.Process()
        self.accepting = True
        self._limits = SharedLimits(
            services.coordinator.rate_limits,
            {
                "edit": (settings.rate_messages_per_second * 10, 10.0),
                "connect": (settings.rate_connects_per_minute, 60.0),
                "rest": (settings.rate_requests_per_minute, 60.0),
            },
        )

    def admit(
        self, path: str, query: str, headers: dict[str, str], client: str | None
    ) -> Admission | Refusal:
        trusted = self.settings.trusted_proxies
        if trusted:
            client = client_address(client, headers.get("x-forwarded-for"), trusted)
        decision = admit(
            path,
            query,
            headers,
            accepting=self.accepting,
            authn=self.authn,
            allowed_origins=self.settings.allowed_origins,
            client=client,
        )
        if isinstance(decision, Refusal):
            counters.refused_with(decision.status, decision.title, decision.detail)
        return decision

    async def limit(self, principal: Principal, action: str) -> None:
        """Count one ``action`` of the user; RateLimited when over the limit."""
        await self._limits.check(principal.user_id, action)

    async def freeze_content(self, document_id: str) -> None:
        """Freeze a document's content (it goes into review), before its status changes.

        Every open connection of the document on this node turns read-only at once (no
        await before that), the updates this node already accepted are waited for (they
        belong to the content under review), then the change journal refuses every later
        append of the document on every node (an update another node applied meanwhile is
        refused there, not acknowledged, and rebuilt away). Raises StorageError when the
        journal cannot be frozen; the connections are then writable again.
        """
        # Until the status change is visible to this node's rights checks (cached facts), this
        # node holds the document frozen itself.
        self._freezing[document_id] = time.monotonic() + FREEZE_OVERLAP_SECONDS
        for conn in self.hub.of_document(document_id):
            apply_right(conn, Right(conn.right), frozen=True)
        try:
            for room in self.registry.rooms_of(document_id):
                await room.flushed()
            await self.coordinator.journal.freeze(document_id)
        except BaseException:
            self._freezing.pop(document_id, None)
            self.access.forget(document_id)
            for conn in self.hub.of_document(document_id):
                apply_right(conn, Right(conn.right), frozen=False)
            raise

    def frozen_here(self, document_id: str) -> bool:
        """Whether this node froze the document moments ago (its cached facts may not say
        so yet): the rights checks keep its connections read-only meanwhile."""
        deadline = self._freezing.get(document_id)
        if deadline is None:
            return False
        if deadline < time.monotonic():
            del self._freezing[document_id]
            return False
        return True

    async def thaw_content(self, document_id: str) -> None:
        """End a freeze (the review ended, or the status change that froze it failed): the
        journal takes appends again and this node's connections get their rights back at
        once (other nodes' at their next rights check, within 5 s). StorageError when the
        journal cannot be reached (the document then stays frozen: retry the change)."""
        await self.coordinator.journal.thaw(document_id)
        self._freezing.pop(document_id, None)
        self.access.forget(document_id)
        for conn in self.hub.of_document(document_id):
            apply_right(conn, Right(conn.right), frozen=False)

    async def open_session(self, admission: Admission, conn: Connection) -> Session | None:
        """Authenticate, authorize, register the connection and join its room (None: it
        was closed with the error)."""
        context.bind_socket(admission.request_id, conn.id, str(admission.room))
        try:
            principal = await self.authn.principal(
                admission.identity, ip=admission.ip, user_agent=admission.user_agent
            )
            await self.limit(principal, "connect")
            self.hub.reserve(principal.user_id, self.settings.max_sockets_per_user)
        except (CollabError, AuthError, StorageError) as exc:
            conn.fail(exc)
            return None
        try:
            right = await self._join_right(principal, admission.room)
            facts = await self.access.document(admission.room.document_id)
            read_only = (
                right < Right.EDIT
                or (facts is not None and facts.under_review)
                or self.frozen_here(admission.room.document_id)
            )
            try:
                await self.hooks.on_connect(Joining(principal, admission.room, read_only))
            except Rejected as exc:
                raise PermissionDenied(str(exc) or "refused by an extension") from exc
        except (CollabError, StorageError) as exc:
            if isinstance(exc, PermissionDenied | RoomNotFound):
                self.audit.record(
                    principal.context.entry(
                        "join",
                        "business_document",
                        admission.room.document_id,
                        {"room": str(admission.room)},
                        error=str(exc) or type(exc).__name__,
                    )
                )
            conn.fail(exc)
            return None
        finally:
            self.hub.unreserve(principal.user_id)  # counted in by_user from now on
        context.user_id.set(principal.user_id)
        conn.principal = principal
        conn.right = right
        conn.read_only = read_only
        document_id = admission.room.document_id
        self.hub.add(conn, document_id, principal.user_id)
        session = await Session.open(self.registry, admission.room, conn, self.messages)
        if session is None:
            self.hub.forget(conn, document_id)
            return None
        chained = conn.on_close

        def on_close(closing: Connection) -> None:
            self.hub.forget(closing, document_id)
            if chained is not None:
                chained(closing)
            self.hooks.on_leave(Left(closing, document_id))

        conn.on_close = on_close
        self.hooks.on_join(Joined(conn, session.room))
        if conn.read_only:
            conn.send(Frame(encode(AuthPermissionDenied("read-only: you may not edit"))))
        document = admission.room.document_id
        self.audit.access(
            principal.context.access(document, "join", await self._sensitivity(document))
        )
        return session

    async def _join_right(self, principal: Principal, room: RoomName) -> Right:
        document_id = room.document_id
        facts = await self.access.document(document_id)
        if facts is None:
            # No record yet: joining creates the document, if this user may create them.
            if not (self.settings.create_on_join and may_create(principal.subject)):
                raise RoomNotFound(
                    f"document {document_id} does not exist"
                    + ("" if self.settings.create_on_join else " (creation on join is off)")
                )
            await self.create_document(document_id, principal)
        right = await self.access.right(principal.subject, document_id)
        if right < Right.VIEW:
            raise PermissionDenied(f"you may not view document {document_id}")
        return right

    async def create_document(
        self, document_id: str, principal: Principal, fields: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Store the record of a new document owned by ``principal``; StorageConflict when
        the id is taken."""
        now = datetime.now(UTC)
        record = new_document(document_id, await self.snapshots.render(document_id), now)
        record.update(
            owner=principal.user_id,
            createdBy=principal.user_id,
            updatedBy=principal.user_id,
            contributors=[],
            permissions={"view": [], "edit": [], "comment": []},
        )
        record.update(fields or {})
        try:
            stored = await self.content.insert(DOCUMENTS, record)
        except StorageConflict:
            if fields is not None:
                raise
            existing = await self.content.get(DOCUMENTS, document_id)
            if existing is None:
                raise
            return dict(existing)
        finally:
            self.access.forget(document_id)
        context = principal.context
        self.audit.record(
            context.entry(
                "create", "business_document", document_id, {"title": record.get("title")}
            )
        )
        self.hooks.on_permission_change(
            PermissionChange(
                document_id,
                context.user_id,
                None,
                stored.get("permissions") or {},
                created=True,
            )
        )
        return dict(stored)

    async def _sensitivity(self, document_id: str) -> str | None:
        facts = await self.access.document(document_id)  # cached since the join checked it
        return facts.sensitivity if facts is not None else None

    def _count_edit(self, edit: Edited) -> None:
        principal = edit.conn.principal
        if principal is not None and self.edits is not None:
            self.edits.count(
                principal.uuid,
                edit.room.document_id,
                edit.room.section_id,
                inserted=edit.inserted,
                deleted=edit.deleted,
                ip=principal.ip,
                user_agent=principal.user_agent,
            )

    def shutdown_sockets(self) -> None:
        self.accepting = False
        for callback in self.shutdown_callbacks:
            try:
                callback()
            except Exception:
                log.exception("a shutdown callback failed")
        for conn in list(self.hub.connections):
            conn.fail(ServerShuttingDown("server shutting down"))


def create_app(
    settings: Settings | None = None,
    *,
    room_store: RoomStore | None = None,
    content_store: ContentStore | None = None,
    extensions: Sequence[Extension] = (),
) -> Starlette:
    """Build the ASGI app. Nothing starts until the lifespan runs.

    ``room_store`` and ``content_store`` replace the stores the settings name (tests inject
    failing stores); the app then closes them at shutdown like its own. ``extensions`` are
    called once each, in order, with the app's hooks and hub, after the built-in features
    subscribed and before the first connection (``docs/extensions.md``).
    """
    settings = settings or Settings()
    # Unique per process and app: the origin of this node's stream entries.
    node_id = f"{node_name(settings)}.{os.getpid()}.{next(_apps)}"
    context.set_node(node_name(settings))
    readiness = Readiness()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        async with contextlib.AsyncExitStack() as stack:
            services = await open_services(settings, stack)
            content = content_store or await open_content_store(settings)
            stack.push_async_callback(bounded, "closing the content store", content.aclose, CLOSE)
            store = room_store or await open_store(settings, services.coordinator, content, stack)
            # The service store tries to drain its spool for 5 s itself: a second more here.
            stack.push_async_callback(bounded, "closing the room store", store.aclose, CLOSE + 1)
            tasks = await stack.enter_async_context(TaskGroup())
            collab = Collab(settings, store, content, tasks, services, node_id)
            app.state.collab = collab
            collab.guard.start(tasks)
            lock_service = locks.install(
                collab.hooks,
                collab.hub,
                collab.registry,
                locks.LockPorts(services.coordinator.locks, services.authn, services.audit),
                tasks,
                clustered=collab.cluster is not None,
            )
            collab.shutdown_callbacks.append(lock_service.stop)
            collab.shutdown_callbacks.append(
                presence.install(collab.hooks, collab.hub, collab.coordinator, node_id, tasks)
            )
            comments.install(collab, tasks)
            notifier = notifications.install(
                collab.hooks,
                collab.hub,
                notifications.NotifierPorts(
                    services.relational.notifications,
                    services.coordinator.notifications,
                    content,
                    services.authn,
                ),
                tasks,
            )
            approvals.install(collab, tasks)
            for extension in extensions:
                extension(collab.hooks, collab.hub)
            if collab.cluster is not None:
                collab.cluster.start(tasks)
            app.state.metrics = metrics_of(
                collab,
                {"section_locks_held": lambda: float(len(lock_service.known))},
                review_counters(comments.comments_of(collab), notifier),
                readiness,
            )
            check_dependencies(
                readiness,
                settings,
                redis=services.coordinator.durability,
                postgres=services.relational.schema_revision,
                mongo=functools.partial(content.get, DOCUMENTS, PROBE_DOCUMENT),
            )
            readiness.started()
            log.info(
                "collab ready (storage=%s, data_dir=%s, relational=%s, coordinator=%s)",
                settings.storage,
                settings.data_dir,
                services.relational.backend,
                "redis" if settings.redis_url else "in-process",
            )
            try:
                # uvicorn hands this state to every connection's protocol: that is how our
                # WebSocket protocol finds the direct path's handler.
                yield {"collab": collab, DIRECT_HANDLER: DirectWebSockets(collab)}
            finally:
                # Every step has a deadline (see server.shutdown); the stack then closes the
                # stores, each within its own.
                readiness.drain("shutting down")
                collab.guard.stop()
                collab.shutdown_sockets()
                await bounded("flushing the rooms", collab.registry.close, shutdown.ROOMS_SECONDS)
                await bounded(
                    "writing snapshots", collab.snapshots.close, shutdown.SNAPSHOTS_SECONDS
                )
                if collab.cluster is not None:
                    # Let what the closing sockets said (leaves, unlocks) reach other nodes.
                    await collab.cluster.drain(timeout=shutdown.SIGNALS_SECONDS)
                    collab.cluster.stop()
                await tasks.settle(shutdown.TASKS_SECONDS)

    app = Starlette(
        routes=[
            *health_routes.routes(),
            WebSocketRoute("/ws/{room:path}", websocket_endpoint),
            Mount("/api", routes=api_routes()),
        ],
        lifespan=lifespan,
        exception_handlers=exception_handlers(),
        middleware=[Middleware(RequestIds)],
    )
    app.state.readiness = readiness
    return app


class DirectWebSockets:
    """The direct path's handler (see :mod:`server.realtime.transport`): rooms under ``/ws/``."""

    def __init__(self, collab: Collab) -> None:
        self._collab = collab

    def handles(self, path: str) -> bool:
        return path.startswith(WS_PREFIX)

    def admit(
        self, path: str, query: str, headers: dict[str, str], client: str | None
    ) -> tuple[int, dict[str, Any]] | Admission:
        decision = self._collab.admit(path, query, headers, client)
        if isinstance(decision, Refusal):
            return decision.status, problem_body(decision.status, decision.title, decision.detail)
        return decision

    async def open(self, ticket: Admission, writer: FanoutWriter) -> Session | None:
        collab = self._collab
        if not collab.accepting:  # the server began shutting down meanwhile
            writer.close(1012, "server restarting")
            return None
        conn = Connection(
            str(ticket.room),
            max_buffered_bytes=collab.settings.max_buffered_bytes,
            fast=writer,
            app_events=ticket.app_events,
        )
        return await collab.open_session(ticket, conn)


async def websocket_endpoint(websocket: WebSocket) -> None:
    """The ASGI route to the rooms, for servers without our protocol (and TestClient)."""
    collab: Collab = websocket.app.state.collab
    headers = lower_headers(websocket.headers)
    client = websocket.client.host if websocket.client is not None else None
    decision = collab.admit(websocket.url.path, websocket.url.query, headers, client)
    if isinstance(decision, Refusal):
        await websocket.send_denial_response(
            problem(decision.status, decision.title, decision.detail)
        )
        return
    conn = Connection(
        str(decision.room),
        max_buffered_bytes=collab.settings.max_buffered_bytes,
        websocket=websocket,
        app_events=decision.app_events,
    )
    await websocket.accept()
    async with asyncio.TaskGroup() as tasks:
        writer = tasks.create_task(conn.run_writer(), name=f"writer {conn.id}")
        session = await collab.open_session(decision, conn)
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                if session is not None:
                    session.on_frame(message.get("bytes"))
        finally:
            if session is not None:
                session.on_close()
            # The socket is gone: whatever the writer still holds cannot be delivered.
            writer.cancel()
