"""How many revisions stay inline in a document's record: as many as fit its size budget."""

from __future__ import annotations

from crdt.markdown import BusinessContent, render_business_content
from crdt.outline import SectionInfo
from server.documents.revisions import RECORD_BUDGET_BYTES, inline_revisions

MIB = 1024 * 1024


def _content(text: str) -> BusinessContent:
    return render_business_content([(SectionInfo("a", "A", 0), text)])


def _record_bytes(content: BusinessContent, inline: int) -> int:
    size = len(content.markdown.encode()) + sum(
        len(section.content.encode()) for section in content.sections
    )
    return size * (1 + inline)


def test_small_documents_keep_every_wanted_revision_inline() -> None:
    assert inline_revisions(_content("short text"), 20) == 20
    assert inline_revisions(_content(""), 20) == 20


def test_large_documents_keep_fewer_inline_and_stay_under_the_budget() -> None:
    for text_mib in (0.5, 1, 2, 2.5):
        content = _content("x" * int(text_mib * MIB))
        keep = inline_revisions(content, 20)
        assert 1 <= keep < 20
        assert _record_bytes(content, keep) <= RECORD_BUDGET_BYTES


def test_at_least_one_revision_stays_inline() -> None:
    at_cap = _content("x" * (3 * MIB))  # the default document cap: still under 16 MiB
    assert inline_revisions(at_cap, 20) == 1
    assert _record_bytes(at_cap, 1) < 16 * MIB - 64 * 1024
    assert inline_revisions(_content("x" * (7 * MIB)), 20) == 1
