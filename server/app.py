"""The Starlette application: ``/ws/{room}`` for y-websocket clients, ``/healthz``, lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import psutil
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket

from crdt.ids import RoomName
from persistence.content.ports import ContentStore
from persistence.errors import StorageError
from persistence.rooms.ports import RoomStore
from persistence.rooms.service import ServiceRoomStore
from protocol.ysync import AuthPermissionDenied, encode
from server import shutdown
from server.admin.features import Features
from server.admin.grants import GrantAdmin
from server.admin.ports import AdminPorts
from server.admin.roles import RoleAdmin
from server.admin.signins import SignIns
from server.admin.stats import ActivityStats
from server.admin.users import UserAdmin
from server.api import api_routes
from server.api.common import exception_handlers, lower_headers
from server.api.cors import cors_middleware
from server.api.web import web_routes
from server.cms.catalog import build as build_cms
from server.cms.service import CmsPorts
from server.documents.doc_cache import CachedContent
from server.documents.freeze import ContentFreeze
from server.documents.revisions import Revisions
from server.documents.snapshots import LockClaims, Snapshotter
from server.documents.workflow import Workflow, WorkflowPorts
from server.errors import (
    AuthError,
    CollabError,
    PermissionDenied,
    RoomNotFound,
    ServerShuttingDown,
)
from server.hooks import (
    Authenticated,
    Disconnected,
    Edited,
    Hooks,
    Joined,
    Joining,
    Rejected,
)
from server.identity.authentication import Principal
from server.identity.rights import AccessControl, Right
from server.identity.roles import RoleBook
from server.presence import locks
from server.presence import tracker as presence
from server.realtime.cluster import Cluster
from server.realtime.connection import Connection, Frame
from server.realtime.guard import Guard
from server.realtime.hub import Hub
from server.realtime.limits import MessageLimiter, SharedLimits
from server.realtime.registry import RoomRegistry
from server.realtime.sessions import WS_PREFIX, Admission, Refusal, Session, admit
from server.realtime.shedding import JoinGate
from server.realtime.transport import DIRECT_HANDLER, FanoutWriter
from server.review import comments, notifications
from server.review.approvals import ApprovalService
from server.review.ports import ReviewPorts
from server.search.service import SearchService
from server.services import Services, open_services
from server.settings import Settings
from server.shutdown import CLOSE_SECONDS as CLOSE
from server.shutdown import TaskGroup, bounded
from server.stores import cms_queries, node_name, open_content_store, open_store

log = logging.getLogger(__name__)

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
        self.doc_cache: CachedContent | None = None
        if settings.redis_url:
            # Service mode: hot documents are read from doc:{documentId} (documents/doc_cache.py).
            content = self.doc_cache = CachedContent(content, services.coordinator.cache, tasks)
        self.settings = settings
        self.node_id = node_id
        self.store = store
        self.content = content
        self.relational = services.relational
        self.coordinator = services.coordinator
        self.authn = services.authn
        self.audit = services.audit
        self.edits = services.edits
        self.access = AccessControl(
            content,
            services.relational.permissions,
            roles=RoleBook(services.relational.roles, ttl=settings.access_cache_seconds),
            ttl=settings.access_cache_seconds,
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
        self.freeze = ContentFreeze(
            self.hub, self.registry, services.coordinator.journal, self.access
        )
        self.guard = Guard(self.hub, self.authn, self.access, self.freeze.frozen_here)
        self.workflow = Workflow(
            WorkflowPorts(
                content,
                self.access,
                self.revisions,
                self.snapshots,
                self.freeze,
                self.audit,
                hooks,
            )
        )
        # The features: each gets its collaborators, subscribes to the hooks, and is kept
        # here for the REST handlers (``api/ports.py``) and the shutdown.
        self.locks = locks.install(
            hooks,
            self.hub,
            self.registry,
            locks.LockPorts(services.coordinator.locks, services.authn, services.audit),
            tasks,
            clustered=self.cluster is not None,
        )
        self.presence = presence.install(hooks, self.hub, self.coordinator, node_id, tasks)
        self.notifier = notifications.install(
            hooks,
            self.hub,
            notifications.NotifierPorts(
                services.relational.notifications,
                services.coordinator.notifications,
                content,
                services.authn,
            ),
            tasks,
        )
        self.stats = ActivityStats(services.coordinator.stats, node_id)
        review = ReviewPorts(
            content=content,
            relational=services.relational,
            access=self.access,
            authn=services.authn,
            audit=services.audit,
            workflow=self.workflow,
            revisions=self.revisions,
            registry=self.registry,
            hub=self.hub,
            notifier=self.notifier,
            counted=self.stats.count,
        )
        self.features = Features(
            services.coordinator.flags, services.audit, ttl=settings.access_cache_seconds
        )
        self.search = SearchService(content, self.access)
        # The CMS collections beyond business documents (server/cms/, docs/cms.md).
        self.cms = build_cms(
            CmsPorts(
                content,
                cms_queries(content),
                self.access,
                services.authn,
                services.audit,
                services.relational.approvals,
                services.coordinator.stats,
                notify=self.notifier.send_soon,
            ),
            shared=bool(settings.redis_url),
        )
        tasks.create_task(self.cms.views.run(), name="article views")
        # Administration (docs/administration.md): users, roles, grants, flags, counters.
        admin = AdminPorts(
            services.relational.users,
            services.relational.roles,
            services.relational.permissions,
            services.authn,
            self.access,
            services.audit,
            self.notifier,
        )
        self.users = UserAdmin(admin)
        self.roles = RoleAdmin(admin)
        self.grants = GrantAdmin(admin)
        self.signins = SignIns(services.relational.users, self.stats, tasks)
        hooks.on_edit.subscribe(lambda _: self.stats.count("edits"))
        hooks.on_join.subscribe(lambda _: self.stats.count("views"))
        self.comments = comments.install(hooks, review, tasks)
        self.approvals = ApprovalService(review)
        self.messages = MessageLimiter(settings.rate_messages_per_second * 10, 10.0)
        self.started = time.monotonic()
        self.process = psutil.Process()
        self.accepting = True
        self.joins = JoinGate(settings.max_joining)  # load shedding at the door
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
        return admit(
            path,
            query,
            headers,
            accepting=self.accepting,
            authn=self.authn,
            allowed_origins=self.settings.allowed_origins,
            client=client,
            gate=self.joins,
        )

    async def limit(self, principal: Principal, action: str) -> None:
        """Count one ``action`` of the user; RateLimited when over the limit."""
        await self._limits.check(principal.user_id, action)

    async def open_session(self, admission: Admission, conn: Connection) -> Session | None:
        """Authenticate, authorize, register the connection and join its room (None: it
        was closed with the error)."""
        try:
            principal = await self.authn.principal(
                admission.identity, ip=admission.ip, user_agent=admission.user_agent
            )
            if self.hooks.on_authenticate:
                try:
                    await self.hooks.on_authenticate(Authenticated(principal, admission.room))
                except Rejected as exc:
                    raise AuthError(str(exc) or "refused by an extension") from exc
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
                or self.freeze.frozen_here(admission.room.document_id)
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
        self.signins.connected(principal)
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
            self.hooks.on_disconnect(Disconnected(closing, document_id))

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
            creates = await self.access.may_create(principal.subject)
            if not (self.settings.create_on_join and creates):
                raise RoomNotFound(
                    f"document {document_id} does not exist"
                    + ("" if self.settings.create_on_join else " (creation on join is off)")
                )
            await self.workflow.create(document_id, principal)
        right = await self.access.right(principal.subject, document_id)
        if right < Right.VIEW:
            raise PermissionDenied(f"you may not view document {document_id}")
        return right

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
        # Features stop their tasks first, before sockets close.
        self.locks.stop()
        self.presence.stop()
        self.cms.views.stop()
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
            collab.stats.start(tasks)
            for extension in extensions:
                extension(collab.hooks, collab.hub)
            if collab.cluster is not None:
                collab.cluster.start(tasks)
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
                collab.guard.stop()
                collab.shutdown_sockets()
                await bounded("writing the activity counters", collab.stats.aclose, 1.0)
                await bounded("flushing the rooms", collab.registry.close, shutdown.ROOMS_SECONDS)
                await bounded(
                    "writing snapshots", collab.snapshots.close, shutdown.SNAPSHOTS_SECONDS
                )
                if collab.cluster is not None:
                    # Let what the closing sockets said (leaves, unlocks) reach other nodes.
                    await collab.cluster.drain(timeout=shutdown.SIGNALS_SECONDS)
                    collab.cluster.stop()
                if collab.doc_cache is not None:
                    collab.doc_cache.stop()
                await tasks.settle(shutdown.TASKS_SECONDS)

    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            WebSocketRoute("/ws/{room:path}", websocket_endpoint),
            Mount(
                "/api",
                routes=api_routes(),
                middleware=cors_middleware(settings.allowed_origins),
            ),
            *web_routes(),
        ],
        lifespan=lifespan,
        exception_handlers=exception_handlers(),
    )
    return app


async def healthz(request: Request) -> JSONResponse:
    collab: Collab = request.app.state.collab
    with collab.process.oneshot():
        cpu = collab.process.cpu_times()
        rss = collab.process.memory_info().rss
    return JSONResponse(
        {
            "status": "ok",
            "uptime_seconds": round(time.monotonic() - collab.started, 3),
            "cpu_seconds": round(cpu.user + cpu.system, 3),
            "rss_bytes": rss,
            **collab.registry.stats(),
            **collab.snapshots.stats(),
            "snapshots": collab.snapshots.health(),
            **(collab.cluster.stats() if collab.cluster is not None else {}),
            "audit": collab.audit.stats(),
        }
    )


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
            return decision.status, decision.body()
        return decision

    async def open(self, ticket: Admission, writer: FanoutWriter) -> Session | None:
        collab = self._collab
        if not collab.accepting:  # the server began shutting down meanwhile
            collab.joins.leave()
            writer.close(1012, "server restarting")
            return None
        try:
            conn = Connection(
                str(ticket.room),
                max_buffered_bytes=collab.settings.max_buffered_bytes,
                fast=writer,
                app_events=ticket.app_events,
            )
            return await collab.open_session(ticket, conn)
        finally:
            collab.joins.leave()  # counted in by admit()


async def websocket_endpoint(websocket: WebSocket) -> None:
    """The ASGI route to the rooms, for servers without our protocol (and TestClient)."""
    collab: Collab = websocket.app.state.collab
    headers = lower_headers(websocket.headers)
    client = websocket.client.host if websocket.client is not None else None
    decision = collab.admit(websocket.url.path, websocket.url.query, headers, client)
    if isinstance(decision, Refusal):
        denial = problem(decision.status, decision.title, decision.detail)
        denial.headers.update(decision.headers())
        await websocket.send_denial_response(denial)
        return
    try:
        conn = Connection(
            str(decision.room),
            max_buffered_bytes=collab.settings.max_buffered_bytes,
            websocket=websocket,
            app_events=decision.app_events,
        )
        await websocket.accept()
    except BaseException:
        collab.joins.leave()  # counted in by admit()
        raise
    async with asyncio.TaskGroup() as tasks:
        writer = tasks.create_task(conn.run_writer(), name=f"writer {conn.id}")
        try:
            session = await collab.open_session(decision, conn)
        finally:
            collab.joins.leave()
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
