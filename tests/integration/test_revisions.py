"""Revisions end to end through the live rooms: save, list, diff, restore."""

from __future__ import annotations

import pycrdt

from loadtests.client import YClient
from protocol.events import decode_event
from protocol.ysync import AppEventMessage
from tests.conftest import StartServer


async def _text_is(client: YClient, text: str) -> None:
    await client.wait_for(lambda: str(client.text) == text)


async def _stored(client: YClient, updates: int) -> None:
    """Wait until the server acknowledged ``updates`` update messages of this ``events=1``
    client (its sync step 2 on connect is the first)."""

    def acked() -> bool:
        events = [
            decode_event(m.payload) for m in client.received if isinstance(m, AppEventMessage)
        ]
        return any(e.type == "ack" and e.get("updates") >= updates for e in events)

    await client.wait_for(acked)


async def test_save_list_and_diff(start_server: StartServer) -> None:
    server = await start_server(snapshot_idle_seconds=30)
    collab = server.collab
    async with YClient(server.ws_url, "rev/intro", query="events=1") as editor:
        await editor.insert(0, "Version one.\n")
        await _stored(editor, 2)
        first = await collab.revisions.save("rev", "user-1")
        await editor.insert(len(editor.text), "More text.\n")
        await _stored(editor, 3)
        second = await collab.revisions.save("rev", "user-1")
    assert (first["version"], second["version"]) == (first["version"], first["version"] + 1)
    assert first["changes"].startswith("first revision")
    assert "+2 / -0 words" in second["changes"]
    listed = await collab.content.list_revisions("rev", limit=10)
    assert [r["revisionId"] for r in listed] == [second["revisionId"], first["revisionId"]]
    diffs = await collab.revisions.diff("rev", first["revisionId"], second["revisionId"])
    assert diffs[0].status == "edited"
    assert "+More text." in diffs[0].unified_diff
    record = await collab.content.get("business_documents", "rev")
    assert record is not None
    assert record["version"] == second["version"]


async def test_restore_reaches_live_clients_and_offline_edits_merge_once(
    start_server: StartServer,
) -> None:
    server = await start_server(snapshot_idle_seconds=30, room_idle_seconds=60)
    collab = server.collab
    async with (
        YClient(server.ws_url, "plan/goals") as live,
        YClient(server.ws_url, "plan/goals") as offline,
    ):
        await live.insert(0, "Goal: grow.")
        await _text_is(offline, "Goal: grow.")  # relayed, so the server has it
        saved = await collab.revisions.save("plan", "user-1")
        await live.insert(len(live.text), " Goal: shrink.")
        await _text_is(offline, "Goal: grow. Goal: shrink.")
        async with YClient(server.ws_url, "plan/extra") as extra:
            await extra.insert(0, "added later")
        await offline.close()
        # While "offline" is away, its user keeps typing at the start of the text.
        offline.text.insert(0, "NOTE ")
        restored = await collab.revisions.restore("plan", saved["revisionId"], "user-2")
        assert restored["changes"].startswith(f"restored v{saved['version']}")
        await _text_is(live, "Goal: grow.")
        # The offline client comes back with its edit: merged once, nothing duplicated.
        back = YClient(server.ws_url, "plan/goals")
        back.doc.apply_update(offline.doc.get_update())
        async with back:
            await back.flush()
            await _text_is(live, "NOTE Goal: grow.")
            await _text_is(back, "NOTE Goal: grow.")
    async with YClient(server.ws_url, "plan") as outline:
        sections = outline.doc.get("sections", type=pycrdt.Map)
        await outline.wait_for(lambda: set(sections.keys()) == {"goals"})


async def test_autosave_cuts_revisions_on_the_time_policy(start_server: StartServer) -> None:
    server = await start_server(snapshot_idle_seconds=30, revision_interval_seconds=0.001)
    collab = server.collab
    async with YClient(server.ws_url, "auto/s", query="events=1") as editor:
        await editor.insert(0, "typed")
        await _stored(editor, 2)
        await collab.snapshots.flush()  # the first snapshot starts the policy's clock
        await editor.insert(0, "more ")
        await _stored(editor, 3)
        await collab.snapshots.flush()
    listed = await collab.content.list_revisions("auto", limit=10)
    assert listed
    assert listed[0]["changes"].startswith("autosave")
