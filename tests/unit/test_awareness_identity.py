"""The awareness rules of :mod:`server.realtime.awareness`: the verified identity written into each
state, and the bounded memory of which user owns which client id."""

from __future__ import annotations

import json

import pytest

from protocol.errors import MessageTooLarge
from protocol.jsontext import JsonTooDeep, MalformedJson
from server.identity.authentication import Principal
from server.realtime.awareness import (
    MAX_STATE_BYTES,
    AwarenessRefused,
    ClientIdOwners,
    identity_of_state,
    stamp_state,
)

EVE = Principal("u-eve", "eve@example.com", "Eve", "analyst", "s1")
VERIFIED = {"userId": "u-eve", "name": "Eve"}


@pytest.mark.parametrize(
    "state",
    [
        "{}",
        " { } ",
        '{"user":{"name":"Eve","color":"#30bced"}}',
        '{"cursor":{"anchor":1,"head":2}}\n',
        '{"collab":{"userId":"u-olivia","name":"Olivia"},"x":1}',
        '{"collab":1,"collab":2}',
        '{"user":{"name":"Impostor"},"s":"}"}',
    ],
)
def test_every_state_carries_the_verified_identity(state: str) -> None:
    stamped = stamp_state(state, EVE)
    assert json.loads(stamped) == {**json.loads(state), "collab": VERIFIED}
    assert identity_of_state(stamped) == "u-eve"
    assert stamped.count('"collab"') == 1


def test_without_a_principal_the_field_is_null() -> None:
    assert json.loads(stamp_state('{"collab":{"userId":"x"}}', None)) == {"collab": None}


def test_a_removal_stays_a_removal() -> None:
    assert stamp_state("null", EVE) == "null"


@pytest.mark.parametrize("state", ["42", "[1]", '"x"', '{"user":{"email":"olivia@example.com"}}'])
def test_refused_states(state: str) -> None:
    with pytest.raises(AwarenessRefused):
        stamp_state(state, EVE)


def test_malformed_states() -> None:
    with pytest.raises(JsonTooDeep):
        stamp_state('{"cursor":' + "[" * 5000 + "]" * 5000 + "}", EVE)
    with pytest.raises(MalformedJson):
        stamp_state('{"cursor":', EVE)
    with pytest.raises(MessageTooLarge):
        stamp_state('{"x":"' + "a" * MAX_STATE_BYTES + '"}', EVE)


def test_identity_of_a_state_without_one() -> None:
    assert identity_of_state('{"cursor":1}') is None
    assert identity_of_state('{"collab":' + "[" * 5000) is None


def test_owners_are_remembered_and_bounded() -> None:
    owners = ClientIdOwners(max_ids=4, max_per_user=2)
    owners.claim(1, "alice")
    owners.claim(2, "bob")
    owners.claim(3, "bob")
    owners.claim(4, "bob")  # bob's oldest (2) goes, not alice's
    assert (owners.owner(1), owners.owner(2), owners.owner(3), owners.owner(4)) == (
        "alice",
        None,
        "bob",
        "bob",
    )
    owners.claim(1, "alice")  # refreshed: the least recently used is now 3
    owners.claim(5, "carol")
    owners.claim(6, "dave")
    assert len(owners) == 4
    assert owners.owner(1) == "alice"
    assert owners.owner(3) is None
