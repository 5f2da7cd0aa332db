"""The assembly of one running app (``Collab``): the stores and services the settings name,
every feature made once and handed its ports, the connection path (admission, the session,
its room). Made and torn down by the lifespan of :func:`server.app.create_app`."""

from __future__ import annotations

import asyncio
import logging
import time

import psutil

from crdt.ids import RoomName
from persistence.content.ports import ContentStore
from persistence.errors import StorageError
from persistence.rooms.ports import RoomStore
from persistence.rooms.service import ServiceRoomStore
from protocol.ysync import AuthPermissionDenied, encode
from server.admin.features import Features
from server.admin.grants import GrantAdmin
from server.admin.ports import AdminPorts
from server.admin.roles import RoleAdmin
from server.admin.signins import SignIns
from server.admin.stats import ActivityStats
from server.admin.users import UserAdmin
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
from server.ops import context, counters
from server.ops.proxies import client_address
from server.presence import locks
from server.presence import tracker as presence
from server.realtime.cluster import Cluster
from server.realtime.connection import Connection, Frame
from server.realtime.guard import Guard
from server.realtime.hub import Hub
from server.realtime.limits import MessageLimiter, SharedLimits
from server.realtime.registry import RoomRegistry
from server.realtime.sessions import Admission, Refusal, Session, admit
from server.realtime.shedding import JoinGate
from server.review import comments, notifications
from server.review.approvals import ApprovalService
from server.review.ports import ReviewPorts
from server.search.service import SearchService
from server.services import Services
from server.settings import Settings
from server.stores import cms_queries

log = logging.getLogger(__name__)


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
            gate=self.joins,
        )
        if isinstance(decision, Refusal):
            counters.refused_with(decision.status, decision.title, decision.detail)
        return decision

    async def limit(self, principal: Principal, action: str) -> None:
        """Count one ``action`` of the user; RateLimited when over the limit."""
        await self._limits.check(principal.user_id, action)

    async def open_session(self, admission: Admission, conn: Connection) -> Session | None:
        """Authenticate, authorize, register the connection and join its room (None: it
        was closed with the error)."""
        context.bind_socket(admission.request_id, conn.id, str(admission.room))
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
            await self.workflow.create_on_join(document_id, principal)
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
                request_id=principal.request_id,
            )

    def shutdown_sockets(self) -> None:
        self.accepting = False
        # Features stop their tasks first, before sockets close.
        self.locks.stop()
        self.presence.stop()
        self.cms.views.stop()
        for conn in list(self.hub.connections):
            conn.fail(ServerShuttingDown("server shutting down"))
