"""The CEL engine: compile expressions once, evaluate them, convert values in and out.

This is the only module that touches cel-python. It uses the interpreted runner: the compiled
runner mis-evaluates `has(x.f) && x.f != ""` when `f` is absent and keeps state in module
globals (see docs/adr/0002-cel-python-interpreted-runner.md). cel-python caches its parser
across environments, so there is exactly one `Environment` per process.
"""

from __future__ import annotations

import base64
import functools
import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import celpy
import lark
import re2
from celpy import celtypes
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError, base_functions

__all__ = [
    "FUNCTIONS",
    "MACROS",
    "CelSyntaxError",
    "EvalError",
    "LazyMap",
    "Program",
    "compile_expression",
    "from_cel",
    "to_cel",
    "type_name",
]

Value = Any  # a celpy.celtypes value


def _lower_ascii(value: celtypes.StringType) -> celtypes.StringType:
    return celtypes.StringType(value.translate(_LOWER))


def _upper_ascii(value: celtypes.StringType) -> celtypes.StringType:
    return celtypes.StringType(value.translate(_UPPER))


def _trim(value: celtypes.StringType) -> celtypes.StringType:
    return celtypes.StringType(value.strip())


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # RE2 would print bad patterns to stderr itself


@functools.lru_cache(maxsize=256)
def _regex(pattern: str) -> Any:
    return re2.compile(pattern, _RE2_OPTIONS)


def _matches(text: celtypes.StringType, pattern: celtypes.StringType) -> Value:
    """cel-python's `matches` (RE2: linear time, no backtracking), quiet and cached."""
    try:
        return celtypes.BoolType(_regex(str(pattern)).search(str(text)) is not None)
    except re2.error as exc:
        detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        return CELEvalError(f"invalid regular expression: {detail}", ValueError, None)


_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")

# Functions beyond cel-python's standard set, named as in cel-go's strings extension, and
# `matches` replaced by a quiet, cached version of the same RE2 search.
_EXTENSIONS: dict[str, Callable[..., Value]] = {
    "lowerAscii": _lower_ascii,
    "upperAscii": _upper_ascii,
    "trim": _trim,
    "matches": _matches,
}
MACROS = frozenset({"has", "all", "exists", "exists_one", "map", "filter"})
# Every function or method name an expression may call (operators are not names).
FUNCTIONS = frozenset(name for name in base_functions if name[0].isalpha()) | set(_EXTENSIONS)

_ENVIRONMENT = celpy.Environment()  # one per process, see the module docstring


class CelSyntaxError(Exception):
    """An expression does not parse; line and column are 1-based within the expression."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(message)
        self.message, self.line, self.column = message, line, column


class EvalError(Exception):
    """An expression failed to evaluate; the message is fit for a policy owner.

    `kind` is `type` (no overload for these types), `missing` (no such field or key) or `other`.
    """

    def __init__(self, message: str, kind: str = "other") -> None:
        super().__init__(message)
        self.kind = kind


_KINDS: dict[type, str] = {TypeError: "type", KeyError: "missing"}
_KIND_CLASSES = {kind: cls for cls, kind in _KINDS.items()}


def _failure(error: CELEvalError) -> EvalError:
    cause = error.args[1] if len(error.args) > 1 else None
    return EvalError(describe(error), _KINDS.get(cause, "other"))  # type: ignore[arg-type]


class Program:
    """One compiled CEL expression."""

    __slots__ = ("_runner", "text", "tree")

    def __init__(self, text: str, tree: lark.Tree[lark.Token]) -> None:
        self.text = text
        self.tree = tree
        self._runner = _ENVIRONMENT.program(tree, functions=_EXTENSIONS)

    def run(self, activation: Mapping[str, Value]) -> Value:
        """Evaluate; raise `EvalError` for every failure, whatever cel-python raised."""
        try:
            result = self._runner.evaluate(dict(activation))
        except CELEvalError as exc:
            raise _failure(exc) from None
        except RecursionError:
            raise EvalError("expression nests too deeply") from None
        except Exception as exc:  # cel-python lets some Python errors through
            raise EvalError(f"evaluation failed: {type(exc).__name__}: {exc}") from None
        if isinstance(result, CELEvalError):
            raise _failure(result)
        return result


def compile_expression(text: str) -> Program:
    try:
        tree = _ENVIRONMENT.compile(text)
    except CELParseError as exc:
        raise CelSyntaxError(
            _parse_message(exc.__context__), exc.line or 1, exc.column or 1
        ) from None
    except RecursionError:
        raise CelSyntaxError("expression nests too deeply", 1, 1) from None
    return Program(text, tree)


def _parse_message(cause: BaseException | None) -> str:
    if isinstance(cause, lark.UnexpectedToken):
        if cause.token.type == "$END":
            return "syntax error: unexpected end of expression"
        return f"syntax error: unexpected `{cause.token}`"
    if isinstance(cause, lark.UnexpectedCharacters):
        return f"syntax error: unexpected character `{cause.char}`"
    return "syntax error"


class LazyMap(celtypes.MapType):
    """A CEL map whose values are computed on first access and then kept.

    Used for `variables`: each is evaluated at most once per request, and only if used. A
    failure is kept as a CEL error value, so `true || variables.broken` is still true.
    """

    def __init__(self, compute: Callable[[str], Value]) -> None:
        super().__init__()
        self._compute = compute

    def __getitem__(self, key: Any) -> Value:
        name = celtypes.StringType(key)
        if not dict.__contains__(self, name):
            try:
                value = self._compute(name)
            except EvalError as exc:
                value = CELEvalError(str(exc), _KIND_CLASSES.get(exc.kind, ValueError), None)
            dict.__setitem__(self, name, value)
        return dict.__getitem__(self, name)

    def evaluated(self) -> dict[str, Value]:
        """What has been computed so far (for `explain`)."""
        return {str(k): v for k, v in dict.items(self)}


def to_cel(value: Any) -> Value:
    """Python data (JSON-like, plus datetimes) -> CEL values. `None` in a mapping is omitted."""
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, int):
        if _INT64[0] <= value <= _INT64[1]:
            return celtypes.IntType(value)
        return celtypes.DoubleType(_as_float(value))  # as CEL reads JSON numbers: doubles
    if isinstance(value, float):
        return celtypes.DoubleType(value)
    if isinstance(value, str):
        return celtypes.StringType(value)
    if isinstance(value, datetime):
        return celtypes.TimestampType(value.astimezone(UTC))
    if isinstance(value, dict):
        return celtypes.MapType(
            {celtypes.StringType(k): to_cel(v) for k, v in value.items() if v is not None}
        )
    if isinstance(value, list | tuple):
        return celtypes.ListType([to_cel(v) for v in value])
    if value is None:
        return None
    raise TypeError(f"cannot give a `{type(value).__name__}` to CEL")


_INT64 = (-(2**63), 2**63 - 1)


def _as_float(value: int) -> float:
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def from_cel(value: Value) -> Any:
    """CEL values -> JSON-ready Python data (timestamps as RFC 3339, durations as `1.5s`)."""
    if isinstance(value, CELEvalError):
        raise _failure(value)
    if value is None:
        return None
    if isinstance(value, bool | celtypes.BoolType):
        return bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, celtypes.TimestampType):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, celtypes.DurationType):
        return f"{value.total_seconds():g}s"
    if isinstance(value, celtypes.BytesType):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        number = float(value)
        return number if math.isfinite(number) else str(number)
    if isinstance(value, Mapping):
        return {str(from_cel(k)): from_cel(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [from_cel(v) for v in value]
    return str(value)


_TYPE_NAMES = {
    celtypes.BoolType: "bool",
    celtypes.IntType: "int",
    celtypes.UintType: "uint",
    celtypes.DoubleType: "double",
    celtypes.StringType: "string",
    celtypes.BytesType: "bytes",
    celtypes.ListType: "list",
    celtypes.MapType: "map",
    celtypes.TimestampType: "timestamp",
    celtypes.DurationType: "duration",
    type(None): "null",
}


def type_name(value: Value) -> str:
    for cls in type(value).__mro__:
        if cls in _TYPE_NAMES:
            return _TYPE_NAMES[cls]
    return type(value).__name__


_OPERATORS = {
    "relation_lt": "<",
    "relation_le": "<=",
    "relation_gt": ">",
    "relation_ge": ">=",
    "relation_eq": "==",
    "relation_ne": "!=",
    "relation_in": "in",
    "addition_add": "+",
    "addition_sub": "-",
    "multiplication_mul": "*",
    "multiplication_div": "/",
    "multiplication_mod": "%",
    "unary_not": "!",
    "unary_neg": "-",
}
_CLASS = re.compile(r"<class 'celpy\.celtypes\.(\w+)'>")
_OVERLOAD = re.compile(r"found no matching overload for (?:Token\('RULE', '(\w+)'\)|(\S+))")
_MISSING = re.compile(r"no such member in mapping: '([^']*)'")


def _type_name_of_class(name: str) -> str:
    cls = getattr(celtypes, name, None)
    return _TYPE_NAMES.get(cls, name) if isinstance(cls, type) else name


def describe(error: CELEvalError) -> str:
    """cel-python's error text, made readable: `no matching overload for `>` on (int, string)`."""
    text = str(error.args[0]) if error.args else "evaluation failed"
    if match := _MISSING.search(text):
        return f"no such key `{match.group(1)}`"
    if match := _OVERLOAD.search(text):
        rule, symbol = match.group(1), match.group(2)
        operator = _OPERATORS.get(rule, rule) if rule else symbol
        kinds = [_type_name_of_class(name) for name in _CLASS.findall(text)]
        on = f" on ({', '.join(kinds)})" if kinds else ""
        return f"no matching overload for `{operator}`{on}"
    if text.startswith("unbound function"):
        return text
    return text[:1].lower() + text[1:]
