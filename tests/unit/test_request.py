"""The request schema: limits, decoding errors, and the compiler's representative requests."""

from __future__ import annotations

import msgspec
import pytest

from service.policy.probe import MINIMAL, REPRESENTATIVE
from service.policy.request import ConnectionRequest, InputError, decode_request

PEOPLE = (
    b'"requester": {"name": "A", "has_photo": true}, "recipient": {"name": "B", "has_photo": true}'
)


def _fields(struct: msgspec.Struct) -> dict[str, object]:
    return {f: getattr(struct, f) for f in struct.__struct_fields__}


def test_representative_request_sets_every_field() -> None:
    """The compiler's type checks only see fields that the representative request sets."""
    stack: list[msgspec.Struct] = [REPRESENTATIVE]
    while stack:
        struct = stack.pop()
        for name, value in _fields(struct).items():
            if name == "attributes":
                continue
            assert value not in (None, []), f"{type(struct).__name__}.{name} is not set"
            if isinstance(value, msgspec.Struct):
                stack.append(value)


def test_minimal_request_sets_no_optional_field() -> None:
    for person in (MINIMAL.requester, MINIMAL.recipient):
        assert {k for k, v in _fields(person).items() if v is not None} == {"name", "has_photo"}


def test_defaults_make_a_small_request_complete() -> None:
    request = decode_request(b"{" + PEOPLE + b"}")
    assert request.platform == "linkedin"
    assert request.message == ""
    assert request.relationship.mutual_connections == 0
    assert request.relationship.shared_employers == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (b'"attributes": {"a": ' + b"[" * 40 + b"]" * 40 + b"}", "nested deeper than 32 levels"),
        (b'"message": "' + b"x" * 2001 + b'"', "length <= 2000"),
        (b'"platform": "Linked In"', "expected `str` matching regex"),
        (b'"received_at": "2026-01-01T00:00:00"', "with a timezone component"),
        (b'"relationship": {"known_via": "neighbour"}', "invalid enum value 'neighbour'"),
        (b'"surprise": 1', "object contains unknown field `surprise`"),
    ],
)
def test_limits_are_enforced(extra: bytes, message: str) -> None:
    with pytest.raises(InputError) as caught:
        decode_request(b"{" + PEOPLE + b", " + extra + b"}")
    assert message in str(caught.value)


def test_the_request_struct_is_the_json_schema() -> None:
    schema = msgspec.json.schema(ConnectionRequest)
    person = schema["$defs"]["Person"]
    assert set(person["required"]) == {"name", "has_photo"}
    assert person["properties"]["name"] == {
        "type": "string",
        "minLength": 1,
        "maxLength": 200,
        "pattern": "^[^\\u0000]*$",  # checked in __post_init__, said in the schema
    }
