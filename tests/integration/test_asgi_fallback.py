"""The plain ASGI route to the rooms (any ASGI server; here Starlette's TestClient), which
takes the queue-and-writer-task path instead of our protocol's direct path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pycrdt
import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from protocol.ysync import SyncStep1, SyncStep2, SyncUpdate, decode, encode
from server.app import create_app
from server.settings import Settings


def _edit(text: str) -> bytes:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.get("content", type=pycrdt.Text).insert(0, text)
    return doc.get_update()


@pytest.fixture
def client(tmp_path: Path) -> Any:
    app = create_app(Settings(data_dir=tmp_path, storage="memory", insecure_dev=True))
    with TestClient(app) as test_client:
        yield test_client


def test_sync_and_relay_over_plain_asgi(client: TestClient) -> None:
    with (
        client.websocket_connect("/ws/fallback/s1") as alice,
        client.websocket_connect("/ws/fallback/s1") as bob,
    ):
        assert isinstance(decode(alice.receive_bytes()), SyncStep1)
        assert isinstance(decode(bob.receive_bytes()), SyncStep1)
        alice.send_bytes(encode(SyncUpdate(_edit("over asgi"))))
        relayed = decode(bob.receive_bytes())
        assert isinstance(relayed, SyncUpdate)
        bob.send_bytes(encode(SyncStep1(b"\x00")))
        reply = decode(bob.receive_bytes())
        assert isinstance(reply, SyncStep2)
        doc: pycrdt.Doc[Any] = pycrdt.Doc()
        doc.apply_update(reply.update)
        assert str(doc.get("content", type=pycrdt.Text)) == "over asgi"


def test_bad_frame_closes_over_plain_asgi(client: TestClient) -> None:
    with client.websocket_connect("/ws/fallback/s2") as ws:
        ws.receive_bytes()
        ws.send_text("not binary")
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_bytes()
        assert closed.value.code == 1003


def test_bad_room_name_refused_over_plain_asgi(client: TestClient) -> None:
    with pytest.raises(WebSocketDisconnect), client.websocket_connect("/ws/bad name"):
        pass


def test_traffic_is_counted_over_plain_asgi(client: TestClient) -> None:
    from server.ops import counters

    traffic = counters.traffic
    frames, received, sent = traffic.frames_in, traffic.bytes_in, traffic.bytes_out
    update = encode(SyncUpdate(_edit("counted")))
    step1 = encode(SyncStep1(b"\x00"))
    with client.websocket_connect("/ws/fallback/s3") as ws:
        first = ws.receive_bytes()  # the server's sync step 1
        ws.send_bytes(update)
        ws.send_bytes(step1)
        reply = ws.receive_bytes()  # its step 2: both messages were handled
        assert isinstance(decode(reply), SyncStep2)
        assert traffic.frames_in == frames + 2
        assert traffic.bytes_in == received + len(update) + len(step1)
        assert traffic.bytes_out >= sent + len(first) + len(reply)
