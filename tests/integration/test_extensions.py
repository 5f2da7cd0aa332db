"""The extension example of docs/extensions.md, run as written against a real server."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx2

from loadtests.client import YClient
from server.hooks import (
    Authenticated,
    Disconnected,
    Edited,
    Hooks,
    PermissionChange,
    Rejected,
    Stored,
    Storing,
)
from server.realtime.hub import Hub
from tests.conftest import StartServer

DOC = Path(__file__).resolve().parents[2] / "docs" / "extensions.md"


def _example() -> dict[str, Any]:
    """The namespace of the documented extension (the python block under its heading)."""
    text = DOC.read_text()
    section = text.split("## A complete extension", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "docs/extensions.md lost its example"
    namespace: dict[str, Any] = {"__name__": "drafts_closed"}
    exec(compile(match.group(1), str(DOC), "exec"), namespace)
    return namespace


async def test_documented_extension_refuses_drafts_and_counts_edits(
    start_server: StartServer,
) -> None:
    drafts_closed = _example()["DraftsClosed"]
    installed: list[Any] = []

    def install(hooks: Hooks, hub: Hub) -> object:
        installed.append(drafts_closed.install(hooks, hub))
        return installed[-1]

    server = await start_server(extensions=[install])
    extension = installed[0]

    refused = YClient(server.ws_url, "drafts-plan/s")
    await refused.connect()
    try:
        assert await refused.wait_closed(10) == 4403
        assert "drafts are closed" in refused.close_reason
    finally:
        await refused.close()

    counted = asyncio.Event()

    def after_count(edit: Edited) -> None:
        if sum(extension.edits.values()) >= 2:
            counted.set()

    server.collab.hooks.on_edit.subscribe(after_count, priority=-1)  # after the extension's
    async with YClient(server.ws_url, "notes/s") as editor:
        await asyncio.wait_for(editor.synced.wait(), 10)
        await editor.insert(0, "hello")
        await editor.insert(5, " world")
        await asyncio.wait_for(counted.wait(), 10)
    assert list(extension.edits.values()) == [2]

    extension.uninstall()
    async with YClient(server.ws_url, "drafts-plan/s") as reopened:
        await asyncio.wait_for(reopened.synced.wait(), 10)
        assert not reopened.closed.is_set()


async def test_permission_changes_and_creations_reach_the_hook(start_server: StartServer) -> None:
    seen: list[PermissionChange] = []

    def install(hooks: Hooks, hub: Hub) -> object:
        return hooks.on_permission_change.subscribe(seen.append)

    server = await start_server(insecure_dev=False, extensions=[install])
    owner = await server.add_user("olga@example.com", "analyst", "Olga")
    kim = await server.add_user("kim@example.com", "viewer", "Kim")
    headers = {"Authorization": f"Bearer {server.token(owner)}"}
    async with httpx2.AsyncClient(base_url=server.http_url, headers=headers) as http:
        created = await http.post(
            "/api/documents",
            json={"documentId": "plan", "title": "Plan", "permissions": {"view": [str(kim.id)]}},
        )
        assert created.status_code == 201, created.text
        put = await http.put("/api/documents/plan/permissions", json={"edit": [str(kim.id)]})
        assert put.status_code == 200, put.text
        refused = await http.put("/api/documents/plan/permissions", json={"edit": "kim"})
        assert 400 <= refused.status_code < 500  # refused: no change, no hook
    assert [(c.document_id, c.actor, c.created) for c in seen] == [
        ("plan", owner.id, True),
        ("plan", owner.id, False),
    ]
    assert seen[0].after["view"] == [str(kim.id)]
    assert seen[1].before is not None
    assert seen[1].before["view"] == [str(kim.id)]
    assert seen[1].after["edit"] == [str(kim.id)]


async def test_on_authenticate_sees_the_verified_user_and_may_refuse(
    start_server: StartServer,
) -> None:
    seen: list[Authenticated] = []

    async def only_analysts(authenticated: Authenticated) -> None:
        seen.append(authenticated)
        if authenticated.principal.role != "analyst":
            raise Rejected("analysts only")

    def install(hooks: Hooks, hub: Hub) -> object:
        return hooks.on_authenticate.subscribe(only_analysts)

    server = await start_server(insecure_dev=False, extensions=[install])
    olga = await server.add_user("olga@example.com", "analyst", "Olga")
    kim = await server.add_user("kim@example.com", "viewer", "Kim")

    refused = YClient(server.ws_url, "plan/s", token=server.token(kim))
    await refused.connect()
    try:
        assert await refused.wait_closed(10) == 4401
        assert "analysts only" in refused.close_reason
    finally:
        await refused.close()
    async with YClient(server.ws_url, "plan/s", token=server.token(olga)) as ok:
        await asyncio.wait_for(ok.synced.wait(), 10)
    assert [(a.principal.user_id, str(a.room)) for a in seen] == [
        (str(kim.id), "plan/s"),
        (str(olga.id), "plan/s"),
    ]


async def test_on_store_may_keep_a_snapshot_out_and_on_disconnect_follows_every_close(
    start_server: StartServer,
) -> None:
    refusing = True
    stored: list[str] = []
    offered = asyncio.Event()
    left = asyncio.Event()
    disconnected: list[Disconnected] = []

    async def guard(storing: Storing) -> None:
        offered.set()
        if refusing and "secret" in storing.content.markdown:
            raise Rejected("no secrets in the snapshot")

    async def after(stored_: Stored) -> None:
        stored.append(stored_.document_id)

    def on_disconnect(gone: Disconnected) -> None:
        disconnected.append(gone)
        left.set()

    def install(hooks: Hooks, hub: Hub) -> object:
        return (
            hooks.on_store.subscribe(guard),
            hooks.after_store.subscribe(after),
            hooks.on_disconnect.subscribe(on_disconnect),
        )

    server = await start_server(snapshot_idle_seconds=0.05, extensions=[install])
    async with YClient(server.ws_url, "vault/s") as editor:
        await asyncio.wait_for(editor.synced.wait(), 10)
        await editor.insert(0, "a secret")
        await asyncio.wait_for(offered.wait(), 10)
    await asyncio.wait_for(left.wait(), 10)
    assert [(d.document_id, d.conn.room_name) for d in disconnected] == [("vault", "vault/s")]
    snapshots = server.collab.snapshots
    assert snapshots.stats()["snapshots_vetoed"] >= 1
    assert stored == []
    record = await server.collab.content.get("business_documents", "vault")
    assert record is not None
    assert "secret" not in str(record.get("content"))

    refusing = False
    await snapshots.flush()  # nothing is dirty: the veto is a decision, not a failure
    assert stored == []
    async with YClient(server.ws_url, "vault/s") as editor:
        await asyncio.wait_for(editor.synced.wait(), 10)
        await editor.insert(0, "now ")
    await snapshots.flush()
    assert stored[-1:] == ["vault"]
    record = await server.collab.content.get("business_documents", "vault")
    assert record is not None
    assert "now a secret" in str(record["content"]["markdown"])
