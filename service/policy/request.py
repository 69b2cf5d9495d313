"""The connection request: what a policy's CEL sees as `request`.

These Structs are the schema of the core's input and, unchanged, the HTTP contract. Every string
and list is bounded so that one request has a bounded cost to decode and evaluate. A field that
is `None` was not sent: the CEL view omits it, so `has(request.requester.headline)` is false.
"""

from __future__ import annotations

import re
import typing
from datetime import date, datetime
from typing import Annotated, Any, Literal, TypeVar

import msgspec

__all__ = [
    "KNOWN_VIA",
    "ConnectionRequest",
    "InputError",
    "Person",
    "Relationship",
    "convert",
    "decode_json",
    "decode_request",
]


class Base(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Immutable, keyword-only, and strict about unknown fields (a typo is an error)."""


Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128, description="An opaque identifier")]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Text = Annotated[str, msgspec.Meta(max_length=200)]
Platform = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[a-z0-9][a-z0-9_.-]{0,39}$",
        description="A network's short name, lowercase",
        examples=["linkedin", "xing"],
    ),
]
Timestamp = Annotated[
    datetime,
    msgspec.Meta(
        tz=True,
        description=(
            "RFC 3339 date-time with a time zone, after 0001-01-01 and before 9999-12-31 "
            "(so that it stays within CEL's range in UTC)"
        ),
        extra_json_schema={"pattern": r"^(?!0001-01-01|9999-12-31)"},
    ),
]
Count = Annotated[int, msgspec.Meta(ge=0, le=10_000_000)]
Note = Annotated[
    str,
    msgspec.Meta(
        max_length=2000,
        description='The personal note; "" when the default invitation text was sent',
    ),
]

KnownVia = Literal[
    "friend",
    "family",
    "colleague",
    "classmate",
    "client",
    "recruiter",
    "event",
    "online",
    "unknown",
]
KNOWN_VIA: tuple[str, ...] = typing.get_args(KnownVia)

T = TypeVar("T")

# Free-form attributes are bounded here because msgspec cannot constrain `Any` values.
ATTRIBUTES_MAX_DEPTH = 32


def check_timestamps(*values: datetime | None) -> None:
    """Enforce the Timestamp pattern: the first and last day could leave CEL's range in UTC."""
    for value in values:
        if value is not None and value.date() in _EDGE_DAYS:
            raise ValueError("timestamps must be after 0001-01-01 and before 9999-12-31")


_EDGE_DAYS = (date.min, date.max)


class Person(Base, frozen=True, kw_only=True):
    id: Id | None = None
    name: Name
    headline: Annotated[str, msgspec.Meta(max_length=300)] | None = None
    industry: Text | None = None
    function: Text | None = None
    region: Text | None = None
    company: Text | None = None
    has_photo: bool
    connection_count: Count | None = None
    connection_limit: Count | None = None
    last_active_at: Timestamp | None = None

    def __post_init__(self) -> None:
        check_timestamps(self.last_active_at)


class Relationship(Base, frozen=True, kw_only=True):
    met_in_person: bool = False
    worked_together: bool = False
    shared_employers: Annotated[list[Text], msgspec.Meta(max_length=50)] = []
    mutual_connections: Count = 0
    last_interaction_at: Timestamp | None = None
    known_via: KnownVia | None = None
    connected_elsewhere: Annotated[list[Platform], msgspec.Meta(max_length=20)] = []

    def __post_init__(self) -> None:
        check_timestamps(self.last_interaction_at)


class ConnectionRequest(Base, frozen=True, kw_only=True):
    id: Id | None = None
    platform: Platform = "linkedin"
    received_at: Timestamp | None = None
    message: Note = ""
    requester: Person
    recipient: Person
    relationship: Relationship = msgspec.field(default_factory=Relationship)
    attributes: Annotated[
        dict[Annotated[str, msgspec.Meta(min_length=1, max_length=64)], Any],
        msgspec.Meta(
            max_length=50,
            description=(
                "Free-form team data, read as `request.attributes.<key>`; JSON values, at most "
                f"{ATTRIBUTES_MAX_DEPTH} levels deep; numbers beyond 64-bit integers are doubles"
            ),
        ),
    ] = {}

    def __post_init__(self) -> None:
        check_timestamps(self.received_at)
        _check_attributes(self.attributes)


def _check_attributes(value: Any) -> None:
    """Bound the nesting of the free-form part (the body size limit bounds the rest)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > ATTRIBUTES_MAX_DEPTH:
            raise ValueError(f"`attributes` is nested deeper than {ATTRIBUTES_MAX_DEPTH} levels")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


class InputError(ValueError):
    """Request bytes that are not valid UTF-8 JSON, or that break the schema."""

    def __init__(self, message: str, *, path: str | None = None, at: tuple[int, int] | None = None):
        self.message, self.path, self.at = message, path, at
        where = f"{at[0]}:{at[1]}: " if at else ""
        super().__init__(f"{where}{path + ': ' if path else ''}{message}")


def decode_request(raw: bytes) -> ConnectionRequest:
    """JSON bytes -> request; raises `InputError` with a line:column or a JSON path."""
    return decode_json(raw, ConnectionRequest)


def decode_json(raw: bytes, kind: type[T]) -> T:
    """Strictly decode JSON bytes into `kind` (no `0` for `false`, no `"1"` for `1`).

    Raises `InputError` with a line:column (malformed JSON, bad UTF-8) or a JSON path.
    """
    try:
        raw.decode("utf-8")  # msgspec lets a UnicodeDecodeError escape from inside strings
    except UnicodeDecodeError as exc:
        raise InputError("invalid UTF-8", at=_line_column(raw, exc.start)) from None
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        if not _FLOAT_FOR_INT.match(str(exc)):
            raise _input_error(exc) from None
    except msgspec.DecodeError as exc:
        message, _, offset = str(exc).partition(" (byte ")
        message = message.removeprefix("JSON is malformed: ")
        at = len(raw) if "truncated" in message else int(offset.rstrip(")") or 0)
        raise InputError(f"invalid JSON: {_lower(message)}", at=_line_column(raw, at)) from None

    return convert(msgspec.json.decode(raw), kind)  # the slow path, for `12.0` in an int field


def convert(data: Any, kind: type[T]) -> T:
    """Strictly convert decoded JSON into `kind`, with JSON Schema's view of integers.

    JSON Schema counts `12.0` as an integer, msgspec does not; integral floats in int fields
    (never in free-form `attributes`) become ints first. Raises `InputError` with a JSON path.
    """
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError as exc:
        if not _FLOAT_FOR_INT.match(str(exc)):
            raise _input_error(exc) from None
    try:
        return msgspec.convert(_integral(data, msgspec.inspect.type_info(kind)), kind)
    except msgspec.ValidationError as exc:
        raise _input_error(exc) from None


_FLOAT_FOR_INT = re.compile(r"Expected `int( \| null)?`, got `float`")


def _integral(value: Any, kind: msgspec.inspect.Type) -> Any:
    """`value` with integral floats turned into ints wherever `kind` expects an int."""
    if isinstance(kind, msgspec.inspect.Metadata):
        return _integral(value, kind.type)
    if isinstance(kind, msgspec.inspect.IntType):
        return int(value) if isinstance(value, float) and value.is_integer() else value
    if isinstance(kind, msgspec.inspect.UnionType):
        for member in kind.types:
            value = _integral(value, member)
        return value
    if isinstance(kind, msgspec.inspect.StructType) and isinstance(value, dict):
        fields = {f.encode_name: f.type for f in kind.fields}
        return {k: _integral(v, fields[k]) if k in fields else v for k, v in value.items()}
    if isinstance(kind, msgspec.inspect.ListType) and isinstance(value, list):
        return [_integral(item, kind.item_type) for item in value]
    return value


def _input_error(exc: msgspec.ValidationError) -> InputError:
    message, _, path = str(exc).partition(" - at `")
    return InputError(_lower(message), path=path.rstrip("`") or None)


def _line_column(raw: bytes, offset: int) -> tuple[int, int]:
    line = raw.count(b"\n", 0, offset) + 1
    return line, offset - (raw.rfind(b"\n", 0, offset) + 1) + 1


def _lower(message: str) -> str:
    return message[:1].lower() + message[1:]
