"""The y-protocols messages of the y-websocket wire, one frozen dataclass per message.

Frame layout (one message per WebSocket binary frame), as y-websocket writes it::

    varuint messageType
      0 messageSync:           varuint syncType (0 step1 | 1 step2 | 2 update), varbytes payload
      1 messageAwareness:      varbytes awareness update (see protocol.awareness)
      2 messageAuth:           varuint authType (0 permission denied), varstring reason
      3 messageQueryAwareness: (empty)
    100 collab app event:      varbytes msgpack map (see protocol.events); never sent to a
                               client that did not ask for application events

CRDT payloads stay opaque ``bytes``: this module never imports pycrdt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, assert_never

from protocol.errors import MalformedMessage, MessageTooLarge
from protocol.varint import (
    decode_varbytes,
    decode_varstring,
    decode_varuint,
    encode_varbytes,
    encode_varstring,
    encode_varuint,
)

MESSAGE_SYNC: Final = 0
MESSAGE_AWARENESS: Final = 1
MESSAGE_AUTH: Final = 2
MESSAGE_QUERY_AWARENESS: Final = 3
MESSAGE_APP_EVENT: Final = 100

SYNC_STEP1: Final = 0
SYNC_STEP2: Final = 1
SYNC_UPDATE: Final = 2

AUTH_PERMISSION_DENIED: Final = 0


@dataclass(frozen=True, slots=True)
class Limits:
    """Upper bounds the decoder enforces before doing any work."""

    max_message_bytes: int = 8 * 1024 * 1024


DEFAULT_LIMITS: Final = Limits()


@dataclass(frozen=True, slots=True)
class SyncStep1:
    """Sync step 1: the sender's state vector; the receiver answers with step 2."""

    state_vector: bytes


@dataclass(frozen=True, slots=True)
class SyncStep2:
    """Sync step 2: the update the receiver is missing, relative to a state vector."""

    update: bytes


@dataclass(frozen=True, slots=True)
class SyncUpdate:
    """An incremental document update."""

    update: bytes


@dataclass(frozen=True, slots=True)
class AwarenessMessage:
    """An awareness update (decode its entries with :func:`protocol.awareness.decode`)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class AuthPermissionDenied:
    """y-protocols auth message: the connection may not do what it tried (read-only)."""

    reason: str


@dataclass(frozen=True, slots=True)
class QueryAwareness:
    """Ask the receiver to send the awareness states it knows."""


@dataclass(frozen=True, slots=True)
class AppEventMessage:
    """A collab application event: an opaque msgpack map (see :mod:`protocol.events`)."""

    payload: bytes


Message = (
    SyncStep1
    | SyncStep2
    | SyncUpdate
    | AwarenessMessage
    | AuthPermissionDenied
    | QueryAwareness
    | AppEventMessage
)

_SYNC_TYPES: Final[dict[int, type[SyncStep1] | type[SyncStep2] | type[SyncUpdate]]] = {
    SYNC_STEP1: SyncStep1,
    SYNC_STEP2: SyncStep2,
    SYNC_UPDATE: SyncUpdate,
}


def encode(message: Message) -> bytes:
    """Encode one message into the bytes of one WebSocket binary frame."""
    match message:
        case SyncStep1(state_vector=payload):
            return bytes((MESSAGE_SYNC, SYNC_STEP1)) + encode_varbytes(payload)
        case SyncStep2(update=payload):
            return bytes((MESSAGE_SYNC, SYNC_STEP2)) + encode_varbytes(payload)
        case SyncUpdate(update=payload):
            return bytes((MESSAGE_SYNC, SYNC_UPDATE)) + encode_varbytes(payload)
        case AwarenessMessage(payload=payload):
            return bytes((MESSAGE_AWARENESS,)) + encode_varbytes(payload)
        case AuthPermissionDenied(reason=reason):
            return bytes((MESSAGE_AUTH, AUTH_PERMISSION_DENIED)) + encode_varstring(reason)
        case QueryAwareness():
            return bytes((MESSAGE_QUERY_AWARENESS,))
        case AppEventMessage(payload=payload):
            return encode_varuint(MESSAGE_APP_EVENT) + encode_varbytes(payload)
        case _:
            assert_never(message)


def encode_update(update: bytes) -> bytes:
    """Shortcut for the hot path: the frame of ``SyncUpdate(update)``."""
    return b"\x00\x02" + encode_varbytes(update)


def decode(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Message:
    """Decode the bytes of one frame into a message.

    Total: returns a message or raises MessageTooLarge (over ``limits``) or MalformedMessage
    (anything else: truncation, unknown type, trailing bytes, invalid UTF-8).
    """
    size = len(data)
    if size > limits.max_message_bytes:
        raise MessageTooLarge(f"message of {size} bytes exceeds {limits.max_message_bytes}")
    message_type, pos = decode_varuint(data, 0)
    message: Message
    if message_type == MESSAGE_SYNC:
        sync_type, pos = decode_varuint(data, pos)
        kind = _SYNC_TYPES.get(sync_type)
        if kind is None:
            raise MalformedMessage(f"unknown sync message type {sync_type}")
        payload, pos = decode_varbytes(data, pos, size)
        message = kind(payload)
    elif message_type == MESSAGE_AWARENESS:
        payload, pos = decode_varbytes(data, pos, size)
        message = AwarenessMessage(payload)
    elif message_type == MESSAGE_AUTH:
        auth_type, pos = decode_varuint(data, pos)
        if auth_type != AUTH_PERMISSION_DENIED:
            raise MalformedMessage(f"unknown auth message type {auth_type}")
        reason, pos = decode_varstring(data, pos, size)
        message = AuthPermissionDenied(reason)
    elif message_type == MESSAGE_QUERY_AWARENESS:
        message = QueryAwareness()
    elif message_type == MESSAGE_APP_EVENT:
        payload, pos = decode_varbytes(data, pos, size)
        message = AppEventMessage(payload)
    else:
        raise MalformedMessage(f"unknown message type {message_type}")
    if pos != size:
        raise MalformedMessage(f"{size - pos} trailing bytes after the message")
    return message
