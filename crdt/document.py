"""A thin, typed wrapper over one pycrdt ``Doc``: the state of one room.

The wrapper never awaits and lets no pycrdt callback escape: :meth:`RoomDoc.apply` returns the
effective update (what actually changed), and the caller decides to persist and broadcast it.
pycrdt raises ``ValueError`` for undecodable bytes, ``RuntimeError`` for updates that decode
but cannot be integrated, and ``pyo3_runtime.PanicException`` (a ``BaseException``) when the
Rust core panics on hostile input; all become :class:`crdt.errors.InvalidUpdate` here and
nowhere else.

Bytes reach pycrdt only after :mod:`protocol.yupdate` has checked their structure: the core
sizes its buffers from the counts an encoding declares, so a 10-byte state vector claiming
900 million entries would otherwise allocate a gigabyte and block the event loop for seconds.
A payload whose counts do not fit its own bytes is refused as InvalidUpdate before pycrdt
sees it, in microseconds.

Yrs cannot roll a transaction back: an update that fails half-way may leave the structs it
integrated before the failure in the document. :attr:`RoomDoc.tainted` says so, and the
owner must then rebuild the document from storage before anything of it is shown again.

A pycrdt ``Doc`` with an ``observe()`` callback is never freed while the subscription lives
(pycrdt keeps the document in the callback it hands to the Rust core, out of the garbage
collector's sight). A :class:`RoomDoc` is therefore a resource: its owner calls
:meth:`RoomDoc.close` (or uses it as a context manager) when done with it. As a safety net the
callback holds the wrapper only weakly, and a wrapper that is dropped without ``close()``
releases its subscription when it is collected.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Self, TypeAlias

import pycrdt

from crdt.errors import InvalidUpdate
from crdt.origins import Origin, StoreOrigin
from crdt.pending import still_pending
from protocol.errors import MalformedUpdate
from protocol.yupdate import validate_state_vector, validate_update

# A y-protocols update that carries nothing: zero structs, empty delete set.
EMPTY_UPDATE = b"\x00\x00"

# Updates a document may hold back for missing dependencies before it refuses more: each is
# kept (and journaled) until it integrates; only a client inventing clocks needs more.
MAX_HELD_BACK = 1_000


# The types server-side edits receive (``Room.apply_local``, the model helpers): callers name
# them through this module, which is where pycrdt stays.
CrdtDoc: TypeAlias = pycrdt.Doc[Any]
CrdtText: TypeAlias = pycrdt.Text


def merge_updates(*updates: bytes) -> bytes:
    """Merge updates into one (y-protocols ``mergeUpdates``); pure, no document involved.

    Raises InvalidUpdate when one of them is not an update pycrdt can read.
    """
    with _refused_as_invalid("cannot merge updates"):
        merged: bytes = pycrdt.merge_updates(*updates)
    return merged


@contextmanager
def _refused_as_invalid(what: str) -> Iterator[None]:
    """pycrdt refusing bytes (ValueError, RuntimeError, or a Rust panic) as InvalidUpdate,
    for calls that change no document (``apply`` handles a half-applied update itself)."""
    try:
        yield
    except (ValueError, RuntimeError) as exc:
        raise InvalidUpdate(f"{what}: {exc}") from exc
    except BaseException as exc:
        if _is_rust_panic(exc):
            raise InvalidUpdate(f"{what}: rejected by the CRDT core: {exc}") from exc
        raise


def _is_rust_panic(exc: BaseException) -> bool:
    # pyo3_runtime.PanicException cannot be imported by name; it is a direct BaseException
    # subclass, so recognise it by its type name instead of catching every BaseException.
    return type(exc).__name__ == "PanicException"


def _forward_to(ref: weakref.ref[RoomDoc]) -> Callable[[pycrdt.TransactionEvent], None]:
    def on_transaction(event: pycrdt.TransactionEvent) -> None:
        owner = ref()
        if owner is not None:
            owner._on_transaction(event)

    return on_transaction


def _unobserve(doc: pycrdt.Doc[Any], subscription: pycrdt.Subscription) -> None:
    doc.unobserve(subscription)


def prepare_in_loop() -> None:
    """Pay a document's one-off costs now, once, inside the running event loop: pycrdt takes
    an anyio lock per document, and the first one created in a loop imports anyio's asyncio
    backend (about 10 ms) that the first client of a node would otherwise wait for."""
    with RoomDoc() as doc:
        doc.full_state()


class RoomDoc:
    """The CRDT state of one room (an outline ``D`` or a section ``D/S``).

    Not thread-safe; owned by one event loop. No method does I/O. A resource: call
    :meth:`close` (or use ``with RoomDoc() as doc:``) when done, so that the pycrdt document
    can be freed.
    """

    __slots__ = (
        "__weakref__",
        "_changes",
        "_doc",
        "_held_back",
        "_release",
        "held_back",
        "length_change",
        "tainted",
    )

    def __init__(self) -> None:
        self._doc: pycrdt.Doc[Any] = pycrdt.Doc()
        self._changes: list[bytes] = []
        # The callback reaches the wrapper through a weak reference only: pycrdt keeps the
        # callback (and the Doc) alive until unobserved, so a strong one would pin both.
        subscription = self._doc.observe(_forward_to(weakref.ref(self)))
        self._release = weakref.finalize(self, _unobserve, self._doc, subscription)
        # Updates (or parts of them) yrs keeps pending: not in its encoded state, so kept here
        # for :meth:`full_state` until they integrate.
        self._held_back: list[bytes] = []
        self.tainted = False
        self.length_change = 0
        self.held_back = False

    def close(self) -> None:
        """Release the document's change subscription, so that it can be freed.

        Idempotent; never raises. The document may still be read afterwards (state vector,
        diff, the model helpers), but changes made to it are no longer reported: a closed
        document must not be edited or applied to.
        """
        self._release()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return not self._release.alive

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def doc(self) -> pycrdt.Doc[Any]:
        """The underlying pycrdt document, for the model helpers (outline, section)."""
        return self._doc

    def _on_transaction(self, event: pycrdt.TransactionEvent) -> None:
        update: bytes = event.update
        if update != EMPTY_UPDATE:
            self._changes.append(update)

    def apply(
        self,
        update: bytes,
        origin: Origin,
        measure: pycrdt.Text | None = None,
        *,
        trusted: bool = False,
    ) -> bytes | None:
        """Integrate a remote update; return the effective update, or None if nothing changed.

        Idempotent: applying an update twice changes nothing the second time. Updates whose
        dependencies are missing are kept pending by pycrdt and show up in the effective update
        of the call that completes them; until then :attr:`held_back` is True after the call
        that brought them, and :meth:`full_state` still includes them, so the caller must
        store such an update itself (its effective update does not hold it).

        With ``measure`` (a text of this document), :attr:`length_change` is set to how much
        the update changed that text's length (measured inside the update's transaction, so
        it costs no transaction of its own).

        Raises InvalidUpdate for bytes that are not a well-formed v1 update (checked before
        pycrdt sees them, unless ``trusted``: bytes this server stored; the document is then
        untouched) or that pycrdt rejects; if the
        failed update had already changed the document, :attr:`tainted` is set and the
        document must be discarded. Raises InvalidUpdate too when :data:`MAX_HELD_BACK`
        updates already wait for dependencies that never came (the document is unchanged).
        """
        if not trusted:
            try:
                validate_update(update)
            except MalformedUpdate as exc:
                raise InvalidUpdate(f"malformed update: {exc}") from exc
        if len(self._held_back) >= MAX_HELD_BACK:
            self._settle()
            if len(self._held_back) >= MAX_HELD_BACK:
                raise InvalidUpdate("too many updates wait for edits that never arrived")
        self._changes.clear()
        try:
            with self._doc.transaction(origin=origin):
                before = len(measure) if measure is not None else 0
                self._doc.apply_update(update)
                if measure is not None:
                    self.length_change = len(measure) - before
        except (ValueError, RuntimeError) as exc:
            raise self._rejected(str(exc)) from exc
        except BaseException as exc:
            if _is_rust_panic(exc):
                raise self._rejected(f"rejected by the CRDT core: {exc}") from exc
            raise
        effective = self._take_changes()
        # A client's edit integrates whole and comes back unchanged (the common case, free);
        # anything else may be held back in part, which only the exact check can tell.
        self.held_back = effective != update and update != EMPTY_UPDATE and self._holds_back(update)
        if self.held_back:
            self._held_back.append(update)
        elif self._held_back and effective is not None and effective != update:
            # A held-back update integrates inside the transaction that completes it, whose
            # effective update then holds more than was sent: only then can one have settled.
            self._settle()
        return effective

    def _holds_back(self, update: bytes, state: bytes | None = None) -> bool:
        """Whether yrs keeps any part of ``update`` pending in this document (``state``: its
        state vector, when the caller has it)."""
        if state is None:
            state = self.state_vector()
        return still_pending(pycrdt.get_update(update, state), state)

    def _settle(self) -> None:
        """Forget the held-back updates that have integrated since (one state vector for
        all of them)."""
        state = self.state_vector()
        self._held_back = [update for update in self._held_back if self._holds_back(update, state)]

    @property
    def held_back_count(self) -> int:
        """How many updates wait for a missing dependency (kept in :meth:`full_state`)."""
        return len(self._held_back)

    def full_state(self) -> bytes:
        """The whole document as one update, including what yrs holds back as pending: what
        storage must keep so that a compaction never drops an update no state integrates."""
        state: bytes = self._doc.get_update()
        if not self._held_back:
            return state
        merged: bytes = pycrdt.merge_updates(state, *self._held_back)
        return merged

    def _rejected(self, detail: str) -> InvalidUpdate:
        if self._changes:
            self.tainted = True
            self._changes.clear()
        return InvalidUpdate(detail)

    def _take_changes(self) -> bytes | None:
        changes = self._changes
        if not changes:
            return None
        self._changes = []
        return changes[0] if len(changes) == 1 else pycrdt.merge_updates(*changes)

    def load(self, updates: list[bytes]) -> None:
        """Replay stored updates (snapshot first, then the journal) into an empty document.

        Replaying the same update twice is harmless. Raises InvalidUpdate if storage holds
        bytes pycrdt rejects (a corrupted store, reported rather than silently dropped).
        """
        for update in updates:
            # Storage holds what passed the check on its way in, or what yrs itself encoded
            # (states, merged entries): checking it again would double a cold load's cost.
            self.apply(update, StoreOrigin(), trusted=True)
        self._changes.clear()
        self.held_back = False

    def state_vector(self) -> bytes:
        """The encoded state vector (payload of sync step 1)."""
        state: bytes = self._doc.get_state()
        return state

    def diff(self, state_vector: bytes | None = None) -> bytes:
        """The update a peer with ``state_vector`` is missing (payload of sync step 2).

        With no state vector, the full state. Raises InvalidUpdate for a vector that is not
        well-formed (checked before pycrdt sees it) or that pycrdt cannot decode.
        """
        if state_vector is not None:
            try:
                validate_state_vector(state_vector)
            except MalformedUpdate as exc:
                raise InvalidUpdate(f"malformed state vector: {exc}") from exc
        with _refused_as_invalid("invalid state vector"):
            update: bytes = self._doc.get_update(state_vector)
        return update

    def local_changes(self) -> bytes | None:
        """Return (and forget) the effective update of local edits made through :attr:`doc`.

        Server-side edits (REST, restore) go through the model helpers on :attr:`doc`; the
        caller collects what they changed here, to persist and broadcast it like a client's.
        """
        return self._take_changes()
