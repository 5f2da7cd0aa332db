"""All configuration in one frozen object, read from ``COLLAB_*`` environment variables.

Defaults are safe and need no services: everything runs embedded under ``data_dir``.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LogLevel = Literal["debug", "info", "warning", "error"]


class Settings(BaseSettings):
    """Server settings. Every field can be set as ``COLLAB_<FIELD>`` (upper case)."""

    model_config = SettingsConfigDict(env_prefix="COLLAB_", frozen=True, extra="forbid")

    host: str = Field("127.0.0.1", description="interface to listen on")
    port: int = Field(8765, ge=0, le=65535, description="TCP port (0 picks a free one)")
    data_dir: Path = Field(Path("./collab-data"), description="where embedded stores live")
    log_level: LogLevel = "info"

    storage: Literal["sqlite", "memory"] = Field(
        "sqlite", description="room store: sqlite (durable, default) or memory (tests, benchmarks)"
    )
    max_message_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="largest WebSocket message accepted"
    )
    max_buffered_bytes: int = Field(
        4 * 1024 * 1024,
        ge=64 * 1024,
        description="unsent bytes a client may fall behind before it is disconnected (1013)",
    )
    room_idle_seconds: float = Field(
        5.0, ge=0, description="grace period before an empty room is unloaded"
    )
    compact_after_updates: int = Field(
        1000, ge=1, description="journal entries after which a room is compacted"
    )
    header_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="a request head (request line and headers) must be complete this long "
        "after its first byte (after the connection opened, for the first request); "
        "otherwise the connection is closed (408)",
    )
    max_header_bytes: int = Field(
        16 * 1024,
        ge=8 * 1024,
        le=1024 * 1024,
        description="largest request head accepted (431 past it; a request line past 8 KiB "
        "gets 414)",
    )
    max_sockets_per_user: int = Field(
        200,
        ge=1,
        description="WebSockets one user may hold open at once on this node; more are "
        "closed with 4429",
    )
    max_joining: int = Field(
        256,
        ge=0,
        description="sockets that may be joining their rooms at once on this node; more "
        "upgrades are refused with HTTP 503 and a jittered Retry-After (load shedding in "
        "reconnect storms); 0: no limit",
    )
    ping_interval: float = Field(20.0, gt=0, description="seconds between keepalive pings")
    ping_timeout: float = Field(20.0, gt=0, description="seconds to wait for a pong")
    create_on_join: bool = Field(True, description="joining an unknown room creates it")
    max_awareness_entries: int = Field(64, ge=1, description="entries per awareness update")
    mongo_url: str | None = Field(
        None,
        description="MongoDB URL for the document content; unset: embedded SQLite under data_dir",
    )
    mongo_database: str = Field("collab", min_length=1, description="MongoDB database name")
    jwt_secret: SecretStr | None = Field(
        None, description="HS256 secret for access tokens (>= 32 bytes); embedded: generated"
    )
    jwt_public_key: SecretStr | None = Field(
        None, description="PEM public key to verify RS256 tokens issued elsewhere"
    )
    postgres_url: str | None = Field(
        None,
        description="PostgreSQL URL for users, permissions, audit...; unset: embedded SQLite",
    )

    @property
    def relational_url(self) -> str:
        """The relational database: PostgreSQL when configured, else a file under data_dir."""
        if self.postgres_url:
            return self.postgres_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'relational.sqlite3').resolve()}"

    redis_url: str | None = Field(
        None,
        description="Redis URL for presence, locks, sessions, rate limits and the change "
        "stream; unset: in-process",
    )
    redis_cluster: bool = Field(
        False,
        description="COLLAB_REDIS_URL names one node of a Redis Cluster (the client finds "
        "the others and follows redirections and failovers)",
    )
    redis_wait_replicas: int = Field(
        1,
        ge=0,
        le=5,
        description="Redis Cluster only: replicas that must acknowledge a journal append, a "
        "freeze or a lock change before it counts (WAIT), so a master failover loses none; "
        "0 for a cluster without replicas",
    )
    node_name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]{1,100}$",
        description="this node's stable name among several (its Redis-outage spool is named "
        "after it); default: host name and port",
    )
    insecure_dev: bool = Field(
        False,
        description="DEVELOPMENT ONLY: accept requests without a token as a local admin",
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="browser Origins allowed to open sockets and call the API, besides the "
        "server's own; '*' allows any (JSON list, e.g. '[\"https://app.example.com\"]')",
    )
    session_cookie: str = Field(
        "collab_session", min_length=1, description="name of the session cookie"
    )
    audit: bool = Field(
        True,
        description="write audit and data-access rows; turn off only to measure what they cost",
    )
    access_cache_seconds: float = Field(
        2.0,
        ge=0,
        le=4.0,
        description="how long a user's status and rights are cached; changes reach open "
        "connections within twice this plus the recheck interval (under 5 s)",
    )
    session_outage_grace_seconds: float = Field(
        900.0,
        ge=0,
        description="while Redis is down, sessions this node verified within this many "
        "seconds are still accepted (others: close 1013, retry later); 0: refuse all",
    )
    rate_messages_per_second: int = Field(
        200,
        ge=1,
        description="socket messages (updates, awareness...) a user may send per second, "
        "counted per node over 10 s windows",
    )
    rate_connects_per_minute: int = Field(
        600, ge=1, description="sockets a user may open per minute"
    )
    rate_requests_per_minute: int = Field(
        1200, ge=1, description="REST requests a user may make per minute"
    )

    snapshot_idle_seconds: float = Field(
        2.0, ge=0, description="derived content is written this long after the last edit"
    )
    revision_interval_seconds: float = Field(
        600.0, gt=0, description="while editing, a revision is cut at most this often"
    )
    revisions_inline: int = Field(
        20, ge=1, le=200, description="recent revisions kept inside the document record"
    )
    snapshot_max_wait_seconds: float = Field(
        10.0, ge=0, description="...and at the latest this long after the first unwritten edit"
    )
    snapshot_retry_seconds: float = Field(
        2.0, gt=0, description="a failed snapshot is retried after this long, then doubling"
    )
    snapshot_retry_max_seconds: float = Field(
        300.0, gt=0, description="...up to this long between attempts"
    )
    max_section_bytes: int = Field(
        2 * 1024 * 1024,
        ge=1024,
        description="encoded CRDT state a room (section or outline) may reach; updates past "
        "it are refused",
    )
    max_document_bytes: int = Field(
        3 * 1024 * 1024,
        ge=1024,
        description="encoded CRDT state all rooms of a document may reach together; updates "
        "past it are refused. Its record holds the text twice (markdown and sections) plus "
        "once per inline revision, under 16 MB: keep it at 3 MiB or less",
    )

    # -- operations (docs/operations.md) -------------------------------------------------
    log_format: Literal["text", "json"] = Field(
        "text",
        description="text (for a terminal) or json: one JSON object per line with the "
        "request id, connection id, user, document, room and node",
    )
    metrics_token: SecretStr | None = Field(
        None,
        description="when set, /metrics answers only 'Authorization: Bearer <this token>'",
    )
    drain_seconds: float = Field(
        0.0,
        ge=0,
        le=60,
        description="after SIGTERM, /readyz says 503 (draining) for this long before the "
        "sockets close with 1012: time for the load balancer to stop sending new clients",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="addresses or networks of reverse proxies whose X-Forwarded-For names "
        "the client (audit rows record that address); JSON list, e.g. '[\"10.0.0.0/8\"]'",
    )

    # -- identity (docs/operations.md, "Identity") -----------------------------------------
    jwt_issuer: str = Field("collab", min_length=1, description="the 'iss' tokens must carry")
    jwt_audience: str = Field(
        "collab", min_length=1, description="the 'aud' tokens must carry (one of theirs)"
    )
    jwt_jwks_url: str | None = Field(
        None,
        description="JWKS URL of an external identity provider: RS256/ES256 tokens are "
        "verified with its keys (fetched, cached, refetched for an unknown key id)",
    )
    jwt_leeway_seconds: float = Field(
        30.0, ge=0, le=300, description="clock skew allowed on exp, iat and nbf"
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            ipaddress.ip_network(entry.strip(), strict=False)  # ValueError names it
        return value
