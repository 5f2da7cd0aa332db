"""Interop with pycrdt's y-protocols helpers, a second implementation of the same wire format.

Both directions: frames pycrdt builds decode into the expected messages, and the frames we
encode are read by pycrdt's ``Decoder``, ``handle_sync_message`` and ``Awareness``.
pycrdt's ``handle_sync_message`` takes the frame without its leading message type byte.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import (
    Awareness,
    Decoder,
    Doc,
    Text,
    YMessageType,
    YSyncMessageType,
    create_awareness_message,
    create_sync_message,
    create_update_message,
    handle_sync_message,
    is_awareness_disconnect_message,
    write_var_uint,
)

from protocol import (
    AuthPermissionDenied,
    AwarenessMessage,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    decode,
    encode,
)
from protocol import awareness as awareness_codec
from protocol.awareness import AwarenessEntry, AwarenessUpdate
from protocol.varint import MAX_VARUINT, decode_varuint, encode_varuint

FAST = settings(max_examples=200, deadline=None, database=None)


def empty_doc(client_id: int) -> Doc[Text]:
    return Doc(client_id=client_id)


def text_doc(content: str = "", client_id: int = 1) -> Doc[Text]:
    doc = empty_doc(client_id)
    doc["t"] = Text(content)
    return doc


def text_of(doc: Doc[Text]) -> str:
    return str(doc.get("t", type=Text))


def test_message_type_numbers_agree() -> None:
    assert encode(SyncStep1(b""))[:2] == bytes((YMessageType.SYNC, YSyncMessageType.SYNC_STEP1))
    assert encode(SyncStep2(b""))[:2] == bytes((YMessageType.SYNC, YSyncMessageType.SYNC_STEP2))
    assert encode(SyncUpdate(b""))[:2] == bytes((YMessageType.SYNC, YSyncMessageType.SYNC_UPDATE))
    assert encode(AwarenessMessage(b""))[:1] == bytes((YMessageType.AWARENESS,))


@pytest.mark.parametrize("value", [0, 127, 128, 300, 2**32, 2**53 - 1])
def test_varuint_golden_values_agree(value: int) -> None:
    assert encode_varuint(value) == write_var_uint(value)


@FAST
@given(st.integers(min_value=0, max_value=MAX_VARUINT))
def test_varuint_agrees_with_pycrdt(value: int) -> None:
    encoded = encode_varuint(value)
    assert encoded == write_var_uint(value)
    assert Decoder(encoded).read_var_uint() == value
    assert decode_varuint(write_var_uint(value), 0) == (value, len(encoded))


# --- pycrdt -> collab ----------------------------------------------------------------------


def test_pycrdt_sync_step1_decodes() -> None:
    doc = text_doc("hello")
    assert decode(create_sync_message(doc)) == SyncStep1(doc.get_state())


def test_pycrdt_sync_step1_of_an_empty_doc_decodes() -> None:
    doc = empty_doc(1)
    assert decode(create_sync_message(doc)) == SyncStep1(b"\x00")


def test_pycrdt_update_message_decodes() -> None:
    doc = text_doc("hello")
    update = doc.get_update()
    assert decode(create_update_message(update)) == SyncUpdate(update)


@FAST
@given(st.binary(max_size=300))
def test_pycrdt_update_frames_decode_for_any_payload(payload: bytes) -> None:
    assert decode(create_update_message(payload)) == SyncUpdate(payload)
    assert decode(create_awareness_message(payload)) == AwarenessMessage(payload)


def test_pycrdt_sync_step2_reply_decodes() -> None:
    server = text_doc("hello", client_id=1)
    client = empty_doc(2)
    reply = handle_sync_message(create_sync_message(client)[1:], server)
    assert reply is not None
    message = decode(reply)
    assert isinstance(message, SyncStep2)
    client.apply_update(message.update)
    assert text_of(client) == "hello"


def test_pycrdt_awareness_update_decodes() -> None:
    awareness = Awareness(Doc(client_id=12345))
    awareness.set_local_state({"user": {"name": "alice"}})
    payload = awareness.encode_awareness_update([awareness.client_id])
    message = decode(create_awareness_message(payload))
    assert message == AwarenessMessage(payload)
    update = awareness_codec.decode(message.payload)
    # Awareness() sets an empty local state at clock 0; set_local_state moves it to clock 1.
    assert update == AwarenessUpdate((AwarenessEntry(12345, 1, '{"user":{"name":"alice"}}'),))
    assert not update.entries[0].removed


def test_pycrdt_awareness_removal_decodes() -> None:
    awareness = Awareness(Doc(client_id=2**53 - 1))
    awareness.set_local_state({"user": "bob"})
    awareness.set_local_state(None)
    payload = awareness.encode_awareness_update([awareness.client_id])
    message = decode(create_awareness_message(payload))
    assert isinstance(message, AwarenessMessage)
    (entry,) = awareness_codec.decode(message.payload).entries
    assert entry == AwarenessEntry(2**53 - 1, 2, "null")
    assert entry.removed


# --- collab -> pycrdt ----------------------------------------------------------------------


def test_our_sync_step1_gets_a_step2_reply_from_pycrdt() -> None:
    server = text_doc("hello", client_id=1)
    client = empty_doc(2)
    reply = handle_sync_message(encode(SyncStep1(client.get_state()))[1:], server)
    assert reply is not None
    message = decode(reply)
    assert isinstance(message, SyncStep2)
    client.apply_update(message.update)
    assert text_of(client) == "hello"


def test_our_sync_step1_with_a_partial_state_gets_only_the_missing_part() -> None:
    server = text_doc("hello", client_id=1)
    client = empty_doc(2)
    client.apply_update(server.get_update())
    server.get("t", type=Text).insert(5, " world")
    reply = handle_sync_message(encode(SyncStep1(client.get_state()))[1:], server)
    assert reply is not None
    message = decode(reply)
    assert isinstance(message, SyncStep2)
    assert message.update == server.get_update(client.get_state())
    client.apply_update(message.update)
    assert text_of(client) == "hello world"


@pytest.mark.parametrize("kind", [SyncStep2, SyncUpdate])
def test_pycrdt_applies_our_update_frames(kind: type[SyncStep2] | type[SyncUpdate]) -> None:
    source = text_doc("hello", client_id=1)
    target = empty_doc(2)
    reply = handle_sync_message(encode(kind(source.get_update()))[1:], target)
    assert reply is None
    assert text_of(target) == "hello"


def test_our_update_frame_matches_pycrdt_byte_for_byte() -> None:
    update = text_doc("hello").get_update()
    assert encode(SyncUpdate(update)) == create_update_message(update)
    assert encode(AwarenessMessage(b"\x00")) == create_awareness_message(b"\x00")


def test_pycrdt_reads_our_auth_reason() -> None:
    frame = encode(AuthPermissionDenied("read-only: é"))
    decoder = Decoder(frame)
    assert decoder.read_var_uint() == 2
    assert decoder.read_var_uint() == 0
    assert decoder.read_var_string() == "read-only: é"


def test_pycrdt_awareness_applies_our_update() -> None:
    awareness = Awareness(Doc(client_id=1))
    state = '{"user":{"name":"zoë","color":"#ff0000"}}'
    payload = awareness_codec.encode(AwarenessUpdate((AwarenessEntry(42, 3, state),)))
    frame = encode(AwarenessMessage(payload))
    assert not is_awareness_disconnect_message(frame[1:])
    awareness.apply_awareness_update(Decoder(frame[1:]).read_message() or b"", "remote")
    assert awareness.states[42] == {"user": {"name": "zoë", "color": "#ff0000"}}
    assert awareness.meta[42]["clock"] == 3

    removal = awareness_codec.encode(AwarenessUpdate((AwarenessEntry(42, 4, "null"),)))
    frame = encode(AwarenessMessage(removal))
    assert is_awareness_disconnect_message(frame[1:])
    awareness.apply_awareness_update(removal, "remote")
    assert 42 not in awareness.states
