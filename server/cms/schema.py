"""The field types of the CMS collections and the checks of request bodies against them.

A collection's fields are a :class:`Shape` (``tables.py`` holds the five of the schema); each
field has a type of this module: :class:`Text`, :class:`Number`, :class:`Integer`,
:class:`Flag`, :class:`Moment` (ISO 8601, stored as an aware UTC datetime), :class:`Choice`
(an enum of the seed), :class:`UserRef` and :class:`RecordRef` (references, checked to
exist by the service), :class:`ListOf` and :class:`Shape` (nested objects; unknown keys
refused). Every refusal is an :class:`~server.errors.InvalidError` naming the field by its
path (``keyObjectives.0.keyResults.1.status``); a check never changes the record.

Arrays of objects with a key (``id``, or ``userId`` for stakeholders) are edited by a PATCH
either replaced (a list) or edited by key (``{"upsert": [...], "remove": [...]}``): an
upserted item with a known key is merged into the stored one (nested keyed arrays edited
the same way), one with a new or no key is added (an ``id`` generated when absent).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from server.errors import InvalidError

MAX_TEXT: Final = 100_000
MAX_NAME: Final = 500
MAX_ITEMS: Final = 1000
MAX_ID: Final = 128
_INT64: Final = 2**63


def _invalid(path: str, message: str) -> InvalidError:
    return InvalidError(message, field=path or "(body)")


@dataclass
class Refs:
    """References met while checking a body: user ids and record ids per collection, each
    with the first field path that named it (for the 422 of an unknown one)."""

    users: dict[str, str] = field(default_factory=dict)
    records: dict[str, dict[str, str]] = field(default_factory=dict)


class FieldType:
    """A field's type: :meth:`check` returns the stored value or raises InvalidError."""

    nullable = True

    def check(self, value: Any, path: str, refs: Refs) -> Any:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class Text(FieldType):
    max_length: int = MAX_TEXT

    def check(self, value: Any, path: str, refs: Refs) -> Any:
        if not isinstance(value, str):
            raise _invalid(path, "must be a string")
        if len(value) > self.max_length or "\0" in value:
            raise _invalid(path, f"must be at most {self.max_length} characters, without NUL")
        return value

    def describe(self) -> str:
        return "string"


@dataclass(frozen=True)
class Number(FieldType):
    low: float | None = None
    high: float | None = None

    def check(self, value: Any, path: str, refs: Refs) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _invalid(path, "must be a number")
        if isinstance(value, float) and not math.isfinite(value):
            raise _invalid(path, "must be finite")
        if isinstance(value, int) and not -_INT64 <= value < _INT64:
            raise _invalid(path, "is out of range")
        if (self.low is not None and value < self.low) or (
            self.high is not None and value > self.high
        ):
            raise _invalid(path, f"must be within {self.low}..{self.high}")
        return value

    def describe(self) -> str:
        return "number"


@dataclass(frozen=True)
class Integer(Number):
    def check(self, value: Any, path: str, refs: Refs) -> Any:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _invalid(path, "must be an integer")
        return super().check(value, path, refs)

    def describe(self) -> str:
        return "integer"


@dataclass(frozen=True)
class Flag(FieldType):
    def check(self, value: Any, path: str, refs: Refs) -> Any:
        if not isinstance(value, bool):
            raise _invalid(path, "must be true or false")
        return value

    def describe(self) -> str:
        return "boolean"


def parse_moment(value: object, path: str) -> datetime:
    """An ISO 8601 date-time with a zone (``Z`` or an offset), or a date (midnight UTC),
    as an aware UTC datetime truncated to milliseconds."""
    if not isinstance(value, str) or not 10 <= len(value) <= 40:
        raise _invalid(path, "must be an ISO 8601 date-time string")
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _invalid(path, "must be an ISO 8601 date-time string") from None
    if len(value) == 10:
        moment = moment.replace(tzinfo=UTC)
    if moment.tzinfo is None:
        raise _invalid(path, "must name its time zone (Z for UTC)")
    moment = moment.astimezone(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


@dataclass(frozen=True)
class Moment(FieldType):
    def check(self, value: Any, path: str, refs: Refs) -> Any:
        return parse_moment(value, path)

    def describe(self) -> str:
        return "date-time"


@dataclass(frozen=True)
class Choice(FieldType):
    values: tuple[str, ...]

    def check(self, value: Any, path: str, refs: Refs) -> Any:
        if not isinstance(value, str) or value not in self.values:
            raise _invalid(path, f"must be one of {list(self.values)}")
        return value

    def describe(self) -> str:
        return " | ".join(self.values)


@dataclass(frozen=True)
class UserRef(FieldType):
    def check(self, value: Any, path: str, refs: Refs) -> Any:
        try:
            user = str(uuid.UUID(value)) if isinstance(value, str) and len(value) <= 64 else None
        except ValueError:
            user = None
        if user is None:
            raise _invalid(path, "must be a user id")
        refs.users.setdefault(user, path)
        return user

    def describe(self) -> str:
        return "user id"


def check_record_id(value: object, path: str) -> str:
    """A business id: 1..128 characters of letters, digits, ``.``, ``_``, ``-``."""
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= MAX_ID
        or not all(c.isascii() and (c.isalnum() or c in "._-") for c in value)
        or value.startswith("__")
    ):
        raise _invalid(path, f"must be 1..{MAX_ID} letters, digits, '.', '_' or '-'")
    return value


@dataclass(frozen=True)
class RecordRef(FieldType):
    collection: str

    def check(self, value: Any, path: str, refs: Refs) -> Any:
        if not isinstance(value, str) or not 0 < len(value) <= 256 or "\0" in value:
            raise _invalid(path, f"must be an id of {self.collection}")
        refs.records.setdefault(self.collection, {}).setdefault(value, path)
        return value

    def describe(self) -> str:
        return f"id of {self.collection}"


@dataclass(frozen=True)
class ListOf(FieldType):
    item: FieldType
    max_items: int = MAX_ITEMS
    unique: bool = False

    def check(self, value: Any, path: str, refs: Refs) -> Any:
        if not isinstance(value, list):
            raise _invalid(path, "must be an array")
        if len(value) > self.max_items:
            raise _invalid(path, f"at most {self.max_items} items")
        items = [self.item.check(v, f"{path}.{n}", refs) for n, v in enumerate(value)]
        if self.unique:
            items = list(dict.fromkeys(items))
        if isinstance(self.item, Shape) and self.item.key is not None:
            keys = [item.get(self.item.key) for item in items]
            repeated = sorted({k for k in keys if k is not None and keys.count(k) > 1})
            if repeated:
                raise _invalid(path, f"repeated {self.item.key} {repeated}")
        return items

    def describe(self) -> str:
        return f"array of {self.item.describe()}"


@dataclass(frozen=True)
class Shape(FieldType):
    """An object with known fields; ``key`` names the field that identifies it in an array
    (an ``id`` key is generated when absent); ``required`` fields must be given."""

    fields: Mapping[str, FieldType]
    key: str | None = None
    required: tuple[str, ...] = ()

    def check(self, value: Any, path: str, refs: Refs) -> Any:
        return self.check_partial(value, path, refs, complete=True)

    def check_partial(self, value: Any, path: str, refs: Refs, *, complete: bool) -> Any:
        if not isinstance(value, dict):
            raise _invalid(path, "must be an object")
        out: dict[str, Any] = {}
        prefix = f"{path}." if path else ""
        for name, item in value.items():
            kind = self.fields.get(name)
            if kind is None:
                raise _invalid(f"{prefix}{name}", "unknown field")
            if item is None:
                if name in self.required or name == self.key:
                    raise _invalid(f"{prefix}{name}", "may not be null")
                out[name] = None
            else:
                out[name] = kind.check(item, f"{prefix}{name}", refs)
        if complete:
            missing = [name for name in self.required if name not in out]
            if missing:
                raise _invalid(f"{prefix}{missing[0]}", "is required")
            if self.key == "id" and out.get("id") is None:
                out["id"] = uuid.uuid4().hex
        return out

    def describe(self) -> str:
        return "object"


# -- PATCH of keyed arrays -----------------------------------------------------------------------


def keyed_item(kind: FieldType) -> Shape | None:
    """The item shape of an array edited by key, else None."""
    if isinstance(kind, ListOf) and isinstance(kind.item, Shape) and kind.item.key is not None:
        return kind.item
    return None


def patch_value(kind: FieldType, stored: Any, value: Any, path: str, refs: Refs) -> Any:
    """The new value of a field given ``value`` in a PATCH: a keyed array accepts an edit
    object ``{"upsert", "remove"}`` besides a whole new list; anything else is replaced."""
    item = keyed_item(kind)
    if item is None or not isinstance(value, dict):
        return None if value is None else kind.check(value, path, refs)
    assert isinstance(kind, ListOf)
    unknown = set(value) - {"upsert", "remove"}
    if unknown:
        raise _invalid(f"{path}.{sorted(unknown)[0]}", "unknown edit (upsert or remove)")
    key = item.key
    assert key is not None
    current = [dict(x) for x in stored if isinstance(x, dict)] if isinstance(stored, list) else []
    removes = value.get("remove", [])
    if not isinstance(removes, list) or not all(isinstance(r, str) for r in removes):
        raise _invalid(f"{path}.remove", f"must be an array of {key} strings")
    current = [x for x in current if x.get(key) not in set(removes)]
    upserts = value.get("upsert", [])
    if not isinstance(upserts, list):
        raise _invalid(f"{path}.upsert", "must be an array")
    for n, given in enumerate(upserts):
        where = f"{path}.upsert.{n}"
        found = next(
            (x for x in current if isinstance(given, dict) and x.get(key) == given.get(key)), None
        )
        if found is None:
            current.append(item.check(given, where, refs))
        else:
            found.update(_merge_item(item, found, given, where, refs))
    if len(current) > kind.max_items:
        raise _invalid(path, f"at most {kind.max_items} items")
    return current


def _merge_item(
    item: Shape, stored: Mapping[str, Any], given: Mapping[str, Any], path: str, refs: Refs
) -> dict[str, Any]:
    nested = {
        name: value
        for name, value in given.items()
        if isinstance(value, dict) and keyed_item(item.fields.get(name, Text())) is not None
    }
    plain = {name: value for name, value in given.items() if name not in nested}
    merged: dict[str, Any] = item.check_partial(plain, path, refs, complete=False)
    for name, value in nested.items():
        merged[name] = patch_value(
            item.fields[name], stored.get(name), value, f"{path}.{name}", refs
        )
    return merged


def jsonable(value: Any) -> Any:
    """A stored value as JSON: datetimes as ISO 8601 UTC with milliseconds and ``Z``."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, Mapping):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    return value
