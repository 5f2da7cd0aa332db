"""Authentication: from a request's credentials to the user it acts for.

A request or socket carries a signed token (:mod:`server.identity.tokens`) in one of three places,
first
found wins: the ``Authorization: Bearer`` header, the ``token`` query parameter (browsers
cannot set headers on a WebSocket), or the session cookie. The token is verified without
I/O (before a socket is upgraded); then the user is looked up (unknown, suspended or
deactivated users are refused) and the token's session is checked in the session store
(``session:{sessionId}``, 24 h TTL; in-process when embedded): a session ended by logout is
refused even though its token has not expired yet.

While the session store is unavailable (Redis down), a session this node verified as live
within ``outage_grace`` seconds (``COLLAB_SESSION_OUTAGE_GRACE_SECONDS``) is accepted without
the lookup, from a bounded in-memory table of recently verified sessions; any other is
refused with ServiceUnavailable (close 1013 / HTTP 503, retry in 5 s). The revocation
guarantee during an outage: a logout made on this node is honoured at once; one made on
another node, or less than ``cache_ttl`` before the outage, is honoured once the store is back.
Users' status (suspensions) is in the relational store and is still checked.

``--insecure-dev`` makes a request without credentials act as a local development admin.
It is off by default and the server says so loudly on every start when it is on.

The Origin of browser requests is checked against an allow-list (cross-site WebSocket
hijacking): requests from the server's own origin and from clients that send no Origin
(non-browser clients) pass; others only when listed.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.cookies import CookieError, SimpleCookie
from typing import Final
from urllib.parse import parse_qs, urlsplit

from persistence.coordinator.ports import SessionStore
from persistence.errors import StorageUnavailable
from persistence.relational import NewUser, User, UserStore
from server.errors import AuthError, PermissionDenied, ServiceUnavailable
from server.identity.audit import AuditContext
from server.identity.rights import Subject
from server.identity.tokens import Identity, TokenService
from server.ops import context

log = logging.getLogger(__name__)

SESSION_TTL: Final = 24 * 3600.0
VOUCHED_MAX: Final = 50_000  # sessions remembered for an outage of the session store
# ``session:user~{userId}`` holds the moment before which the user's tokens are revoked
# (session ids are hex, so no session is named so); kept 30 days (the longest the session
# store keeps anything): tokens must not live longer than that (docs/operations.md).
REVOKED_PREFIX: Final = "user~"
REVOCATION_TTL: Final = 30 * 86400.0
DEV_EMAIL: Final = "dev@localhost"


@dataclass(frozen=True, slots=True)
class Principal:
    """The user a request or a socket acts for, and where it comes from."""

    user_id: str
    email: str
    name: str
    role: str
    session_id: str
    documents: frozenset[str] | None = None  # the token's scope; None: unscoped
    expires_at: float = 0.0
    ip: str | None = None
    user_agent: str | None = None
    user_uuid: uuid.UUID | None = field(default=None, repr=False, compare=False)
    request_id: str | None = field(default=None, compare=False)  # X-Request-ID, see ops
    issued_at: float = 0.0  # the token's iat (0: insecure-dev)

    @property
    def subject(self) -> Subject:
        return Subject(self.user_id, self.role, True)

    @property
    def context(self) -> AuditContext:
        """Who acts and from where, for the audit trail's entries."""
        return AuditContext(self.uuid, self.ip, self.user_agent, self.request_id)

    @property
    def uuid(self) -> uuid.UUID:
        """The user id as a UUID (parsed once, when the principal is made)."""
        return self.user_uuid if self.user_uuid is not None else uuid.UUID(self.user_id)

    def may_open(self, document_id: str) -> bool:
        """Whether the token's scope covers the document (rights are decided elsewhere)."""
        return self.documents is None or document_id in self.documents


def find_token(
    headers: Mapping[str, str], query_string: str, cookie_name: str
) -> tuple[str, str] | None:
    """``(token, where)`` from the Authorization header, the ``token`` query parameter or
    the session cookie (in that order), None when there is none. ``headers`` are keyed in
    lower case."""
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise AuthError("the Authorization header must be 'Bearer <token>'")
        return value.strip(), "header"
    if query_string:
        values = parse_qs(query_string).get("token")
        if values:
            return values[-1], "query"
    cookie = headers.get("cookie")
    if cookie:
        jar = SimpleCookie()
        try:
            jar.load(cookie)
        except CookieError:
            return None
        morsel = jar.get(cookie_name)
        if morsel is not None and morsel.value:
            return morsel.value, "cookie"
    return None


def origin_allowed(origin: str | None, host: str | None, allowed: Sequence[str]) -> bool:
    """Whether a request with this Origin header may proceed.

    No Origin (a non-browser client): yes. The server's own origin (the Origin's host:port
    equals the Host header): yes. Otherwise only an origin in ``allowed`` (exact match of
    scheme://host[:port], or ``*``).
    """
    if origin is None:
        return True
    if "*" in allowed:
        return True
    normalized = origin.strip().rstrip("/").lower()
    if normalized in {a.rstrip("/").lower() for a in allowed}:
        return True
    if normalized == "null" or not host:
        return False
    parts = urlsplit(normalized)
    return bool(parts.netloc) and parts.netloc == host.strip().lower()


class Authenticator:
    """Turns credentials into a :class:`Principal`, caching user and session lookups for
    ``cache_ttl`` seconds (so suspensions and logouts take effect within that time)."""

    def __init__(
        self,
        tokens: TokenService,
        users: UserStore,
        sessions: SessionStore,
        *,
        cookie_name: str = "collab_session",
        dev_user: User | None = None,
        cache_ttl: float = 2.0,
        outage_grace: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tokens = tokens
        self.cookie_name = cookie_name
        self.dev_user = dev_user
        self._users = users
        self._sessions = sessions
        self._ttl = cache_ttl
        self._clock = clock
        self._user_cache: dict[str, tuple[float, User | None]] = {}
        self._revoked: dict[str, tuple[float, float]] = {}  # user -> (until, revoked before)
        self._session_cache: dict[str, float] = {}
        # Sessions the store said were live, most recent last: (user id, when), at most
        # VOUCHED_MAX of them. Used only while the store is unavailable (see the module doc).
        self._outage_grace = outage_grace
        self._vouched: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._outage = False
        self.outage_admissions = 0

    @property
    def insecure(self) -> bool:
        return self.dev_user is not None

    def identify(self, headers: Mapping[str, str], query_string: str) -> Identity | None:
        """Verify the request's token without I/O. None: no token, and insecure-dev mode
        lets that through. Raises AuthError for a missing (when required) or bad token."""
        found = find_token(headers, query_string, self.cookie_name)
        if found is None:
            if self.dev_user is not None:
                return None
            raise AuthError(
                "authentication required: send a token (Authorization: Bearer, ?token= "
                "or the session cookie)"
            )
        return self.tokens.verify(found[0])

    async def principal(
        self, identity: Identity | None, *, ip: str | None = None, user_agent: str | None = None
    ) -> Principal:
        """The principal of a verified identity (None: the insecure-dev user).

        Raises AuthError (unknown user, ended session) or PermissionDenied (suspended user)."""
        if identity is None:
            if self.dev_user is None:
                raise AuthError("authentication required")
            return _principal(self.dev_user, "dev", None, 0.0, ip, user_agent)
        user = await self.user(identity.user_id)
        if user is None and identity.email is not None:
            user = await self.user_by_email(identity.email)
        if user is None:
            raise AuthError("the token's user does not exist")
        if user.status != "active":
            raise PermissionDenied(f"user account is {user.status}")
        await self._check_session(identity, ip, user_agent)
        revoked = await self.revoked_before(str(user.id))
        if revoked and identity.issued_at <= revoked:
            raise AuthError("the sessions of this user were revoked; sign in again")
        return _principal(
            user,
            identity.session_id,
            identity.documents,
            identity.expires_at,
            ip,
            user_agent,
            identity.issued_at,
        )

    async def authenticate(
        self,
        headers: Mapping[str, str],
        query_string: str,
        *,
        ip: str | None = None,
    ) -> Principal:
        """``identify`` then ``principal``."""
        identity = self.identify(headers, query_string)
        return await self.principal(identity, ip=ip, user_agent=headers.get("user-agent"))

    async def user(self, user_id: str) -> User | None:
        """The stored user (cached for ``cache_ttl``), None when unknown."""
        now = self._clock()
        hit = self._user_cache.get(user_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            key = uuid.UUID(user_id)
        except ValueError:
            return None
        user = await self._users.get(key)
        if len(self._user_cache) > 50_000:
            self._user_cache.clear()
        self._user_cache[user_id] = (now + self._ttl, user)
        return user

    def forget_user(self, user_id: str) -> None:
        self._user_cache.pop(user_id, None)

    async def user_by_email(self, email: str) -> User | None:
        """The stored user with this email (an external identity provider's token names
        its user so), cached like :meth:`user`."""
        key = "email:" + email.strip().lower()
        now = self._clock()
        hit = self._user_cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        user = await self._users.get_by_email(email)
        if len(self._user_cache) > 50_000:
            self._user_cache.clear()
        self._user_cache[key] = (now + self._ttl, user)
        return user

    async def revoke_user(self, user_id: str) -> float:
        """End every session of the user: tokens issued until now are refused from now on
        (on every node within the cache TTL, open sockets closed by the guard). Returns the
        moment of the revocation (seconds since the epoch)."""
        now = time.time()
        self._revoked[user_id] = (self._clock() + self._ttl, now)
        await revoke_sessions(self._sessions, user_id, now)
        return now

    async def revoked_before(self, user_id: str) -> float:
        """Tokens of the user issued at or before this moment are refused (0.0: none).
        Cached for the cache TTL; while the session store is unavailable, the last value
        this node read holds."""
        now = self._clock()
        hit = self._revoked.get(user_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            record = await self._sessions.get(REVOKED_PREFIX + user_id)
        except StorageUnavailable:
            return hit[1] if hit is not None else 0.0
        value = record.get("revokedBefore") if record is not None else None
        moment = float(value) if isinstance(value, int | float) else 0.0
        if len(self._revoked) > 50_000:
            self._revoked.clear()
        self._revoked[user_id] = (now + self._ttl, moment)
        return moment

    async def end_session(self, identity: Identity) -> None:
        """Log out: the session is refused from now on, even with an unexpired token."""
        if not identity.session_id:
            return
        # Forgotten first: even if the store is down, this node refuses the session now.
        self._session_cache.pop(identity.session_id, None)
        self._vouched.pop(identity.session_id, None)
        remaining = max(1.0, identity.expires_at - time.time() + 60.0)
        await self._sessions.put(
            identity.session_id,
            {"userId": identity.user_id, "revoked": True, "endedAt": _now_iso()},
            ttl=min(remaining, SESSION_TTL * 30),
        )
        self._session_cache.pop(identity.session_id, None)
        self._vouched.pop(identity.session_id, None)

    async def _check_session(
        self, identity: Identity, ip: str | None, user_agent: str | None
    ) -> None:
        sid = identity.session_id
        if not sid:
            return
        now = self._clock()
        if self._session_cache.get(sid, 0.0) > now:
            return
        try:
            record = await self._sessions.get(sid)
            if record is None:
                await self._sessions.put(
                    sid,
                    {
                        "userId": identity.user_id,
                        "createdAt": _now_iso(),
                        "ip": ip,
                        "userAgent": (user_agent or "")[:256] or None,
                    },
                    ttl=SESSION_TTL,
                )
        except StorageUnavailable as exc:
            self._vouch_in_outage(identity, exc)
            return
        if self._outage:
            self._outage = False
            log.info("session store available again: sessions are checked again")
        if record is not None and (
            record.get("revoked") or record.get("userId") != identity.user_id
        ):
            self._vouched.pop(sid, None)
            raise AuthError("this session has ended; sign in again")
        if len(self._session_cache) > 50_000:
            self._session_cache.clear()
        self._session_cache[sid] = now + self._ttl
        self._vouched[sid] = (identity.user_id, now)
        self._vouched.move_to_end(sid)
        if len(self._vouched) > VOUCHED_MAX:
            self._vouched.popitem(last=False)

    def _vouch_in_outage(self, identity: Identity, exc: StorageUnavailable) -> None:
        """The session store is down: accept a session this node saw live within
        ``outage_grace`` seconds; ServiceUnavailable (retry later) for any other."""
        if not self._outage:
            self._outage = True
            log.warning(
                "session store unavailable (%s): accepting sessions this node verified in "
                "the last %g s, refusing others with 1013 until it is back",
                exc,
                self._outage_grace,
            )
        seen = self._vouched.get(identity.session_id)
        if (
            seen is not None
            and seen[0] == identity.user_id
            and self._clock() - seen[1] <= self._outage_grace
        ):
            self.outage_admissions += 1
            return
        raise ServiceUnavailable(
            "sessions cannot be checked right now; retry in 5 s", retry_after=5.0
        ) from exc


async def revoke_sessions(sessions: SessionStore, user_id: str, now: float) -> None:
    """Record that every token of ``user_id`` issued at or before ``now`` is revoked (the
    operator command writes it for the servers to read; StorageError when it cannot)."""
    await sessions.put(
        REVOKED_PREFIX + user_id,
        {"userId": user_id, "revokedBefore": now, "revokedAt": _now_iso()},
        ttl=REVOCATION_TTL,
    )


def _principal(
    user: User,
    session_id: str,
    documents: frozenset[str] | None,
    expires_at: float,
    ip: str | None,
    user_agent: str | None,
    issued_at: float = 0.0,
) -> Principal:
    return Principal(
        str(user.id),
        user.email,
        user.name,
        user.role,
        session_id,
        documents,
        expires_at,
        _ip(ip),
        (user_agent or "")[:512] or None,
        user.id,
        context.request_id.get(),
        issued_at,
    )


@functools.lru_cache(maxsize=4096)
def _ip(value: str | None) -> str | None:
    """The peer's address if it is an IP address (test clients and unix sockets give
    other strings), else None. Cached: a herd of reconnects comes from few addresses."""
    if not value:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


async def ensure_dev_user(users: UserStore) -> User:
    """The local admin that ``--insecure-dev`` acts as (created on first use)."""
    user = await users.get_by_email(DEV_EMAIL)
    if user is None:
        user = await users.add(NewUser(DEV_EMAIL, "Local developer", "admin"))
    return user
