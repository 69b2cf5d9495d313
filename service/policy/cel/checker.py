"""Static type checking with Google's CEL checker (cel-expr-python), whatever engine serves.

The request's type is generated from the schema view (schema.py) as protobuf messages:
strings, int64s, doubles, bools, `google.protobuf.Timestamp`s, repeated fields, nested
messages, and `attributes` as a `google.protobuf.Struct` (a map of dyn). So
`request.relationship.mutual_connections > "10"` fails at load time with its position.
`params` and `variables` are dyn: what flows through them is checked only at run time
(and by the probe on representative requests). See docs/policy-language.md.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from cel_expr_python import cel
from cel_expr_python.ext import ext_strings
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    struct_pb2,
    timestamp_pb2,
)

from service.policy.cel.memo import per_load
from service.policy.cel.schema import REQUEST, Kind, Message
from service.policy.cel.syntax import CelSyntaxError
from service.policy.errors import with_article

__all__ = [
    "NESTS_TOO_DEEPLY",
    "TYPE_LABELS",
    "TypeCheckError",
    "compile_error",
    "operator_symbol",
    "type_check",
]

_PACKAGE = "handshake.v1"
_F = descriptor_pb2.FieldDescriptorProto
_SCALARS: dict[Kind, int] = {
    "string": _F.TYPE_STRING,
    "int": _F.TYPE_INT64,
    "double": _F.TYPE_DOUBLE,
    "bool": _F.TYPE_BOOL,
}
_MESSAGES: dict[Kind, str] = {
    "timestamp": ".google.protobuf.Timestamp",
    "any": ".google.protobuf.Struct",  # free-form data (attributes): a map of dyn
}


class TypeCheckError(Exception):
    """A type error; line and column are 1-based within the expression."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(message)
        self.message, self.line, self.column = message, line, column


def _messages(message: Message, file: descriptor_pb2.FileDescriptorProto, done: set[str]) -> str:
    """Add a protobuf message for `message` (and those it contains); return its full name."""
    full = f".{_PACKAGE}.{message.name}"
    if message.name in done:
        return full
    done.add(message.name)
    proto = file.message_type.add(name=message.name)
    for number, field in enumerate(message.fields.values(), start=1):
        kind = field.kind
        added = proto.field.add(name=field.name, number=number, label=_F.LABEL_OPTIONAL)
        if kind == "list":
            added.label, kind = _F.LABEL_REPEATED, field.item or "any"
        if kind == "message" and field.message is not None:
            added.type, added.type_name = _F.TYPE_MESSAGE, _messages(field.message, file, done)
        elif kind in _SCALARS:
            added.type = _SCALARS[kind]
        else:
            added.type, added.type_name = _F.TYPE_MESSAGE, _MESSAGES.get(kind, _MESSAGES["any"])
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
    request = _messages(REQUEST, file, set())
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
    problem, result = _checked(text)
    if problem is not None:
        raise TypeCheckError(*problem)  # a new one: a raised exception keeps its traceback
    if condition and result not in ("bool", "dyn"):
        raise TypeCheckError(f"a condition must be a bool, not {with_article(result)}", 1, 1)


@per_load
def _checked(text: str) -> tuple[tuple[str, int, int] | None, str]:
    """The checker's verdict on `text`: its type error (message, line, column), or none and
    its result type."""
    try:
        expression = _environment().compile(text)
    except RuntimeError as exc:
        problem = compile_error(exc)
        message = problem.message
        if message != NESTS_TOO_DEEPLY:  # a limit of the parser, not a type error
            message = f"type error: {_readable(message)}"
        return (message, problem.line, problem.column), ""
    result = expression.return_type()
    if result == cel.Type.BOOL:
        return None, "bool"
    if result == cel.Type.DYN:
        return None, "dyn"
    name = str(result.name())
    return None, TYPE_LABELS.get(name, name).lower()


# The runtime's and checker's type names -> CEL's.
TYPE_LABELS = {
    "int64": "int",
    "uint64": "uint",
    "google.protobuf.Timestamp": "timestamp",
    "google.protobuf.Duration": "duration",
    "null_type": "null",
}


def operator_symbol(function: str) -> str:
    """A CEL function id as written in an expression: `_>_` -> `>`, `!_` -> `!`, `@in` -> `in`."""
    if function == "@in":
        return "in"
    if function.startswith("_") or function.endswith("_"):
        return function.strip("_").replace("_", "") or function
    return function


# `<input>:LINE:COLUMN: message`. Where Google's parser knows no position (past its nesting
# limit) it writes -1 (the checker's environment) or -1 read as an unsigned int, 4294967295 (the
# runtime's), with column 0 or -1: a line 4294967299 once `check` added the expression's own.
_POSITION = re.compile(r"<input>:(-?\d+):(-?\d+): (.*?)(?:\n|$)")
_STATUS = re.compile(r"^[A-Z_]+: ")
_NESTING = ("max recursion depth", "recursion limit")
NESTS_TOO_DEEPLY = (
    "expression nests too deeply for Google's CEL (more than 32 levels, counting each operand "
    "of a chain like `a + b + c`): split it into variables"
)


def compile_error(exc: RuntimeError) -> CelSyntaxError:
    """The first problem of a Google CEL compile error, with its position in the expression
    (its start when the parser gave none)."""
    if match := _POSITION.search(str(exc)):
        line, column, message = int(match.group(1)), int(match.group(2)), match.group(3)
        if not 0 < line < 2**31:  # no position known
            line = column = 1
        column = column if 0 < column < 2**31 else 1
        if any(words in message for words in _NESTING):
            message = NESTS_TOO_DEEPLY
        return CelSyntaxError(message, line, column)
    return CelSyntaxError(_STATUS.sub("", str(exc)).split("\n")[0])
