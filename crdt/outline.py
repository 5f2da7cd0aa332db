"""The outline of a business document: its section list and its meta, held in one room doc.

The outline room `D` carries two root maps, which Yjs clients read and write directly:

- `sections`: section id -> `Y.Map {title: string, order: number}`. Sections are listed by
  `(order, id)`. Order is a fraction rather than a list index so that two clients inserting
  concurrently each write one key of their own and never conflict; equal orders (two inserts
  at the same spot) are settled by the id, identically on every replica.
- `meta`: document meta (title, type, status...), arbitrary JSON values.

`Outline` is a typed view over that doc. It does no I/O and holds no state besides the doc, so
any number of views over one doc agree. Each mutating method runs in one transaction and joins
the caller's transaction if there is one: wrap calls in `with doc.transaction(origin=...)` to tag
them with an origin or to group several into a single update.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

from pycrdt import Array, Doc, Map, Text, XmlElement, XmlFragment, XmlText

from crdt.errors import CrdtError
from crdt.ids import check_section_id, is_valid_section_id

SECTIONS_ROOT: Final = "sections"
META_ROOT: Final = "meta"
TITLE_KEY: Final = "title"
ORDER_KEY: Final = "order"

# Yjs stores every number as a float64: integers beyond 2**53 would silently lose precision.
MAX_SAFE_INTEGER: Final = 2**53
# Deep enough for any real meta value, shallow enough to never hit the recursion limit.
MAX_META_DEPTH: Final = 32
_SHARED_TYPES: Final = (Array, Map, Text, XmlElement, XmlFragment, XmlText)


class SectionNotFoundError(CrdtError, KeyError):
    """The outline has no (well-formed) section with this id."""


class SectionExistsError(CrdtError, ValueError):
    """The outline already has an entry under this section id."""


class InvalidMetaValueError(CrdtError, ValueError):
    """A meta value is not representable as JSON in a Yjs document."""


@dataclass(frozen=True, slots=True)
class SectionInfo:
    """One section as listed by the outline."""

    id: str
    title: str
    order: float


def _sort_key(section: SectionInfo) -> tuple[float, str]:
    return (section.order, section.id)


def _order_between(low: float | None, high: float | None) -> float | None:
    """A finite order strictly between two neighbours (None means no neighbour on that side).

    Returns None when floats leave no room (equal neighbours from concurrent inserts, or
    precision exhausted by many inserts at one spot); the caller then renumbers.
    """
    if low is None:
        candidate = 1.0 if high is None else high - 1.0
    elif high is None:
        candidate = low + 1.0
    else:
        candidate = low + (high - low) / 2
    above_low = low is None or candidate > low
    below_high = high is None or candidate < high
    if math.isfinite(candidate) and above_low and below_high:
        return candidate
    return None


def _read_section(section_id: str, value: object) -> SectionInfo | None:
    """Decode one entry of the `sections` map, or None if a client wrote it malformed."""
    if not is_valid_section_id(section_id) or not isinstance(value, Map):
        return None
    title = value.get(TITLE_KEY)
    order = value.get(ORDER_KEY)
    if not isinstance(title, str):
        return None
    # bool is an int subclass, but `true` is no position.
    if isinstance(order, bool) or not isinstance(order, int | float):
        return None
    if not math.isfinite(order):
        return None
    return SectionInfo(section_id, title, float(order))


class Outline:
    """A typed view over the outline doc of one business document.

    Entries of `sections` that a client wrote malformed (invalid id, not a map, title not a
    string, order not a finite number) are invisible to every method except
    `remove_section`, which deletes any entry so such garbage can be cleaned up, and
    `add_section`, which refuses to overwrite one. Constructing the view creates the root
    types locally if they are missing, which produces no update.
    """

    __slots__ = ("_doc", "_meta", "_sections")

    def __init__(self, doc: Doc[Any]) -> None:
        self._doc = doc
        self._sections: Map[object] = doc.get(SECTIONS_ROOT, type=Map)
        self._meta: Map[object] = doc.get(META_ROOT, type=Map)

    @property
    def doc(self) -> Doc[Any]:
        """The outline doc this view reads and writes."""
        return self._doc

    def sections(self) -> list[SectionInfo]:
        """The well-formed sections, sorted by `(order, id)`: the same list on every replica."""
        with self._doc.transaction():
            found = (_read_section(key, value) for key, value in self._sections.items())
            return sorted((info for info in found if info is not None), key=_sort_key)

    def section(self, section_id: str) -> SectionInfo:
        """The section with this id. Raises `SectionNotFoundError` if there is none."""
        with self._doc.transaction():
            info = _read_section(section_id, self._sections.get(section_id))
        if info is None:
            raise SectionNotFoundError(section_id)
        return info

    def __contains__(self, section_id: object) -> bool:
        """True if the outline lists a well-formed section with this id."""
        if not isinstance(section_id, str):
            return False
        with self._doc.transaction():
            return _read_section(section_id, self._sections.get(section_id)) is not None

    def add_section(
        self, section_id: str, title: str, after: str | None = None, *, before: str | None = None
    ) -> SectionInfo:
        """Insert a new section right after `after`, right before `before`, or else at the end.

        Raises `InvalidIdError` for a bad id, `TypeError` for a title that is not a string,
        `SectionExistsError` if any entry already uses the id, `SectionNotFoundError` if the
        anchor is not listed, and `ValueError` if both anchors are given. Nothing is written
        when it raises.
        """
        check_section_id(section_id)
        _check_title(title)
        with self._doc.transaction():
            if section_id in self._sections:
                raise SectionExistsError(section_id)
            order = self._order_at_end() if after is None and before is None else None
            if order is None:
                listed = self.sections()
                order = self._order_at(listed, _insert_position(listed, after, before))
            self._sections[section_id] = Map({TITLE_KEY: title, ORDER_KEY: order})
        return SectionInfo(section_id, title, order)

    def rename_section(self, section_id: str, title: str) -> SectionInfo:
        """Set the title of a section; writes nothing if the title is unchanged.

        Raises `SectionNotFoundError` if the section is not listed, `TypeError` if the title
        is not a string.
        """
        _check_title(title)
        with self._doc.transaction():
            info = self.section(section_id)
            if info.title == title:
                return info
            self._entry(section_id)[TITLE_KEY] = title
        return SectionInfo(section_id, title, info.order)

    def move_section(
        self, section_id: str, *, after: str | None = None, before: str | None = None
    ) -> SectionInfo:
        """Move a section right after `after`, right before `before`, or else to the end.

        Writes nothing if the section is already there. Raises `SectionNotFoundError` if the
        section or the anchor is not listed, and `ValueError` if both anchors are given or the
        anchor is the section itself.
        """
        if section_id in (after, before):
            raise ValueError(f"cannot move section {section_id!r} relative to itself")
        with self._doc.transaction():
            listed = self.sections()
            current = self.section(section_id)
            others = [info for info in listed if info.id != section_id]
            position = _insert_position(others, after, before)
            if listed.index(current) == position:
                return current
            order = self._order_at(others, position)
            self._entry(section_id)[ORDER_KEY] = order
        return SectionInfo(section_id, current.title, order)

    def remove_section(self, section_id: str) -> None:
        """Delete the entry under this id, well-formed or not.

        Raises `SectionNotFoundError` if there is no entry. The section's own room is not
        touched: deleting its content is the caller's decision.
        """
        with self._doc.transaction():
            if section_id not in self._sections:
                raise SectionNotFoundError(section_id)
            del self._sections[section_id]

    def meta(self) -> dict[str, object]:
        """The document meta as plain Python values.

        Numbers come back as floats whatever was written: Yjs has a single number type.
        """
        with self._doc.transaction():
            return {key: _to_py(value) for key, value in self._meta.items()}

    def set_meta(self, key: str, value: object) -> None:
        """Set one meta entry to a JSON value (None, bool, int, float, str, list, tuple, dict).

        Raises `InvalidMetaValueError`, writing nothing, for anything else: other types,
        non-string dict keys, NaN or infinite floats, integers beyond +/-2**53 (Yjs numbers
        are float64), nesting deeper than `MAX_META_DEPTH`.
        """
        _check_json(value, depth=0)
        with self._doc.transaction():
            self._meta[key] = value

    def remove_meta(self, key: str) -> None:
        """Delete one meta entry. Idempotent: a missing key writes nothing."""
        with self._doc.transaction():
            if key in self._meta:
                del self._meta[key]

    def _entry(self, section_id: str) -> Map[object]:
        entry = self._sections[section_id]
        assert isinstance(entry, Map), "checked by section()"
        return entry

    def _order_at_end(self) -> float | None:
        """An order after every entry's (listed or malformed: after a hidden one is after the
        listed ones too), read without decoding whole entries: appending is what a first
        join does, once per new section. None when floats leave no room (the caller
        renumbers)."""
        last: float | None = None
        for value in self._sections.values():
            order = value.get(ORDER_KEY) if isinstance(value, Map) else None
            if isinstance(order, bool) or not isinstance(order, int | float):
                continue
            if math.isfinite(order) and (last is None or order > last):
                last = float(order)
        return _order_between(last, None)

    def _order_at(self, listed: list[SectionInfo], position: int) -> float:
        """The order that puts a section at `position` of `listed` (which excludes it).

        Renumbers `listed` to 1.0, 2.0, ... when floats leave no room there, which keeps the
        sequence and makes room; the renumbering is written in the caller's transaction.
        """
        order = _order_between(*_neighbour_orders(listed, position))
        if order is not None:
            return order
        renumbered = [SectionInfo(s.id, s.title, float(i + 1)) for i, s in enumerate(listed)]
        for old, new in zip(listed, renumbered, strict=True):
            if old.order != new.order:
                self._entry(new.id)[ORDER_KEY] = new.order
        order = _order_between(*_neighbour_orders(renumbered, position))
        assert order is not None, "consecutive integers always leave room"
        return order


def _check_title(title: object) -> None:
    # Typed callers cannot get this wrong, but titles often come from JSON, and a non-string
    # title would be written and then hide the section from every replica.
    if not isinstance(title, str):
        raise TypeError(f"section title must be a string, not {type(title).__name__}")


def _insert_position(listed: list[SectionInfo], after: str | None, before: str | None) -> int:
    """Index in `listed` where a section goes, given at most one anchor."""
    if after is not None and before is not None:
        raise ValueError("give at most one of 'after' and 'before'")
    anchor = after if after is not None else before
    if anchor is None:
        return len(listed)
    for index, info in enumerate(listed):
        if info.id == anchor:
            return index + 1 if after is not None else index
    raise SectionNotFoundError(anchor)


def _neighbour_orders(
    listed: list[SectionInfo], position: int
) -> tuple[float | None, float | None]:
    low = listed[position - 1].order if position > 0 else None
    high = listed[position].order if position < len(listed) else None
    return low, high


def _to_py(value: object) -> object:
    # Clients may store shared types (Y.Map, Y.Array, Y.Text...) as meta values, not only
    # JSON; flatten them so callers always get plain Python values.
    if isinstance(value, _SHARED_TYPES):
        return value.to_py()
    return value


def _check_json(value: object, depth: int) -> None:
    """Raise `InvalidMetaValueError` unless `value` is a JSON value that Yjs stores exactly.

    Checked up front because pycrdt panics (a BaseException) on some unsupported values, such
    as integers beyond 64 bits or non-string dict keys, instead of raising a clean error.
    """
    if depth > MAX_META_DEPTH:
        raise InvalidMetaValueError(f"meta value nested deeper than {MAX_META_DEPTH}")
    if value is None or isinstance(value, bool | str):
        return
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise InvalidMetaValueError(f"integer beyond +/-2**53: {value}")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidMetaValueError(f"non-finite number: {value}")
    elif isinstance(value, list | tuple):
        for item in value:
            _check_json(item, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidMetaValueError(f"non-string key in meta value: {key!r}")
            _check_json(item, depth + 1)
    else:
        raise InvalidMetaValueError(f"not a JSON value: {type(value).__name__}")


def new_outline_update(created_at: str) -> bytes:
    """The first update of a new document's outline room: its ``createdAt`` meta, as the
    registry writes it when a document is created on join."""
    doc: Doc[Any] = Doc()
    Outline(doc).set_meta("createdAt", created_at)
    update: bytes = doc.get_update()
    return update
