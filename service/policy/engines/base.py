"""The engine seam: what the core needs from a CEL implementation, and what both share.

An expression is parsed once by the shared front end (cel-python's parser: the compiler's
static checks walk its tree), then compiled by an engine into a `Program`. Per evaluation the
engine converts the request once into a `Scope`; `Scope.run(program)` returns a plain Python
value (bool, int, float, str, bytes, datetime, timedelta, list, dict or None) or raises
`EvalError`. Nothing outside service/policy/engines/ sees an engine's own value types.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import lark

from service.policy.request import ConnectionRequest

__all__ = [
    "ITERATION_BUDGET",
    "CelSyntaxError",
    "Engine",
    "EvalError",
    "Expression",
    "Program",
    "RequestFields",
    "Scope",
    "json_number",
    "to_json",
    "type_name",
]

# Comprehension iterations per evaluation of one expression. cel-expr-python's runtime stops at
# this number (it is not configurable from Python); the cel-python engine enforces the same, so
# a runaway expression fails the same way under both (docs/policy-language.md, "Limits").
ITERATION_BUDGET = 10_000

MACROS = frozenset({"has", "all", "exists", "exists_one", "map", "filter"})


class CelSyntaxError(Exception):
    """An expression does not compile; line and column are 1-based within the expression."""

    def __init__(self, message: str, line: int = 1, column: int = 1) -> None:
        super().__init__(message)
        self.message, self.line, self.column = message, line, column


class EvalError(Exception):
    """An expression failed to evaluate; the message is fit for a policy owner.

    `kind` is `type` (no overload for these types), `missing` (no such field or key),
    `budget` (more than ITERATION_BUDGET comprehension iterations) or `other`.
    """

    def __init__(self, message: str, kind: str = "other") -> None:
        super().__init__(message)
        self.kind = kind


BUDGET_MESSAGE = (
    f"evaluation budget exceeded: more than {ITERATION_BUDGET:,} comprehension iterations"
)


@dataclass(frozen=True, slots=True)
class Expression:
    """One expression as the front end sees it, whatever engine runs it."""

    text: str
    tree: lark.Tree[lark.Token]
    variables: frozenset[str]  # the `variables.<name>` it reads directly


class Program(Protocol):
    """An expression compiled by one engine."""

    @property
    def expression(self) -> Expression: ...


class Scope(Protocol):
    """One evaluation's names (request, now, params, variables), converted once."""

    def run(self, program: Any) -> Any:
        """The program's value as plain Python data; raises `EvalError`."""
        ...

    def variables(self) -> dict[str, Any]:
        """The variables computed so far: a value, or the `EvalError` it failed with."""
        ...

    def first_match(self, program: Any) -> int:
        """Run an engine's rules program (see `Engine.rules_program`); raises `EvalError`."""
        ...


# What a policy reads of the request: per top-level field, the sub-fields it reads, or None for
# all of it (service/policy/references.py, `request_fields`).
RequestFields = Mapping[str, tuple[str, ...] | None]


class Engine(Protocol):
    name: str

    def compile(self, expression: Expression) -> Program:
        """Raises `CelSyntaxError` when this engine cannot run the expression."""
        ...

    def rules_program(
        self,
        variables: Mapping[str, Any],
        conditions: Sequence[Any],
        placeholders: Sequence[Sequence[Any]],
    ) -> Any:
        """Optionally, all conditions as one program giving the index of the first match
        (-1: none), computing that outcome's `placeholders` (one list per condition, then the
        default's) for `Scope.run` to answer from, and raising on any failure on the way;
        None: go rule by rule."""
        ...

    def prepare(self, value: Mapping[str, Any]) -> Any:
        """Convert constant data (a policy's params) once, ahead of evaluations."""
        ...

    def scope(
        self,
        request: ConnectionRequest,
        now: datetime,
        params: Any,
        variables: Mapping[str, Any],
        fields: RequestFields | None = None,
    ) -> Scope:
        """Names for one evaluation; `variables` (name -> Program) are computed lazily, once.
        `fields`: what the policy's expressions read of the request (None: anything); an
        engine may leave the rest out."""
        ...

    def bind(self, names: Mapping[str, Any]) -> Scope:
        """A scope of plain data only (webhook mappings: `payload`, `headers`)."""
        ...


def json_number(value: int) -> int | float:
    """An integer as CEL reads a JSON number: itself within int64, a double beyond it."""
    if -(2**63) <= value < 2**63:
        return value
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def type_name(value: Any) -> str:
    """The CEL type name of a plain Python value."""
    for cls in type(value).__mro__:
        if cls in _TYPE_NAMES:
            return _TYPE_NAMES[cls]
    return type(value).__name__


_TYPE_NAMES: dict[type, str] = {
    bool: "bool",
    int: "int",
    float: "double",
    str: "string",
    bytes: "bytes",
    list: "list",
    tuple: "list",
    dict: "map",
    datetime: "timestamp",
    timedelta: "duration",
    type(None): "null",
}


def to_json(value: Any) -> Any:
    """A plain value as JSON-ready data: timestamps as RFC 3339, durations as `1.5s`."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, timedelta):
        return f"{value.total_seconds():g}s"
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Mapping):  # sorted: engines keep maps in different orders
        return dict(sorted((str(to_json(k)), to_json(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return str(value)
