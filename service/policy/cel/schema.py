"""One view of the request schema, read from the msgspec Structs once, for every reader.

The static checks (a field's existence), the type checker (its type), the cost estimator (its
size), webhook mappings (what is required) and the C++ engine (what to convert) all read
`REQUEST`, so that none of them walks msgspec's type information on its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import msgspec

from service.policy.cel.references import Reference
from service.policy.cel.syntax import Expression
from service.policy.cel.values import type_name
from service.policy.errors import did_you_mean
from service.policy.request import ConnectionRequest

__all__ = [
    "ANY",
    "REQUEST",
    "REQUEST_SHAPE",
    "Field",
    "Kind",
    "Message",
    "RequestFields",
    "Shape",
    "check_path",
    "message_of",
    "request_fields",
    "shape_of_value",
]

Kind = Literal["string", "int", "double", "bool", "timestamp", "list", "message", "any"]


@dataclass(frozen=True, slots=True)
class Message:
    """A Struct of the schema: its name and its fields, in order."""

    name: str
    fields: Mapping[str, Field]


@dataclass(frozen=True, slots=True)
class Field:
    """One field: its kind (`any` for free-form data), whether a document must have it, and
    its bounds. A list's items have `item` (their kind) and, for messages, `message`."""

    name: str
    kind: Kind
    required: bool = False
    max_length: int | None = None  # a string's characters or a list's items
    item: Kind | None = None
    item_max_length: int | None = None  # a list's strings' characters
    message: Message | None = None


_SCALARS: dict[type, Kind] = {
    msgspec.inspect.StrType: "string",
    msgspec.inspect.LiteralType: "string",
    msgspec.inspect.IntType: "int",
    msgspec.inspect.FloatType: "double",
    msgspec.inspect.BoolType: "bool",
    msgspec.inspect.DateTimeType: "timestamp",
}


def _unwrap(kind: msgspec.inspect.Type) -> msgspec.inspect.Type:
    """Through constraints and `| None` to the type itself."""
    while True:
        if isinstance(kind, msgspec.inspect.Metadata):
            kind = kind.type
        elif isinstance(kind, msgspec.inspect.UnionType):
            members = [t for t in kind.types if not isinstance(t, msgspec.inspect.NoneType)]
            if len(members) != 1:
                return kind
            kind = members[0]
        else:
            return kind


def _length(kind: msgspec.inspect.Type) -> int | None:
    if isinstance(kind, msgspec.inspect.LiteralType):
        return max(len(str(v)) for v in kind.values)
    return getattr(kind, "max_length", None)


def _kind(kind: msgspec.inspect.Type) -> tuple[Kind, Message | None]:
    if isinstance(kind, msgspec.inspect.StructType):
        return "message", _message(kind)
    return _SCALARS.get(type(kind), "any"), None


def _message(struct: msgspec.inspect.StructType) -> Message:
    fields = {}
    for spec in struct.fields:
        kind = _unwrap(spec.type)
        if isinstance(kind, msgspec.inspect.ListType):
            item = _unwrap(kind.item_type)
            item_kind, message = _kind(item)
            fields[spec.encode_name] = Field(
                spec.encode_name,
                "list",
                spec.required,
                kind.max_length,
                item=item_kind,
                item_max_length=_length(item),
                message=message,
            )
        else:
            found, message = _kind(kind)
            length = kind.max_length if isinstance(kind, msgspec.inspect.DictType) else None
            fields[spec.encode_name] = Field(
                spec.encode_name, found, spec.required, _length(kind) or length, message=message
            )
    return Message(struct.cls.__name__, fields)


def message_of(struct: type[msgspec.Struct]) -> Message:
    info = msgspec.inspect.type_info(struct)
    assert isinstance(info, msgspec.inspect.StructType)
    return _message(info)


REQUEST = message_of(ConnectionRequest)


# --- paths: what a dotted name may select ----------------------------------------------------

Shape = Mapping[str, "Shape"] | str  # a mapping of fields, a leaf type name, or ANY
ANY = "any"


def _shape(message: Message) -> Shape:
    return {
        name: _shape(f.message) if f.kind == "message" and f.message else f.kind
        for name, f in message.fields.items()
    }


REQUEST_SHAPE = _shape(REQUEST)


def shape_of_value(value: object) -> Shape:
    if isinstance(value, dict):
        return {str(k): shape_of_value(v) for k, v in value.items()}
    return type_name(value)


def check_path(path: tuple[str, ...], shape: Shape) -> tuple[int, str] | None:
    """(index of the bad segment, message) or None when the path exists."""
    for index, segment in enumerate(path[1:], start=1):
        if shape == ANY:
            return None
        dotted = ".".join(path[:index])
        if isinstance(shape, str):
            return index, f"`{dotted}` is a {shape} and has no field `{segment}`"
        if segment not in shape:
            return index, f"unknown field `{dotted}.{segment}`{did_you_mean(segment, shape)}"
        shape = shape[segment]
    return None


# What a policy reads of the request: per top-level field, the sub-fields it reads, or None for
# all of it.
RequestFields = Mapping[str, tuple[str, ...] | None]


def request_fields(expressions: Iterable[Expression]) -> RequestFields | None:
    """What these expressions read of the request: per top-level field, the sub-fields read
    (sorted), or None for all of it; None overall when `request` is used whole (or in a way
    this does not follow, such as an index). An engine may leave every other field out of the
    data it builds for an evaluation: nothing can read it."""
    read: dict[str, set[str] | None] = {}
    for expression in expressions:
        for found in expression.references:
            if not isinstance(found, Reference) or found.path[0] != "request":
                continue
            path = found.path
            if len(path) == 1 or path[1] not in REQUEST.fields:
                return None
            spec, names = REQUEST.fields[path[1]], read.setdefault(path[1], set())
            message = spec.message if spec.kind == "message" else None
            if len(path) > 2 and message is not None and path[2] in message.fields:
                if names is not None:
                    names.add(path[2])
            else:  # a field read as a whole: `has(request.message)`, `request.attributes.x`
                read[path[1]] = None
    return {key: None if names is None else tuple(sorted(names)) for key, names in read.items()}
