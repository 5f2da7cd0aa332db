"""The codec's exception tree: every decoding failure is the remote's fault."""


class ProtocolError(Exception):
    """Base class: the bytes received are not a message we accept."""


class MalformedMessage(ProtocolError):
    """The bytes do not follow the wire format (truncated, bad varint, unknown type...)."""


class MessageTooLarge(ProtocolError):
    """The message, or a field inside it, exceeds the configured limits."""


class MalformedUpdate(MalformedMessage):
    """A CRDT payload (update, state vector, delete set) that is not well-formed Yjs v1, or
    that declares more elements than its bytes can hold (see :mod:`protocol.yupdate`)."""
