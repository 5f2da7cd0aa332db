"""The ``collab`` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from importlib import metadata
from importlib.metadata import entry_points
from types import FrameType
from typing import Any

import uvicorn
from starlette.applications import Starlette

from crdt.document import prepare_in_loop
from persistence.errors import SchemaOutdated, StorageConflict, StorageError
from persistence.relational import USER_STATUSES, User
from server import shutdown
from server.app import create_app
from server.identity import admin
from server.identity.authentication import revoke_sessions
from server.ops import logs
from server.ops.health import Readiness
from server.ops.process import descriptor_limit, reserve_descriptors, settle_heap
from server.realtime.http_head import head_limited_protocol
from server.realtime.transport import FanoutProtocol
from server.services import open_coordinator
from server.settings import Settings
from server.stores import open_content_store

log = logging.getLogger("collab")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="collab",
        description="Real-time collaborative editing server (y-websocket compatible).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the server",
        description="Run the server. Every option can also be set as a COLLAB_* environment "
        "variable (COLLAB_HOST, COLLAB_PORT, COLLAB_DATA_DIR, COLLAB_LOG_LEVEL, ...); "
        "options given here win. With no configuration, everything runs embedded.",
    )
    serve.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="TCP port; 0 picks a free one (default 8765)")
    serve.add_argument("--data-dir", help="directory of the embedded stores (./collab-data)")
    serve.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="default info"
    )
    serve.add_argument(
        "--insecure-dev",
        action="store_const",
        const=True,
        help="DEVELOPMENT ONLY: accept requests without a token, as a local admin "
        "(COLLAB_INSECURE_DEV); never where anyone else can reach the server",
    )
    serve.add_argument(
        "--storage",
        choices=["sqlite", "memory"],
        help="sqlite: durable embedded store (default); memory: nothing survives a restart",
    )
    migrate = commands.add_parser(
        "migrate",
        help="upgrade the database schemas and indexes (idempotent)",
        description="Upgrade the relational schema (PostgreSQL when COLLAB_POSTGRES_URL is set) "
        "and create the content store's indexes (MongoDB when COLLAB_MONGO_URL is set); either "
        "defaults to an embedded SQLite file under the data directory. Safe to run again.",
    )
    migrate.add_argument("--data-dir", help="directory of the embedded stores (./collab-data)")
    user = commands.add_parser(
        "user",
        help="manage users (add, list, get, update, set-role, suspend, reactivate, delete)",
    )
    user_commands = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    add = user_commands.add_parser("add", help="add a user")
    add.add_argument("--email", required=True)
    add.add_argument("--name", required=True)
    add.add_argument("--role", required=True, choices=admin.ROLES)
    add.add_argument("--department")
    add.add_argument("--data-dir", help="directory of the embedded stores (./collab-data)")
    listing = user_commands.add_parser("list", help="list users")
    listing.add_argument("--role", help="only users of this role")
    listing.add_argument("--status", choices=USER_STATUSES, help="only users in this status")
    listing.add_argument("--department", help="only users of this department")
    listing.add_argument("--data-dir", help="directory of the embedded stores (./collab-data)")
    _user_admin_parsers(user_commands)
    set_role = user_commands.add_parser(
        "set-role",
        help="change a user's role (open sockets follow within 5 s)",
    )
    set_role.add_argument("--email", required=True)
    set_role.add_argument("--role", required=True, choices=admin.ROLES)
    set_role.add_argument("--data-dir", help="directory of the embedded stores (./collab-data)")
    suspend = user_commands.add_parser(
        "suspend",
        help="suspend a user: every request and socket of theirs is refused within 5 s",
    )
    suspend.add_argument("--email", required=True)
    suspend.add_argument("--data-dir", help="directory of the embedded stores (./collab-data)")
    token = commands.add_parser("token", help="access tokens (issue, revoke)")
    token_commands = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    issue = token_commands.add_parser(
        "issue",
        help="print a signed access token for a user",
        description="Print an HS256 token signed with COLLAB_JWT_SECRET (on an embedded "
        "install without it, with the secret generated in the data directory).",
    )
    issue.add_argument("--user", required=True, metavar="EMAIL")
    issue.add_argument("--ttl", default="24h", help="lifetime: 3600, 15m, 24h, 7d (24h)")
    issue.add_argument(
        "--doc",
        action="append",
        default=[],
        metavar="DOCUMENT_ID",
        help="limit the token to this document (repeatable); default: no limit",
    )
    issue.add_argument("--data-dir", help="directory of the embedded stores (./collab-data)")
    revoke = token_commands.add_parser(
        "revoke",
        help="end every session of a user (all tokens issued until now)",
        description="Refuse every token of the user issued until now, on every node within "
        "5 s (open sockets are closed). Needs the shared session store (COLLAB_REDIS_URL); on "
        "an embedded install, use DELETE /api/session?all=true while the server runs, or "
        "suspend the user.",
    )
    revoke.add_argument("--user", required=True, metavar="EMAIL")
    revoke.add_argument("--data-dir", help="directory of the embedded stores (./collab-data)")
    load = commands.add_parser(
        "load",
        help="drive a server with scripted clients (python -m loadtests)",
        description="The load tool; see docs/loadtests.md. Arguments are passed on.",
        add_help=False,
    )
    load.add_argument("arguments", nargs=argparse.REMAINDER)
    return parser


def _user_admin_parsers(user_commands: Any) -> None:
    """``collab user get / update / reactivate / delete`` (docs/administration.md)."""
    data_dir = "directory of the embedded stores (./collab-data)"
    get = user_commands.add_parser("get", help="show one user")
    get.add_argument("user", metavar="EMAIL_OR_ID")
    get.add_argument("--data-dir", help=data_dir)
    update = user_commands.add_parser("update", help="change a user's name or department")
    update.add_argument("user", metavar="EMAIL_OR_ID")
    update.add_argument("--name")
    department = update.add_mutually_exclusive_group()
    department.add_argument("--department")
    department.add_argument("--no-department", action="store_true", help="clear the department")
    update.add_argument("--data-dir", help=data_dir)
    reactivate = user_commands.add_parser(
        "reactivate", help="make a suspended user active (open sockets follow within 5 s)"
    )
    reactivate.add_argument("user", metavar="EMAIL_OR_ID", nargs="?")
    reactivate.add_argument("--email", help="the user's email (instead of EMAIL_OR_ID)")
    reactivate.add_argument("--data-dir", help=data_dir)
    delete = user_commands.add_parser(
        "delete", help="delete a user (one with a history is deactivated instead)"
    )
    delete.add_argument("user", metavar="EMAIL_OR_ID")
    delete.add_argument("--data-dir", help=data_dir)


def _user_line(user: User) -> str:
    return f"{user.id}\t{user.email}\t{user.name}\t{user.role}\t{user.status}"


def _user_admin(args: argparse.Namespace, settings: Settings) -> None:
    """Run one of the subcommands :func:`_user_admin_parsers` adds."""
    command = args.user_command
    if command == "get":

        async def get() -> User:
            async with await admin.open_stores(settings) as stores:
                return await admin.find_user(stores, args.user)

        user = asyncio.run(get())
        print(_user_line(user) + f"\t{user.department or '-'}\t{user.last_login or '-'}")
    elif command == "update":
        if args.name is None and args.department is None and not args.no_department:
            raise ValueError("nothing to change: give --name, --department or --no-department")
        updated = asyncio.run(
            admin.update_user(
                settings,
                args.user,
                name=args.name,
                department=args.department,
                clear_department=args.no_department,
            )
        )
        print(_user_line(updated))
    elif command == "reactivate":
        who = args.user or args.email
        if not who:
            raise ValueError("name the user: EMAIL_OR_ID or --email")
        print(_user_line(asyncio.run(admin.reactivate_user(settings, who))))
    elif command == "delete":
        user, removed = asyncio.run(admin.delete_user(settings, args.user))
        print(f"{user.id}\t{user.email}\t{'deleted' if removed else 'deactivated (has history)'}")


USER_ADMIN_COMMANDS = frozenset({"get", "update", "reactivate", "delete"})


def _settings(args: argparse.Namespace) -> Settings:
    names = (
        "host",
        "port",
        "data_dir",
        "log_level",
        "storage",
        "insecure_dev",
    )  # given only by some commands
    overrides = {
        name: getattr(args, name) for name in names if getattr(args, name, None) is not None
    }
    return Settings(**overrides)


def migrate(settings: Settings) -> int:
    """Upgrade the relational schema and create the content store's indexes; idempotent."""
    relational = "PostgreSQL" if settings.postgres_url else f"SQLite under {settings.data_dir}"
    content = "MongoDB" if settings.mongo_url else f"SQLite under {settings.data_dir}"

    async def run_content() -> None:
        store = await open_content_store(settings)
        try:
            await store.ensure_indexes()
        finally:
            await store.aclose()

    # Imported here: SQLAlchemy and Alembic weigh tens of MB the server does not need yet.
    from persistence.relational import migrate as migrate_relational

    try:
        applied = asyncio.run(migrate_relational(settings.relational_url))
    except (StorageError, ValueError) as exc:
        print(f"collab migrate: relational schema ({relational}): {exc}", file=sys.stderr)
        return 1
    done = f"applied {', '.join(applied)}" if applied else "already up to date"
    print(f"collab migrate: relational schema ({relational}): {done}")
    try:
        asyncio.run(run_content())
    except (StorageError, ValueError) as exc:
        print(f"collab migrate: content store ({content}): {exc}", file=sys.stderr)
        return 1
    print(f"collab migrate: content store ({content}): indexes in place")
    return 0


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


LISTEN_BACKLOG = 8192
# Below this open-file limit the server warns at start: each connection holds a descriptor.
FEW_DESCRIPTORS = 4096


def uvicorn_config(app: Starlette, settings: Settings) -> uvicorn.Config:
    """uvicorn on uvloop with our fan-out WebSocket protocol and the settings' limits.

    permessage-deflate stays off: it would cost CPU per recipient and open the door to
    compression bombs; y-protocols updates are already compact.
    """
    return uvicorn.Config(
        app,
        loop="uvloop",
        # h11 (httptools is not a dependency), with a deadline and a cap on request heads.
        http=head_limited_protocol(settings.header_timeout_seconds, settings.max_header_bytes),
        h11_max_incomplete_event_size=settings.max_header_bytes,
        ws=FanoutProtocol,
        ws_max_size=settings.max_message_bytes,
        ws_per_message_deflate=False,
        # X-Forwarded-* are ours to read, from COLLAB_TRUSTED_PROXIES only (server/ops/
        # proxies.py): uvicorn's own reading would trust 127.0.0.1 whatever the settings say.
        proxy_headers=False,
        ws_ping_interval=settings.ping_interval,
        ws_ping_timeout=settings.ping_timeout,
        log_config=None,
        # uvicorn logs every WebSocket accept at INFO: thousands of lines under load.
        log_level="debug" if settings.log_level == "debug" else "warning",
        access_log=settings.log_level == "debug",
        timeout_graceful_shutdown=shutdown.SOCKETS_SECONDS,
        # A reconnect storm opens thousands of TCP connections in one second: a listen queue
        # longer than uvicorn's 2048 (the kernel caps it at net.core.somaxconn) keeps them
        # from being reset before the server accepts them (or sheds them: 503).
        backlog=LISTEN_BACKLOG,
    )


class _Server(uvicorn.Server):
    """uvicorn's server, with the shutdown watchdog armed by the first stop signal.

    The first SIGTERM (or SIGINT) makes the node not ready at once (``/readyz`` 503,
    draining); uvicorn's own shutdown (stop listening, close the sockets with 1012) begins
    ``drain_seconds`` later, so that a load balancer polling readiness stops sending new
    clients first. A second signal stops at once."""

    def __init__(self, config: uvicorn.Config, readiness: Readiness, drain_seconds: float) -> None:
        super().__init__(config)
        self.watchdog = shutdown.Watchdog(shutdown.PROCESS_SECONDS + drain_seconds)
        self._readiness = readiness
        self._drain_seconds = drain_seconds
        self._signalled = False

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        prepare_in_loop()  # before the heap is frozen: what it imports is startup heap
        settle_heap()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.watchdog.start()
        self._readiness.drain(f"stopping (signal {sig})")
        if self._signalled or not self._drain_seconds:
            super().handle_exit(sig, frame)
            return
        self._signalled = True
        log.info("draining for %.1f s before closing the sockets", self._drain_seconds)
        # A plain thread: it only sets uvicorn's exit flag, which its main loop polls.
        stop = threading.Timer(self._drain_seconds, super().handle_exit, (sig, frame))
        stop.daemon = True
        stop.start()


def serve(settings: Settings) -> int:
    """Run uvicorn (uvloop, our fan-out WebSocket protocol) until SIGINT or SIGTERM."""
    logs.configure(settings.log_level, settings.log_format)
    reserved = reserve_descriptors()  # before any thread starts: see server/ops/process.py
    limit = descriptor_limit()
    if limit < FEW_DESCRIPTORS:
        log.warning(
            "the open-file limit is %d: this node can hold fewer than %d connections "
            "(raise it: ulimit -n, LimitNOFILE= in systemd, --ulimit nofile= in Docker)",
            limit,
            limit,
        )
    log.debug("descriptor table reserved: %d", reserved)
    try:
        sock = _bind(settings.host, settings.port)
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", settings.host, settings.port, exc)
        return 2
    host, port = sock.getsockname()[:2]
    app = create_app(settings)
    config = uvicorn_config(app, settings)
    server = _Server(config, app.state.readiness, settings.drain_seconds)
    # uvicorn restores the signal handlers it found and raises the signal that stopped it
    # again once it has shut down: with the default handlers in place that kills the process
    # (exit status -15 for SIGTERM) after an orderly drain. These handlers take it instead,
    # and stop the server when the signal comes before uvicorn has put its own in place (a
    # SIGTERM right after the line below would otherwise be recorded and never acted on).
    stopped_by: list[int] = []

    def stop_early(signum: int, frame: FrameType | None) -> None:
        stopped_by.append(signum)
        if not server.should_exit:
            server.handle_exit(signum, frame)

    previous = {sig: signal.signal(sig, stop_early) for sig in (signal.SIGINT, signal.SIGTERM)}
    shown = f"[{host}]" if ":" in host else host
    # Printed whatever the log level: operators and scripts (port 0) need this line.
    print(
        f"collab listening on http://{shown}:{port} (WebSocket rooms at ws://{shown}:{port}/ws/{{room}})",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stopped_by:
        log.info("collab stopped (signal %d)", stopped_by[0])
    return 0


PLUGIN_GROUP = "collab.commands"


def _plugin_command(name: str, argv: list[str]) -> int:
    """Run a ``collab NAME`` command another installed package provides (entry point group
    ``collab.commands``: a callable taking the arguments and ``prog``, returning the exit
    code). Exit 2 with a message when none is installed."""
    found = entry_points(group=PLUGIN_GROUP, name=name)
    if not found:
        print(
            f"collab {name}: not installed (install collab with its 'load' extra: "
            "pip install 'collab[load]', or run make install)",
            file=sys.stderr,
        )
        return 2
    try:
        command = next(iter(found)).load()
    except ImportError as exc:  # e.g. the server image, which ships without the load tool
        print(f"collab {name}: not available here ({exc})", file=sys.stderr)
        return 2
    code: int = command(argv, prog=f"collab {name}")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["load"]:
        # Everything after "load", --help included, belongs to the load tool, a separate
        # package found through its entry point: the server never imports it.
        return _plugin_command("load", argv[1:])
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
    except ValueError as exc:
        print(f"collab {args.command}: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    if args.command == "migrate":
        return migrate(settings)
    if args.command in ("user", "token"):
        return _operator(args, settings)
    return serve(settings)


def _operator(args: argparse.Namespace, settings: Settings) -> int:
    """``collab user ...`` and ``collab token issue``: one call each, clear errors."""
    name = f"collab {args.command}"
    try:
        if args.command == "token" and args.token_command == "revoke":
            revoked = asyncio.run(_revoke(settings, args.user))
            print(f"{name}: every token of {revoked.email} issued until now is refused")
        elif args.command == "token":
            ttl = admin.parse_duration(args.ttl)
            user, token = asyncio.run(admin.issue_token(settings, args.user, ttl, args.doc))
            print(token)
            print(f"{name}: token for {user.email}, valid {args.ttl}", file=sys.stderr)
        elif args.user_command in ("set-role", "suspend"):
            changed = asyncio.run(
                admin.change_user(
                    settings, args.email, args.user_command, getattr(args, "role", None)
                )
            )
            print(f"{changed.id}\t{changed.email}\t{changed.role}\t{changed.status}")
        elif args.user_command == "add":
            added = asyncio.run(
                admin.add_user(settings, args.email, args.name, args.role, args.department)
            )
            print(f"{added.id}\t{added.email}\t{added.role}")
        elif args.user_command in USER_ADMIN_COMMANDS:
            _user_admin(args, settings)
        else:
            users = admin.list_users_where(settings, args.role, args.status, args.department)
            for listed in asyncio.run(users):
                print(f"{listed.id}\t{listed.email}\t{listed.name}\t{listed.role}\t{listed.status}")
    except SchemaOutdated:
        print(f"{name}: the database is not migrated: run 'collab migrate' first", file=sys.stderr)
        return 1
    except StorageConflict:
        print(f"{name}: a user with that email already exists", file=sys.stderr)
        return 1
    except (ValueError, LookupError, PermissionError, StorageError) as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1
    return 0


def version() -> str:
    """The installed package's version (``collab --version``)."""
    try:
        return metadata.version("collab")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


async def _revoke(settings: Settings, email: str) -> User:
    """Revoke every session of the user ``email`` in the shared session store."""
    if not settings.redis_url:
        raise ValueError(
            "revoking sessions needs the shared session store (COLLAB_REDIS_URL); on an "
            "embedded install use DELETE /api/session?all=true, or suspend the user"
        )
    user = await admin.user_by_email(settings, email)
    coordinator = await open_coordinator(settings)
    try:
        await revoke_sessions(coordinator.sessions, str(user.id), time.time())
    finally:
        await coordinator.aclose()
    return user
