"""Transaction origins: who caused a change.

Every transaction applied to a room document carries one of these frozen values, so echo
suppression and replication read the origin instead of comparing sockets.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ClientOrigin:
    """A change sent by one WebSocket connection of this node."""

    conn_id: int


@dataclass(frozen=True, slots=True)
class PeerOrigin:
    """A change replicated from another server node."""

    node_id: str


@dataclass(frozen=True, slots=True)
class StoreOrigin:
    """A change loaded from storage (snapshot or journal replay)."""


@dataclass(frozen=True, slots=True)
class ServerOrigin:
    """A change made by the server itself (REST edit, revision restore...)."""

    reason: str


Origin = ClientOrigin | PeerOrigin | StoreOrigin | ServerOrigin
