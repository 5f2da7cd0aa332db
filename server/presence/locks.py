"""Section locks: one user at a time may edit a locked section; everyone else reads it.

A user with the edit right takes a section's lock over the socket (the ``lock`` and
``unlock`` application events, on any room of the document) or over REST
(:mod:`server.api.locks`). The lock lives in the coordinator (``lock:{documentId}:{sectionId}``:
atomic, one holder, a fencing token, a TTL of ``LOCK_TTL`` seconds):

* a lock taken over a socket is renewed every ``TTL / 3`` by the node the owner took it on,
  while the owner keeps a connection to the document on that node, and released when their
  last one closes there; a lock taken over REST expires after its TTL unless POSTed again;
* a node that dies stops renewing: its locks expire, and every node notices (a watcher asks
  the coordinator when a lock it knows of should have expired).

While a section is locked, its room's ``locked_by`` names the owner and the room drops the
updates of every other connection (y-protocols permission denied). Every node keeps that in
step: the node that changes a lock sets it at once and tells the others with the ``locked``
and ``unlocked`` events (the hub's ``emit``), which they apply; a section room that loads asks
the coordinator for its document's locks. Clients that take application events see the
events, and get the document's current locks (a ``locks`` event) when they join.

Taking and releasing are audited (``lock`` / ``unlock``).

This module is the service (state, coordinator calls, renewals, the expiry watcher, joins
and leaves); the ``lock`` / ``unlock`` socket events are handled in
:mod:`server.presence.lock_requests`, and the values (:class:`HeldLock`, :class:`LockHeld`,
the reserved section ids) live in :mod:`server.presence.lock_values`, importable from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from persistence.coordinator.ports import SectionLocks
from persistence.coordinator.values import Lock
from persistence.errors import StorageError
from protocol.events import AppEvent
from server.hooks import ConnectionView, Hooks, RoomView
from server.identity.authentication import Principal
from server.identity.rights import RESOURCE_TYPE
from server.presence.lock_requests import LockRequests
from server.presence.lock_values import RESERVED_PREFIX as RESERVED_PREFIX
from server.presence.lock_values import HeldLock as HeldLock
from server.presence.lock_values import LockHeld as LockHeld
from server.presence.lock_values import Reason as Reason
from server.presence.lock_values import Via, epoch
from server.presence.lock_values import is_reserved as is_reserved
from server.presence.lock_values import iso as iso
from server.realtime.hub import Hub
from server.realtime.registry import RoomRegistry

if TYPE_CHECKING:
    from server.identity.audit import AuditTrail
    from server.identity.authentication import Authenticator
    from server.realtime.rooms import Room

log = logging.getLogger(__name__)

# Seconds a lock lives without renewal (tests patch it before starting a server).
LOCK_TTL = 30.0
# A lock the coordinator still reports past its expiry (clock skew) is asked about again
# after at least this long.
MIN_RECHECK = 0.05


class SectionLockService:
    """This node's side of the section locks (see the module docstring)."""

    def __init__(
        self,
        hub: Hub,
        registry: RoomRegistry,
        ports: LockPorts,
        tasks: asyncio.TaskGroup,
        *,
        ttl: float,
        clustered: bool = False,
    ) -> None:
        self._hub = hub
        self._registry = registry
        self._authn = ports.users
        self._trail = ports.audit
        self._clustered = clustered
        self._locks = ports.locks
        self._tasks = tasks
        self.ttl = ttl
        # Every lock this node believes held, by (document, section).
        self.known: dict[tuple[str, str], HeldLock] = {}
        # Bumped at every change of a key; a coordinator answer read across a change is stale.
        self._versions: dict[tuple[str, str], int] = {}
        self._document_versions: dict[str, int] = {}
        # Socket locks this node renews: (document, section) -> their owner.
        self.renewed: dict[tuple[str, str], Principal] = {}
        # Open connections per (document, user) on this node, and the names of their users.
        self._connections: dict[tuple[str, str], int] = {}
        self._joined: set[int] = set()
        self._names: dict[str, str] = {}
        # Section rooms whose lock state was read from the coordinator since they loaded.
        self._resolved: weakref.WeakSet[RoomView] = weakref.WeakSet()
        self._wakeup = asyncio.Event()
        self._background: list[asyncio.Task[None]] = []

    # -- local state ----------------------------------------------------------------------

    def _bump(self, key: tuple[str, str]) -> None:
        self._versions[key] = self._versions.get(key, 0) + 1
        self._document_versions[key[0]] = self._document_versions.get(key[0], 0) + 1

    def _room(self, key: tuple[str, str]) -> Room | None:
        return self._registry.room(f"{key[0]}/{key[1]}")

    def apply_locked(self, lock: Lock, owner_name: str | None) -> HeldLock:
        """Record a held lock and make its section read-only for everyone else here."""
        key = (lock.document_id, lock.section_id)
        held = HeldLock(lock, owner_name, max(lock.expires_at, time.time() + MIN_RECHECK))
        self.known[key] = held
        self._bump(key)
        room = self._room(key)
        if room is not None:
            room.locked_by = lock.owner
        owner = self.renewed.get(key)
        if owner is not None and owner.user_id != lock.owner:
            del self.renewed[key]
        self._wakeup.set()
        return held

    def apply_unlocked(self, key: tuple[str, str]) -> HeldLock | None:
        """Forget a lock and let everyone write its section again here."""
        held = self.known.pop(key, None)
        self.renewed.pop(key, None)
        self._bump(key)
        room = self._room(key)
        if room is not None:
            room.locked_by = None
        return held

    def _emit_unlocked(self, lock: Lock, reason: Reason, *, local_only: bool = False) -> None:
        event = AppEvent(
            "unlocked",
            {
                "section": lock.section_id,
                "owner": lock.owner,
                "reason": reason,
                "token": lock.token,
            },
        )
        self._hub.emit(lock.document_id, event, local_only=local_only)

    async def owner_name(self, user_id: str) -> str | None:
        """A user's display name (cached by the authenticator), None when unknown."""
        if user_id in self._names:
            return self._names[user_id]
        try:
            user = await self._authn.user(user_id)
        except StorageError:
            return None
        return user.name if user is not None else None

    async def _held(self, lock: Lock) -> HeldLock:
        known = self.known.get((lock.document_id, lock.section_id))
        if known is not None and known.lock.owner == lock.owner:
            name = known.owner_name
        else:
            name = await self.owner_name(lock.owner)
        return HeldLock(lock, name, lock.expires_at)

    # -- taking and releasing -------------------------------------------------------------

    async def acquire(
        self, principal: Principal, document_id: str, section_id: str, *, via: Via
    ) -> tuple[HeldLock, bool]:
        """Take (or renew) the section's lock for ``principal``: the lock and whether it is
        new. Raises LockHeld when another user holds it, StorageError when the coordinator
        is unavailable."""
        user_id = principal.user_id
        key = (document_id, section_id)
        for _ in range(3):
            before = await self._locks.holder(document_id, section_id)
            if before is not None and before.owner != user_id:
                raise LockHeld(await self._held(before))
            lock = await self._locks.acquire(document_id, section_id, user_id, self.ttl)
            if lock is not None:
                break
        else:  # the lock changed hands under us three times: report who has it now
            holder = await self._locks.holder(document_id, section_id)
            if holder is None:
                raise StorageError(f"the lock of {document_id}/{section_id} is unstable")
            raise LockHeld(await self._held(holder))
        created = before is None or before.token != lock.token
        held = self.apply_locked(lock, principal.name)
        if via == "socket":
            self.renewed[key] = principal
        self._hub.emit(document_id, AppEvent("locked", held.fields()))
        self._audit(
            principal,
            "lock",
            document_id,
            {"section": section_id, "token": lock.token, "via": via, "renewed": not created},
        )
        return held, created

    async def release(self, principal: Principal, lock: Lock, *, reason: Reason, via: Via) -> bool:
        """Release ``lock`` for ``principal`` (by force unless they hold it); False when it
        was no longer held."""
        force = lock.owner != principal.user_id
        released = await self._locks.release(
            lock.document_id, lock.section_id, principal.user_id, force=force
        )
        if not released:
            return False
        self.apply_unlocked((lock.document_id, lock.section_id))
        self._emit_unlocked(lock, reason)
        changes = {"section": lock.section_id, "token": lock.token, "reason": reason, "via": via}
        if force:
            changes["owner"] = lock.owner
        self._audit(principal, "unlock", lock.document_id, changes)
        return True

    async def current(self, document_id: str) -> list[HeldLock]:
        """The document's live locks, from the coordinator (reserved sections left out)."""
        locks = await self._locks.held(document_id)
        return [await self._held(lock) for lock in locks if not is_reserved(lock.section_id)]

    async def holder(self, document_id: str, section_id: str) -> HeldLock | None:
        """The section's lock as the coordinator holds it now (None: not locked)."""
        lock = await self._locks.holder(document_id, section_id)
        return None if lock is None else await self._held(lock)

    def _audit(
        self, principal: Principal, action: str, document_id: str, changes: dict[str, Any]
    ) -> None:
        self._trail.record(principal.context.entry(action, RESOURCE_TYPE, document_id, changes))

    # -- joins and leaves -----------------------------------------------------------------

    def on_join(self, conn: ConnectionView, room: RoomView) -> None:
        """A connection joined: count it, lock its section room if this node knows it is
        locked, and ask the coordinator when the room just loaded or the client takes
        events (it gets the ``locks`` event)."""
        principal = conn.principal
        if conn.closing or principal is None:
            return
        self._joined.add(conn.id)
        document_id = room.name.document_id
        key = (document_id, principal.user_id)
        self._connections[key] = self._connections.get(key, 0) + 1
        if len(self._names) > 10_000:
            self._names.clear()
        self._names[principal.user_id] = principal.name
        section_id = room.name.section_id
        resolve = False
        if section_id is not None:
            held = self.known.get((document_id, section_id))
            room.locked_by = held.lock.owner if held is not None else None
            # Another node may have taken the lock before this node followed the document.
            resolve = self._clustered and room not in self._resolved
            self._resolved.add(room)
        if resolve or conn.app_events:
            self.spawn(self._sync(document_id, conn if conn.app_events else None), "locks sync")

    async def _sync(self, document_id: str, conn: ConnectionView | None) -> None:
        """Bring this node's view of the document's locks in line with the coordinator's,
        then send the ``locks`` event to ``conn``."""
        learned: list[HeldLock] = []
        for _ in range(3):
            version = self._document_versions.get(document_id, 0)
            locks = [
                lock
                for lock in await self._locks.held(document_id)
                if not is_reserved(lock.section_id)
            ]
            if version == self._document_versions.get(document_id, 0):  # still current
                learned = self._reconcile(document_id, locks)
                break
        for held in learned:
            # Locks this node had not heard of: tell its clients, with the owner's name.
            key = (document_id, held.lock.section_id)
            named = replace(held, owner_name=await self.owner_name(held.lock.owner))
            if self.known.get(key) is held:
                self.known[key] = named
            self._hub.deliver(document_id, None, AppEvent("locked", named.fields()))
        if conn is None or conn.closing:
            return
        listed = []
        for key in sorted(key for key in self.known if key[0] == document_id):
            held = self.known[key]
            if held.owner_name is None:
                held = replace(held, owner_name=await self.owner_name(held.lock.owner))
            listed.append(held.fields())
        conn.send_event(AppEvent("locks", {"locks": listed}))

    def _reconcile(self, document_id: str, locks: list[Lock]) -> list[HeldLock]:
        """Apply what the coordinator holds for the document (read with no change since);
        returns the locks this node did not know."""
        live = {lock.section_id: lock for lock in locks}
        learned = []
        for section_id, lock in live.items():
            current = self.known.get((document_id, section_id))
            if current is None or current.lock.token != lock.token:
                learned.append(self.apply_locked(lock, None))
        for key in [key for key in self.known if key[0] == document_id]:
            if key[1] not in live:
                gone = self.apply_unlocked(key)
                if gone is not None:
                    self._emit_unlocked(gone.lock, "expired", local_only=True)
        return learned

    def on_leave(self, conn: ConnectionView, document_id: str) -> None:
        """A connection left (idempotent): the owner's last connection to the document on
        this node releases the socket locks they took here."""
        principal = conn.principal
        if principal is None or conn.id not in self._joined:
            return
        self._joined.discard(conn.id)
        key = (document_id, principal.user_id)
        count = self._connections.get(key, 0) - 1
        if count > 0:
            self._connections[key] = count
            return
        self._connections.pop(key, None)
        for lock_key, owner in list(self.renewed.items()):
            if lock_key[0] == document_id and owner.user_id == principal.user_id:
                self.spawn(self._release_disconnected(owner, lock_key), "unlock")

    async def _release_disconnected(self, principal: Principal, key: tuple[str, str]) -> None:
        if self.renewed.get(key) is not principal:
            return  # released or taken over meanwhile
        if self._connections.get((key[0], principal.user_id), 0) > 0:
            return  # the owner came back
        held = self.known.get(key)
        lock = held.lock if held is not None else await self._locks.holder(*key)
        if lock is None or lock.owner != principal.user_id:
            self.renewed.pop(key, None)
            return
        if not await self.release(principal, lock, reason="disconnected", via="socket"):
            self.renewed.pop(key, None)  # it had expired: the watcher reports that

    # -- events from other nodes ----------------------------------------------------------

    def on_remote_event(self, document_id: str, section_id: str | None, event: AppEvent) -> None:
        """``locked`` / ``unlocked`` from another node: apply them to this node's rooms
        (older tokens than the one known are ignored)."""
        if event.type not in ("locked", "unlocked"):
            return
        section = event.get("section")
        owner = event.get("owner")
        token = event.get("token")
        if not isinstance(section, str) or not isinstance(owner, str) or not isinstance(token, int):
            return
        key = (document_id, section)
        current = self.known.get(key)
        if event.type == "locked":
            if current is not None and current.lock.token > token:
                return  # older than what this node knows
            now = time.time()
            lock = Lock(
                document_id,
                section,
                owner,
                token,
                epoch(event.get("acquiredAt"), now),
                epoch(event.get("expiresAt"), now + self.ttl),
            )
            name = event.get("ownerName")
            self.apply_locked(lock, name if isinstance(name, str) else None)
        elif current is None or current.lock.token <= token:
            self.apply_unlocked(key)

    # -- background: renewals and expiry --------------------------------------------------

    async def _renew_forever(self) -> None:
        """Renew this node's socket locks every ``ttl / 3`` seconds."""
        while True:
            await asyncio.sleep(self.ttl / 3)
            for key, principal in list(self.renewed.items()):
                try:
                    await self._renew(key, principal)
                except StorageError as exc:
                    log.warning("locks: renewing %s/%s failed: %s", *key, exc)
                except Exception:
                    log.exception("locks: renewing %s/%s failed", *key)

    async def _renew(self, key: tuple[str, str], principal: Principal) -> None:
        owner = principal.user_id
        if not self._connections.get((key[0], owner)):
            # The owner's connections closed before the lock was granted: release it.
            await self._release_disconnected(principal, key)
            return
        lock = await self._locks.renew(key[0], key[1], owner, self.ttl)
        if self.renewed.get(key) is not principal:
            return  # released or taken again meanwhile
        if lock is None:  # lost: it expired before this renewal
            held = self.apply_unlocked(key)
            if held is not None:
                self._emit_unlocked(held.lock, "expired")
            return
        held = self.known.get(key)
        self.apply_locked(lock, held.owner_name if held is not None else principal.name)
        self.renewed[key] = principal

    async def _watch_forever(self) -> None:
        """Ask the coordinator about each known lock once it should have expired."""
        while True:
            self._wakeup.clear()
            deadline = min((held.deadline for held in self.known.values()), default=None)
            if deadline is None:
                await self._wakeup.wait()
                continue
            delay = deadline - time.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), delay + MIN_RECHECK)
                    continue  # something changed: compute the next deadline again
            try:
                await self._check_due()
            except StorageError as exc:
                log.warning("locks: checking expiries failed: %s", exc)
                await asyncio.sleep(min(1.0, self.ttl / 3))
            except Exception:
                log.exception("locks: checking expiries failed")
                await asyncio.sleep(min(1.0, self.ttl / 3))

    async def _check_due(self) -> None:
        """Ask the coordinator about every lock past its deadline: gone (expired), renewed
        (a new deadline) or held by someone else now."""
        now = time.time()
        for key, held in list(self.known.items()):
            if held.deadline > now:
                continue
            version = self._versions.get(key, 0)
            lock = await self._locks.holder(*key)
            if self._versions.get(key, 0) != version:
                continue  # changed meanwhile: the change is newer than this answer
            if lock is None:
                gone = self.apply_unlocked(key)
                if gone is not None:
                    self._emit_unlocked(gone.lock, "expired", local_only=True)
            elif lock.token == held.lock.token and lock.owner == held.lock.owner:
                self.apply_locked(lock, held.owner_name)  # renewed elsewhere: new deadline
            else:
                self.apply_locked(lock, None)
                fields = (await self._held(lock)).fields()
                self._hub.deliver(key[0], None, AppEvent("locked", fields))

    # -- lifecycle ------------------------------------------------------------------------

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``work`` in the app's task group; its errors are logged, never raised."""

        async def guarded() -> None:
            try:
                await work
            except StorageError as exc:
                log.warning("locks: %s failed: %s", name, exc)
            except Exception:
                log.exception("locks: %s failed", name)

        runner = guarded()
        try:
            self._tasks.create_task(runner, name=f"locks {name}")
        except RuntimeError:  # the app has stopped
            runner.close()
            work.close()

    def start(self) -> None:
        """Start the renewals and the expiry watcher in the app's task group."""
        self._background = [
            self._tasks.create_task(self._renew_forever(), name="lock renewals"),
            self._tasks.create_task(self._watch_forever(), name="lock expiries"),
        ]

    def stop(self) -> None:
        """Stop them (at shutdown: the task group waits for its tasks)."""
        for task in self._background:
            task.cancel()


@dataclass(frozen=True, slots=True)
class LockPorts:
    """What the lock service uses: the coordinator's locks, the users (names), the audit."""

    locks: SectionLocks
    users: Authenticator
    audit: AuditTrail


def install(
    hooks: Hooks,
    hub: Hub,
    registry: RoomRegistry,
    ports: LockPorts,
    tasks: asyncio.TaskGroup,
    *,
    clustered: bool,
) -> SectionLockService:
    """Make the lock service, take the lock events and subscribe to joins, leaves and other
    nodes' events; the caller stops it (``service.stop``) at shutdown."""
    service = SectionLockService(hub, registry, ports, tasks, ttl=LOCK_TTL, clustered=clustered)
    requests = LockRequests(service)
    hooks.on_event.handle("lock", requests.on_lock_event)
    hooks.on_event.handle("unlock", requests.on_unlock_event)
    hooks.on_join.subscribe(lambda joined: service.on_join(joined.conn, joined.room))
    hooks.on_disconnect.subscribe(lambda left: service.on_leave(left.conn, left.document_id))
    hooks.on_remote_event.subscribe(
        lambda remote: service.on_remote_event(remote.document_id, remote.section, remote.event)
    )
    service.start()
    return service
