"""Static type checking with cel-expr-python's checker, whatever engine serves requests.

The request's type is generated from the msgspec Structs (service/policy/request.py) as
protobuf messages: strings, int64s, doubles, bools, `google.protobuf.Timestamp`s, repeated
fields, nested messages, and `attributes` as a `google.protobuf.Struct` (a map of dyn). So
`request.relationship.mutual_connections > "10"` fails at load time with its position.
`params` and `variables` are dyn: what flows through them is checked only at run time
(and by the probe on representative requests). See docs/policy-language.md.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import msgspec
from cel_expr_python import cel
from cel_expr_python.ext import ext_strings
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    struct_pb2,
    timestamp_pb2,
)

from service.policy.engines.celexpr import TYPE_LABELS, compile_error, operator_symbol
from service.policy.errors import with_article
from service.policy.request import ConnectionRequest

__all__ = ["TypeCheckError", "type_check"]

_PACKAGE = "handshake.v1"
_F = descriptor_pb2.FieldDescriptorProto
_SCALARS: dict[type, int] = {
    msgspec.inspect.StrType: _F.TYPE_STRING,
    msgspec.inspect.LiteralType: _F.TYPE_STRING,
    msgspec.inspect.IntType: _F.TYPE_INT64,
    msgspec.inspect.FloatType: _F.TYPE_DOUBLE,
    msgspec.inspect.BoolType: _F.TYPE_BOOL,
}


class TypeCheckError(Exception):
    """A type error; line and column are 1-based within the expression."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(message)
        self.message, self.line, self.column = message, line, column


def _unwrap(kind: Any) -> Any:
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


def _messages(struct: Any, file: descriptor_pb2.FileDescriptorProto, done: set[str]) -> str:
    """Add a message for `struct` (and those it contains); return its full name."""
    name = struct.cls.__name__
    full = f".{_PACKAGE}.{name}"
    if name in done:
        return full
    done.add(name)
    message = file.message_type.add(name=name)
    for number, field in enumerate(struct.fields, start=1):
        kind = _unwrap(field.type)
        proto = message.field.add(name=field.encode_name, number=number, label=_F.LABEL_OPTIONAL)
        if isinstance(kind, msgspec.inspect.ListType):
            proto.label = _F.LABEL_REPEATED
            kind = _unwrap(kind.item_type)
        if isinstance(kind, msgspec.inspect.StructType):
            proto.type, proto.type_name = _F.TYPE_MESSAGE, _messages(kind, file, done)
        elif isinstance(kind, msgspec.inspect.DateTimeType):
            proto.type, proto.type_name = _F.TYPE_MESSAGE, ".google.protobuf.Timestamp"
        elif type(kind) in _SCALARS:
            proto.type = _SCALARS[type(kind)]
        else:  # free-form data (attributes): a map of dyn
            proto.type, proto.type_name = _F.TYPE_MESSAGE, ".google.protobuf.Struct"
    return full


@functools.cache
def _environment() -> Any:
    pool = descriptor_pool.DescriptorPool()
    for module in (timestamp_pb2, duration_pb2, struct_pb2):
        known = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(known)
        pool.Add(known)
    file = descriptor_pb2.FileDescriptorProto(
        name="handshake/v1/request.proto",
        package=_PACKAGE,
        syntax="proto2",  # every field has presence, as `has()` expects
        dependency=["google/protobuf/timestamp.proto", "google/protobuf/struct.proto"],
    )
    request = _messages(msgspec.inspect.type_info(ConnectionRequest), file, set())
    pool.Add(file)
    return cel.NewEnv(
        pool,
        variables={
            "request": cel.Type(request.lstrip(".")),
            "now": cel.Type.TIMESTAMP,
            "params": cel.Type.Map(cel.Type.STRING, cel.Type.DYN),
            "variables": cel.Type.Map(cel.Type.STRING, cel.Type.DYN),
        },
        extensions=[ext_strings.ExtStrings()],
    )


_OPERATOR = re.compile(r"'(_?[^' ]+?_?)'")


def _readable(message: str) -> str:
    """`found no matching overload for '_>_' applied to '(int, string)'` -> with `>`."""
    message = message.removeprefix("found ").replace("applied to '(", "on (").replace(")'", ")")
    return _OPERATOR.sub(lambda m: f"`{operator_symbol(m.group(1))}`", message)


def type_check(text: str, *, condition: bool = False) -> None:
    """Raise `TypeCheckError` when the checker proves `text` wrong (or, for a condition, when
    it proves the result is not a bool)."""
    try:
        expression = _environment().compile(text)
    except RuntimeError as exc:
        problem = compile_error(exc)
        raise TypeCheckError(
            f"type error: {_readable(problem.message)}", problem.line, problem.column
        ) from None
    if condition:
        result = expression.return_type()
        if result != cel.Type.BOOL and result != cel.Type.DYN:
            name = str(result.name())
            kind = TYPE_LABELS.get(name, name).lower()
            raise TypeCheckError(f"a condition must be a bool, not {with_article(kind)}", 1, 1)
