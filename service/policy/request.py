"""The connection request: what a policy's CEL sees as `request`.

These Structs are the schema of the core's input and, unchanged, the HTTP contract. Every string
and list is bounded so that one request has a bounded cost to decode and evaluate. A field that
is `None` was not sent: the CEL view omits it, so `has(request.requester.headline)` is false.
No string holds U+0000: Google's CEL would cut it there, and a decision must not depend on the
engine (docs/adr/0012-hostile-input.md).
"""

from __future__ import annotations

import contextlib
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
    "Previous",
    "Relationship",
    "check_depth",
    "convert",
    "decode_json",
    "decode_request",
]


class Base(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Immutable, keyword-only, and strict about unknown fields (a typo is an error)."""


# For the contract only: __post_init__ refuses U+0000 (cheaper than a regex per string).
_NO_NUL = {"pattern": "^[^\\u0000]*$"}
Id = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=128,
        description="An opaque identifier",
        extra_json_schema=_NO_NUL,
    ),
]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200, extra_json_schema=_NO_NUL)]
Text = Annotated[str, msgspec.Meta(max_length=200, extra_json_schema=_NO_NUL)]
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
        extra_json_schema=_NO_NUL,
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
# Any JSON document read (bodies, batch items, webhook payloads, `eval --input`) is refused
# past this nesting before it is decoded: msgspec's decoder recurses.
JSON_MAX_DEPTH = 64


NUL_MESSAGE = "U+0000 is not allowed in strings"


def check_text(struct: msgspec.Struct, *names: str) -> None:
    """Refuse U+0000 in these string fields (each a string, a list of them, or None)."""
    for name in names:
        value = getattr(struct, name)
        if value and ("\x00" in value if type(value) is str else any("\x00" in v for v in value)):
            raise ValueError(f"`{name}`: {NUL_MESSAGE}")


def check_timestamps(*values: datetime | None) -> None:
    """Enforce the Timestamp pattern: the first and last day could leave CEL's range in UTC."""
    for value in values:
        if value is not None and value.date() in _EDGE_DAYS:
            raise ValueError("timestamps must be after 0001-01-01 and before 9999-12-31")


_EDGE_DAYS = (date.min, date.max)


class Person(Base, frozen=True, kw_only=True):
    id: Id | None = None
    name: Name
    first_name: (
        Annotated[
            str,
            msgspec.Meta(
                min_length=1,
                max_length=200,
                description="The name to greet them by; replies fall back to `name`",
                extra_json_schema=_NO_NUL,
            ),
        ]
        | None
    ) = None
    headline: Annotated[str, msgspec.Meta(max_length=300, extra_json_schema=_NO_NUL)] | None = None
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
        check_text(self, "id", "name", "first_name", "headline", "industry", "function")
        check_text(self, "region", "company")


class Relationship(Base, frozen=True, kw_only=True):
    met_in_person: bool = False
    worked_together: bool = False
    shared_employers: Annotated[list[Text], msgspec.Meta(max_length=50)] = []
    mutual_connections: Count = 0
    last_interaction_at: Timestamp | None = None
    known_via: KnownVia | None = None
    connected_elsewhere: Annotated[list[Platform], msgspec.Meta(max_length=20)] = []
    declined_at: Timestamp | None = None  # an earlier request of theirs was declined then

    def __post_init__(self) -> None:
        check_timestamps(self.last_interaction_at, self.declined_at)
        check_text(self, "shared_employers")


class Previous(Base, frozen=True, kw_only=True):
    """What was decided on this request before: it is being looked at again (pending for
    months, after the call a deferral asked for, after the owner changed their policy)."""

    decision: Literal["accept", "ignore", "decline", "defer"]
    decided_at: Timestamp
    rule: Annotated[str, msgspec.Meta(max_length=200, extra_json_schema=_NO_NUL)] | None = None
    followed_up: bool = False  # the call or reply a deferral asked for took place

    def __post_init__(self) -> None:
        check_timestamps(self.decided_at)
        check_text(self, "rule")


class ConnectionRequest(Base, frozen=True, kw_only=True):
    id: Id | None = None
    platform: Platform = "linkedin"
    received_at: Timestamp | None = None
    message: Note = ""
    requester: Person
    recipient: Person
    relationship: Relationship = msgspec.field(default_factory=Relationship)
    previous: Previous | None = None
    attributes: Annotated[
        dict[
            Annotated[str, msgspec.Meta(min_length=1, max_length=64, extra_json_schema=_NO_NUL)],
            Any,
        ],
        msgspec.Meta(
            max_length=50,
            description=(
                "Free-form team data, read as `request.attributes.<key>`; JSON values, at most "
                f"{ATTRIBUTES_MAX_DEPTH} levels deep, no string or key holding U+0000; numbers "
                "beyond 64-bit integers are doubles"
            ),
        ),
    ] = {}

    def __post_init__(self) -> None:
        check_timestamps(self.received_at)
        check_text(self, "id", "message")
        if self.attributes:
            _check_attributes(self.attributes)


def _check_attributes(value: Any) -> None:
    """Bound the nesting of the free-form part (the body size limit bounds the rest), and
    refuse U+0000 in its keys and strings."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > ATTRIBUTES_MAX_DEPTH:
            raise ValueError(f"`attributes` is nested deeper than {ATTRIBUTES_MAX_DEPTH} levels")
        if isinstance(item, dict):
            if any("\x00" in key for key in item):
                raise ValueError(f"`attributes`: {NUL_MESSAGE} (a key)")
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, str) and "\x00" in item:
            raise ValueError(f"`attributes`: {NUL_MESSAGE}")


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
    check_depth(raw)
    # Typed documents refuse U+0000 in their Structs (a batch item by item); free-form ones
    # (webhook payloads) here, where the bytes say it may be there at all.
    if kind is Any and b"\\u0000" in raw:
        with contextlib.suppress(msgspec.DecodeError):  # malformed: said below, with where
            _check_nul(msgspec.json.decode(raw), "$")
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


def check_depth(raw: bytes) -> None:
    """Raise `InputError` naming the path where JSON bytes nest deeper than JSON_MAX_DEPTH.

    Never recurses. A document with fewer brackets than the limit (almost every one) passes on
    two counts; else its brackets, strings taken out, lose one level of innermost pairs per
    pass, in C; only a document still nested after that is walked token by token for the path
    (malformed JSON may look nested to the passes, and is left to the decoder)."""
    if raw.count(b"[") + raw.count(b"{") <= JSON_MAX_DEPTH:
        return
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    for _ in range(JSON_MAX_DEPTH):
        brackets, pairs = _INNERMOST.subn(b"", brackets)
        if not brackets:
            return
        if not pairs:
            break
    path: list[str | int | None] = []  # per open container: the current key or index
    for token in _JSON_TOKENS.finditer(raw):
        first = raw[token.start()]
        if first == _QUOTE:
            if token.group(1) is not None and path:  # a key
                path[-1] = token.group(1).decode("utf-8", "replace")
        elif first in b"[{":
            if len(path) == JSON_MAX_DEPTH:
                where = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
                raise InputError(f"nested deeper than {JSON_MAX_DEPTH} levels", path=where)
            path.append(0 if first == _BRACKET else None)
        elif first == _COMMA:
            if path and isinstance(path[-1], int):
                path[-1] += 1
        elif path:  # a closer
            path.pop()


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
_INNERMOST = re.compile(rb"\[\]|\{\}")
# A string (group 1: its text when it is an object key), or one structural character.
_JSON_TOKENS = re.compile(rb'"((?:[^"\\]|\\.)*)"(?=\s*:)|"(?:[^"\\]|\\.)*"|[\[\]{},]', re.DOTALL)
_QUOTE, _BRACKET, _COMMA = ord('"'), ord("["), ord(",")


def _check_nul(value: Any, path: str) -> None:
    """Raise `InputError` at the first key or string holding U+0000 (of depth-checked data)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise InputError(NUL_MESSAGE, path=path)
    elif isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                raise InputError(NUL_MESSAGE, path=path)
            _check_nul(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_nul(item, f"{path}[{index}]")


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
    field = _FIELD.match(message)  # a Struct's own check names the field: "`name`: …"
    if field:
        return InputError(field[2], path=f"{path.rstrip('`') or '$'}.{field[1]}")
    return InputError(_lower(message), path=path.rstrip("`") or None)


_FIELD = re.compile(r"`(\w+)`: (.*)", re.DOTALL)


def _line_column(raw: bytes, offset: int) -> tuple[int, int]:
    line = raw.count(b"\n", 0, offset) + 1
    return line, offset - (raw.rfind(b"\n", 0, offset) + 1) + 1


def _lower(message: str) -> str:
    return message[:1].lower() + message[1:]
