"""CEL values as plain Python data, and the one way an evaluation fails.

Both runtimes hand back plain data (`Value`) and raise `EvalError`; nothing outside an engine
sees an engine's own value types.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TypeAlias

__all__ = [
    "BUDGET_MESSAGE",
    "ITERATION_BUDGET",
    "EvalError",
    "Value",
    "json_number",
    "to_json",
    "type_name",
]

# What an expression evaluates to, as plain Python data.
Value: TypeAlias = (
    bool
    | int
    | float
    | str
    | bytes
    | datetime
    | timedelta
    | list["Value"]
    | dict["Value", "Value"]
    | None
)

# Comprehension iterations per evaluation of one expression. cel-expr-python's runtime stops at
# this number (it is not configurable from Python); the cel-python engine enforces the same, so
# a runaway expression fails the same way under both (docs/policy-language.md, "Limits").
ITERATION_BUDGET = 10_000

BUDGET_MESSAGE = (
    f"evaluation budget exceeded: more than {ITERATION_BUDGET:,} comprehension iterations"
)


class EvalError(Exception):
    """An expression failed to evaluate; the message is fit for a policy owner.

    `kind` is `type` (no overload for these types), `missing` (no such field or key),
    `budget` (more than ITERATION_BUDGET comprehension iterations) or `other`.
    """

    def __init__(self, message: str, kind: str = "other") -> None:
        super().__init__(message)
        self.kind = kind

    def detached(self) -> EvalError:
        """The same failure without a traceback or a cause, to keep or raise again: a kept
        traceback holds its frames, and with them the scope that keeps it (a cycle only the
        garbage collector frees, once for every failing decision)."""
        return EvalError(str(self), self.kind)


def json_number(value: int) -> int | float:
    """An integer as CEL reads a JSON number: itself within int64, a double beyond it."""
    if -(2**63) <= value < 2**63:
        return value
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def type_name(value: object) -> str:
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

Json: TypeAlias = bool | int | float | str | list["Json"] | dict[str, "Json"] | None


def to_json(value: object) -> Json:
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
