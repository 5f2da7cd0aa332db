"""The CMS body checks (server/cms/schema.py): types, enums, paths named in errors, keyed
array edits, ISO 8601 dates; property-based for the date parser."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.cms.schema import Refs, jsonable, parse_moment, patch_value
from server.cms.tables import KINDS, PLAN, PROJECT
from server.errors import InvalidError


def _field(error: pytest.ExceptionInfo[InvalidError]) -> str | None:
    return error.value.field


@given(
    st.datetimes(
        min_value=datetime(1900, 1, 1),
        max_value=datetime(2200, 1, 1),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
        ),
    )
)
def test_a_zoned_date_time_round_trips_in_utc(moment: datetime) -> None:
    parsed = parse_moment(moment.isoformat(), "d")
    assert parsed.tzinfo is UTC
    assert parsed == moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    assert parse_moment(jsonable(parsed), "d") == parsed


@given(st.text(max_size=50))
def test_the_date_parser_is_total(text: str) -> None:
    failure: InvalidError | None = None
    try:
        parsed = parse_moment(text, "when")
    except InvalidError as exc:
        failure = exc
    if failure is not None:
        assert failure.field == "when"
    else:
        assert parsed.tzinfo is UTC


def test_dates_without_a_zone_are_refused_and_bare_dates_are_midnight_utc() -> None:
    with pytest.raises(InvalidError) as error:
        parse_moment("2026-01-05T09:00:00", "startDate")
    assert _field(error) == "startDate"
    assert parse_moment("2026-01-05", "d") == datetime(2026, 1, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "objectives": [{"priority": "p0"}]}, "objectives.0.priority"),
        ({"name": "x", "stakeholders": [{"userId": "u"}]}, "stakeholders.0.userId"),
        ({"name": "x", "budget": True}, "budget"),
        ({"name": "x", "budget": float("inf")}, "budget"),
        ({"name": "x", "allocatedResources": "one"}, "allocatedResources"),
        ({"name": "x", "objectives": [{"id": "a"}, {"id": "a"}]}, "objectives"),
        ({"name": "x\0"}, "name"),
        ({}, "name"),
    ],
)
def test_project_bodies_name_the_failing_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidError) as error:
        PROJECT.check(body, "", Refs())
    assert _field(error) == field


def test_references_are_collected_with_their_first_path() -> None:
    refs = Refs()
    user = "6f1c0b1e-1b2c-4d5e-8f90-123456789abc"
    PROJECT.check(
        {
            "name": "x",
            "owner": user,
            "stakeholders": [{"userId": user}],
            "linkedDocuments": ["d", "d"],
        },
        "",
        refs,
    )
    assert refs.users == {user: "owner"}
    assert refs.records == {"business_documents": {"d": "linkedDocuments.0"}}


def test_keyed_arrays_are_edited_by_key_nested_too() -> None:
    stored = [
        {"id": "k1", "title": "A", "keyResults": [{"id": "r1", "target": 10, "actual": 1}]},
        {"id": "k2", "title": "B"},
    ]
    edit = {
        "upsert": [
            {"id": "k1", "keyResults": {"upsert": [{"id": "r1", "actual": 5}, {"target": 3}]}},
            {"title": "C"},
        ],
        "remove": ["k2"],
    }
    changed = patch_value(PLAN.fields["keyObjectives"], stored, edit, "keyObjectives", Refs())
    assert [o.get("title") for o in changed] == ["A", "C"]
    results = changed[0]["keyResults"]
    assert results[0] == {"id": "r1", "target": 10, "actual": 5}
    assert results[1]["target"] == 3
    assert results[1]["id"]
    first: Any = stored[0]
    assert first["keyResults"][0]["actual"] == 1  # the stored value is not changed
    with pytest.raises(InvalidError) as error:
        patch_value(
            PLAN.fields["keyObjectives"],
            stored,
            {"upsert": [{"id": "k1", "keyResults": {"upsert": [{"id": "r1", "status": "late"}]}}]},
            "keyObjectives",
            Refs(),
        )
    assert _field(error) == "keyObjectives.upsert.0.keyResults.upsert.0.status"
    with pytest.raises(InvalidError) as error:
        patch_value(PLAN.fields["keyObjectives"], stored, {"insert": []}, "keyObjectives", Refs())
    assert _field(error) == "keyObjectives.insert"


def test_every_kind_filters_and_sorts_on_what_its_store_serves() -> None:
    from persistence.content.ports import collection_spec

    for kind in KINDS.values():
        spec = collection_spec(kind.collection)
        assert set(kind.filters.values()) <= spec.filter_fields, kind.collection
        assert kind.sorts <= spec.sort_fields, kind.collection
        assert set(kind.ranges) <= spec.range_fields, kind.collection
        assert kind.default_sort in kind.sorts
        assert set(kind.shape.fields) >= set(kind.filters.values()), kind.collection
