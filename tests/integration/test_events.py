"""Application events (``?events=1``): joined, durable acknowledgements, ping, errors."""

from __future__ import annotations

from loadtests.client import YClient
from protocol.events import AppEvent, decode_event, encode_event
from protocol.ysync import AppEventMessage, SyncUpdate
from tests.conftest import StartServer


def _events(client: YClient) -> list[AppEvent]:
    return [decode_event(m.payload) for m in client.received if isinstance(m, AppEventMessage)]


def _of_type(client: YClient, kind: str) -> list[AppEvent]:
    return [event for event in _events(client) if event.type == kind]


async def test_joined_event_and_acks_after_durable_writes(start_server: StartServer) -> None:
    server = await start_server()
    async with YClient(server.ws_url, "ev/acks", query="events=1") as writer:
        joined = _of_type(writer, "joined")
        assert len(joined) == 1
        assert joined[0].get("room") == "ev/acks"
        assert joined[0].get("readOnly") is False
        for i in range(5):
            await writer.insert(0, str(i))
        await writer.wait_for(lambda: any(e.get("updates") == 5 for e in _of_type(writer, "ack")))
        # Acknowledged means stored: the journal already holds every acknowledged edit.
        stored = await server.collab.store.load("ev/acks")
        assert len(stored.journal) == 5
        # A duplicate changes nothing but is acknowledged all the same.
        await writer.send(SyncUpdate(writer.doc.get_update()))
        await writer.wait_for(lambda: any(e.get("updates") == 6 for e in _of_type(writer, "ack")))


async def test_vanilla_clients_get_no_application_events(start_server: StartServer) -> None:
    server = await start_server()
    async with YClient(server.ws_url, "ev/plain") as plain:
        await plain.insert(0, "x")
        async with YClient(server.ws_url, "ev/plain") as other:
            await other.wait_for(lambda: str(other.text) == "x")
        assert _events(plain) == []


async def test_ping_pong_and_unknown_event(start_server: StartServer) -> None:
    server = await start_server()
    async with YClient(server.ws_url, "ev/ping", query="events=1") as client:
        await client.send(AppEventMessage(encode_event(AppEvent("ping", {"id": 42}))))
        await client.wait_for(lambda: bool(_of_type(client, "pong")))
        assert _of_type(client, "pong")[0].get("id") == 42
        await client.send(AppEventMessage(encode_event(AppEvent("teleport"))))
        await client.wait_for(lambda: bool(_of_type(client, "error")))
        error = _of_type(client, "error")[0]
        assert error.get("fatal") is False
        assert "teleport" in error.get("detail")
        assert not client.closed.is_set()


async def test_error_event_precedes_the_close(start_server: StartServer) -> None:
    server = await start_server()
    async with YClient(server.ws_url, "ev/err", query="events=1") as client:
        await client.send_raw(b"\xff\xff")
        assert await client.wait_closed() == 1002
        errors = _of_type(client, "error")
        assert errors
        assert errors[0].get("fatal") is True
        assert errors[0].get("code") == 1002


async def test_application_event_without_opt_in_closes_1002(start_server: StartServer) -> None:
    server = await start_server()
    async with YClient(server.ws_url, "ev/noopt") as client:
        await client.send(AppEventMessage(encode_event(AppEvent("ping"))))
        assert await client.wait_closed() == 1002
        assert "events=1" in client.close_reason
