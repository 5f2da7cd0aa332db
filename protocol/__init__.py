"""Sans-I/O codecs for the collab wire protocol.

Two layers, both pure (no sockets, no asyncio, no pycrdt):

* :mod:`protocol.varint` and :mod:`protocol.ysync`: the y-protocols binary format spoken by
  every Yjs client (lib0 varuint framing; sync, awareness, auth, query-awareness messages).
* :mod:`protocol.yupdate`: structural validation of the Yjs v1 payloads (updates, state
  vectors, delete sets) before the CRDT core sees them.
* :mod:`protocol.events`: our own msgpack application events, carried in a message type of
  our own that vanilla y-websocket clients never receive.

Every decoder is total: whatever the bytes, it returns a message or raises a subclass of
:class:`protocol.errors.ProtocolError`.
"""

from protocol.errors import MalformedMessage, MalformedUpdate, MessageTooLarge, ProtocolError
from protocol.ysync import (
    AppEventMessage,
    AuthPermissionDenied,
    AwarenessMessage,
    Limits,
    Message,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    decode,
    encode,
)

__all__ = [
    "AppEventMessage",
    "AuthPermissionDenied",
    "AwarenessMessage",
    "Limits",
    "MalformedMessage",
    "MalformedUpdate",
    "Message",
    "MessageTooLarge",
    "ProtocolError",
    "QueryAwareness",
    "SyncStep1",
    "SyncStep2",
    "SyncUpdate",
    "decode",
    "encode",
]
