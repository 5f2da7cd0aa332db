"""Operator commands: users and access tokens (``collab user ...``, ``collab token issue``).

``collab user list / get / update / reactivate / delete`` act on the database directly, as
the operator (they are not in the audit trail, which names a user as the actor); the REST
API (``/api/users``) does the same for admins, audited (``docs/administration.md``).

Each opens the relational stores the settings name, does one thing, and closes them. The
token secret comes from ``COLLAB_JWT_SECRET``; on an embedded install without it, a random
secret is created once in the data directory (mode 0600), never in the repository.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Sequence
from pathlib import Path

from persistence.errors import StorageConflict
from persistence.relational import (
    UNSET,
    NewUser,
    RelationalStores,
    User,
    UserChanges,
    UserQuery,
    migrate,
    open_relational,
)
from server.identity.tokens import MIN_SECRET_BYTES, TokenService
from server.settings import Settings

ROLES = ("admin", "manager", "analyst", "viewer")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``24h``, ``7d`` -> seconds. Raises ValueError otherwise."""
    match = _DURATION.match(text.strip())
    if match is None or float(match[1]) <= 0:
        raise ValueError(f"not a duration: {text!r} (examples: 3600, 15m, 24h, 7d)")
    return float(match[1]) * _UNIT_SECONDS[match[2]]


def token_secret(settings: Settings) -> str:
    """The HS256 secret: COLLAB_JWT_SECRET, else the embedded install's generated one."""
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value()
    path = settings.data_dir / "jwt-secret"
    if not path.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        _write_private(path, secrets.token_urlsafe(48))
    secret = path.read_text().strip()
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ValueError(f"{path} holds a secret shorter than {MIN_SECRET_BYTES} bytes")
    return secret


def _write_private(path: Path, text: str) -> None:
    path.touch(mode=0o600, exist_ok=False)
    path.write_text(text + "\n")


def token_service(settings: Settings) -> TokenService:
    public_key = settings.jwt_public_key.get_secret_value() if settings.jwt_public_key else None
    return TokenService(
        secret=token_secret(settings),
        public_key=public_key,
        jwks_url=settings.jwt_jwks_url,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        leeway=settings.jwt_leeway_seconds,
    )


async def open_stores(settings: Settings) -> RelationalStores:
    """The relational stores; the embedded database is migrated first (it is ours), a
    PostgreSQL one must have been migrated with ``collab migrate``."""
    if not settings.postgres_url:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        await migrate(settings.relational_url)
    return await open_relational(settings.relational_url)


def first_admin_hint(settings: Settings) -> str:
    """What an operator runs to get the first admin token of a fresh install."""
    where = (
        ""
        if settings.data_dir == Settings.model_fields["data_dir"].default
        else (f" --data-dir {settings.data_dir}")
    )
    return (
        "No admin user exists yet. Create one and get a token to sign in with:\n"
        f"  collab user add{where} --email you@example.com --name 'Your Name' --role admin\n"
        f"  collab token issue{where} --user you@example.com --ttl 24h\n"
        "(or run with --insecure-dev for a local development server without tokens)"
    )


async def add_user(
    settings: Settings, email: str, name: str, role: str, department: str | None
) -> User:
    """Add a user; ValueError for bad fields, StorageConflict for a taken email."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    async with await open_stores(settings) as stores:
        return await stores.users.add(NewUser(email, name, role, department))


async def list_users(settings: Settings, role: str | None) -> list[User]:
    async with await open_stores(settings) as stores:
        users: list[User] = []
        offset = 0
        while True:
            page = await stores.users.find(UserQuery(role=role, limit=200, offset=offset))
            users.extend(page.items)
            offset += len(page.items)
            if not page.items or offset >= page.total:
                return users


async def user_by_email(settings: Settings, email: str) -> User:
    """The user ``email`` (its own connection to the stores); LookupError if there is none."""
    async with await open_stores(settings) as stores:
        return await find_user(stores, email)


async def change_user(settings: Settings, email: str, change: str, role: str | None) -> User:
    """``set-role`` (to ``role``), ``suspend`` or ``reactivate`` the user ``email``; the
    servers see it within their cache TTL (open sockets too: their guard re-checks).
    LookupError for an unknown user, ValueError for an unknown role."""
    async with await open_stores(settings) as stores:
        user = await stores.users.get_by_email(email)
        if user is None:
            raise LookupError(f"no user with email {email!r}")
        if change == "set-role":
            if role not in ROLES:
                raise ValueError(f"role must be one of {', '.join(ROLES)}")
            return await stores.users.update(user.id, UserChanges(role=role))
        if change == "suspend":
            return await stores.users.suspend(user.id)
        if change == "reactivate":
            return await stores.users.reactivate(user.id)
    raise ValueError(f"unknown change {change!r}")


async def issue_token(
    settings: Settings, email: str, ttl: float, documents: Sequence[str]
) -> tuple[User, str]:
    """A token for the active user ``email``; LookupError if there is no such user,
    PermissionError if the user is not active."""
    async with await open_stores(settings) as stores:
        user = await stores.users.get_by_email(email)
    if user is None:
        raise LookupError(f"no user with email {email!r} (add one with: collab user add)")
    if user.status != "active":
        raise PermissionError(f"user {email} is {user.status}: no token issued")
    scope = frozenset(documents) if documents else None
    return user, token_service(settings).issue(str(user.id), ttl=ttl, documents=scope)


async def find_user(stores: RelationalStores, who: str) -> User:
    """A user by email or id; LookupError if there is none."""
    user = await stores.users.get_by_email(who)
    if user is None:
        try:
            user = await stores.users.get(uuid.UUID(who))
        except ValueError:
            user = None
    if user is None:
        raise LookupError(f"no user {who!r} (list them with: collab user list)")
    return user


async def known_roles(stores: RelationalStores) -> set[str]:
    """The built-in roles and every role stored in the ``roles`` table."""
    return set(ROLES) | {role.name for role in await stores.roles.list_all()}


async def list_users_where(
    settings: Settings, role: str | None, status: str | None, department: str | None
) -> list[User]:
    """Every user matching the filters (each given filter is an exact match)."""
    async with await open_stores(settings) as stores:
        users: list[User] = []
        while True:
            query = UserQuery(
                role=role, status=status, department=department, limit=200, offset=len(users)
            )
            page = await stores.users.find(query)
            users.extend(page.items)
            if not page.items or len(users) >= page.total:
                return users


async def update_user(
    settings: Settings,
    who: str,
    *,
    name: str | None = None,
    department: str | None = None,
    clear_department: bool = False,
) -> User:
    """Change a user's name and/or department (``clear_department``: set it to none)."""
    changes = UserChanges(
        name=UNSET if name is None else name,
        department=None if clear_department else (UNSET if department is None else department),
    )
    async with await open_stores(settings) as stores:
        user = await find_user(stores, who)
        return await stores.users.update(user.id, changes)


async def reactivate_user(settings: Settings, who: str) -> User:
    """Make a suspended or deactivated user active again."""
    async with await open_stores(settings) as stores:
        user = await find_user(stores, who)
        return await stores.users.reactivate(user.id)


async def delete_user(settings: Settings, who: str) -> tuple[User, bool]:
    """Remove a user; one who left a trail (audit rows, comments...) is deactivated instead.
    Returns the user and whether the row was removed."""
    async with await open_stores(settings) as stores:
        user = await find_user(stores, who)
        try:
            if await stores.users.delete(user.id):
                return user, True
        except StorageConflict:
            pass
        return await stores.users.update(user.id, UserChanges(status="deactivated")), False
