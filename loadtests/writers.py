"""The typing role of a load run: :class:`Writer` inserts one character per edit at its
cursor (and publishes its cursor through awareness if asked), built on the listeners of
:mod:`loadtests.agents`; :func:`make_agent` picks the role a client plan asks for."""

from __future__ import annotations

import json
import time

import pycrdt

from loadtests import wire
from loadtests.agents import (
    ALPHABET,
    Agent,
    ApplyingListener,
    PassiveListener,
    Recorder,
    canonical_awareness,
    sleep_until,
)
from loadtests.plan import ClientPlan
from loadtests.updates import update_header
from protocol import awareness as awareness_codec
from protocol.awareness import AwarenessEntry, AwarenessUpdate
from protocol.ysync import AwarenessMessage, encode, encode_update


class Writer(ApplyingListener):
    """Types one character per edit at its own cursor; optionally publishes the cursor."""

    def __init__(
        self,
        plan: ClientPlan,
        base_url: str,
        query: str,
        recorder: Recorder,
        *,
        apply_remote: bool = True,
    ) -> None:
        super().__init__(plan, base_url, query, recorder)
        self.apply_remote = apply_remote
        self._later: list[bytes] = []
        self._local: list[bytes] = []
        self._remote = False
        self._cursor = 0
        self._awareness_clock = 0
        self.own_awareness: tuple[int, str] | None = None
        self._char = ALPHABET[plan.index % len(ALPHABET)]
        self.last_clock: int | None = None
        self.schedule_lag: list[float] = []
        self.doc.observe(self._on_transaction)

    @property
    def client_id(self) -> int:
        return int(self.doc.client_id)

    def _on_transaction(self, event: pycrdt.TransactionEvent) -> None:
        if not self._remote:
            self._local.append(event.update)

    def receive_update(self, update: bytes) -> None:
        if not self.apply_remote and self.synced.is_set():
            self._later.append(update)
            return
        self._remote = True
        try:
            self.doc.apply_update(update)
        finally:
            self._remote = False

    def final_text(self) -> str:
        later, self._later = self._later, []
        if later:
            self._remote = True
            try:
                with self.doc.transaction():
                    for update in later:
                        self.doc.apply_update(update)
            finally:
                self._remote = False
        return str(self.text)

    def awareness_text(self) -> str:
        states = {client: state for client, (_, state) in self.awareness.items()}
        if self.own_awareness is not None:
            states[self.client_id] = self.own_awareness[1]
        return canonical_awareness(states)

    def place_cursor(self, fraction: float) -> None:
        self._cursor = int(len(self.text) * fraction)

    async def edit(self, cursor: bool) -> None:
        """Insert one character at the cursor, send the update, then the cursor if asked."""
        position = min(self._cursor, len(self.text))
        self.text.insert(position, self._char)
        self._cursor = position + 1
        update = self._local.pop()
        self._local.clear()
        edit = update_header(update)
        assert edit is not None, "a single insert always carries one struct"
        when = time.monotonic()
        await self.send(encode_update(update))
        self.recorder.sends.add(self.plan.room, edit[0], edit[1], when)
        self.last_clock = edit[1]
        if cursor:
            await self.send(self._awareness_frame(position + 1))

    async def publish_presence(self) -> None:
        """Presence storms: one awareness update (a cursor move), timed like an edit."""
        self._cursor += 1
        frame = self._awareness_frame(self._cursor)
        when = time.monotonic()
        await self.send(frame)
        self.recorder.sends.add(self.plan.room, self.client_id, self._awareness_clock, when)
        self.last_clock = self._awareness_clock

    def _awareness_frame(self, index: int) -> bytes:
        self._awareness_clock += 1
        state = json.dumps(
            {"user": {"name": f"writer-{self.plan.index}"}, "cursor": {"anchor": index}},
            separators=(",", ":"),
        )
        entry = AwarenessEntry(self.client_id, self._awareness_clock, state)
        self.own_awareness = (self._awareness_clock, state)
        payload = awareness_codec.encode(AwarenessUpdate((entry,)))
        return encode(AwarenessMessage(payload))

    async def type_until(
        self, t_start: float, t_end: float, rate: float, cursor: bool, *, presence: bool = False
    ) -> None:
        """Edit at ``rate`` per second from ``t_start`` (plus a phase) until ``t_end``.

        Open loop: a late edit is sent at once and the schedule is kept, so a slow server
        shows up as latency, not as fewer edits. ``schedule_lag`` records how late each was.
        A writer whose connection is down (reconnect storms) skips the edits due meanwhile.
        """
        interval = 1.0 / rate
        due = t_start + interval * ((self.plan.index * 0.618034) % 1.0)
        while due < t_end:
            await sleep_until(due)
            now = time.monotonic()
            if now >= t_end:
                break  # the timer fired late: every edit stays inside the measured window
            if self.connected:
                self.schedule_lag.append(max(0.0, now - due))
                try:
                    await (self.publish_presence() if presence else self.edit(cursor))
                except wire.WireClosedError:
                    if not self.plan.drops:
                        self.recorder.error("send_failed")
                        return
            elif not self.plan.drops:
                return
            due += interval


def make_agent(
    plan: ClientPlan,
    base_url: str,
    query: str,
    recorder: Recorder,
    *,
    writers_apply: bool = True,
) -> Agent:
    if plan.role == "writer":
        return Writer(plan, base_url, query, recorder, apply_remote=writers_apply)
    if plan.role == "applying":
        return ApplyingListener(plan, base_url, query, recorder)
    return PassiveListener(plan, base_url, query, recorder)
