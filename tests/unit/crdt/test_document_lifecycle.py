"""RoomDoc as a resource: close() releases the observer so the pycrdt document is freed."""

from __future__ import annotations

import gc
import weakref
from typing import Any

import pycrdt

from crdt.anchors import Resolved, create_anchor, resolve_anchors
from crdt.document import RoomDoc


def _docs_alive() -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, pycrdt.Doc))


def test_anchors_release_their_scratch_copies() -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    text = doc.get("content", type=pycrdt.Text)
    text.insert(0, "a sentence to comment on")
    anchor = create_anchor(text, 2, 10)
    before = _docs_alive()
    for _ in range(10):
        create_anchor(text, 2, 10)
        assert resolve_anchors(text, [anchor])[0] == Resolved(2, 10, "sentence")
    assert _docs_alive() <= before


def test_a_room_doc_dropped_without_close_is_still_freed() -> None:
    doc = RoomDoc()
    pycrdt_doc = weakref.ref(doc.doc)
    del doc
    gc.collect()
    assert pycrdt_doc() is None


def test_close_is_idempotent_and_the_document_stays_readable() -> None:
    source: pycrdt.Doc[Any] = pycrdt.Doc()
    source.get("content", type=pycrdt.Text).insert(0, "readable")
    with RoomDoc() as doc:
        doc.load([source.get_update()])
    assert doc.closed
    doc.close()
    assert str(doc.doc.get("content", type=pycrdt.Text)) == "readable"
    assert len(doc.diff()) > 2
    pycrdt_doc = weakref.ref(doc.doc)
    del doc
    gc.collect()
    assert pycrdt_doc() is None
