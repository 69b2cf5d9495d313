"""The reference engine: cel-python (pure Python), the interpreted runner.

The compiled runner mis-evaluates `has(x.f) && x.f != ""` when `f` is absent and keeps state in
module globals (docs/adr/0002-cel-python-interpreted-runner.md). cel-python caches its parser
across environments, so there is exactly one `Environment` per process. Its parser is also the
shared front end (`parse`): the compiler's static checks walk the tree it produces.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import celpy
import lark
import msgspec
import re2
from celpy import celtypes
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError, Evaluator, base_functions

from service.policy.engines.base import (
    BUDGET_MESSAGE,
    ITERATION_BUDGET,
    CelSyntaxError,
    EvalError,
    Expression,
    RequestFields,
    json_number,
)
from service.policy.request import ConnectionRequest

__all__ = ["FUNCTIONS", "CelPython", "LazyMap", "parse", "to_cel"]

Value = Any  # a celpy.celtypes value


def _lower_ascii(value: celtypes.StringType) -> celtypes.StringType:
    return celtypes.StringType(value.translate(_LOWER))


def _upper_ascii(value: celtypes.StringType) -> celtypes.StringType:
    return celtypes.StringType(value.translate(_UPPER))


def _trim(value: celtypes.StringType) -> celtypes.StringType:
    return celtypes.StringType(value.strip(_WHITESPACE))


# Unicode White_Space, as CEL's strings extension trims it. Python's own `strip()` also takes
# U+001C..U+001F (information separators), which CEL keeps: found by the differential test.
_WHITESPACE = (
    "".join(chr(c) for c in (*range(0x9, 0xE), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B)))
    + "\u2028\u2029\u202f\u205f\u3000"
)


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


def _string(value: Value) -> Value:
    """`string()` as the CEL spec (and the C++ runtime) writes it; cel-python writes `True`,
    drops a timestamp's fraction of a second and truncates a duration's."""
    if isinstance(value, celtypes.BoolType):
        return celtypes.StringType("true" if value else "false")
    if isinstance(value, celtypes.TimestampType):
        t = value.astimezone(UTC)
        return celtypes.StringType(t.strftime("%Y-%m-%dT%H:%M:%S") + _fraction(t.microsecond) + "Z")
    if isinstance(value, celtypes.DurationType):
        whole, micros = divmod(
            value.days * 86_400_000_000 + value.seconds * 1_000_000 + value.microseconds, 1_000_000
        )
        if whole < 0 and micros:
            whole, micros = whole + 1, 1_000_000 - micros
            return celtypes.StringType(f"-{abs(whole)}{_fraction(micros)}s")
        return celtypes.StringType(f"{whole}{_fraction(micros)}s")
    if isinstance(value, celtypes.DoubleType) and float(value) == 0 and math.copysign(1, value) < 0:
        return celtypes.StringType("-0")
    return celtypes.StringType(value)


def _fraction(micros: int) -> str:
    """`.5` s as `.500`, `.000123` as `.000123`: milliseconds or microseconds, as cel-cpp."""
    if micros == 0:
        return ""
    return f".{micros // 1000:03d}" if micros % 1000 == 0 else f".{micros:06d}"


_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _without_reprs(operator: Callable[[Value, Value], Value]) -> Callable[[Value, Value], Value]:
    """cel-python's `||` and `&&` on two non-bools raise a TypeError whose message holds the
    `repr` of both operands; an operand that is itself such an error nests its `repr`, escaped
    again, so `exists` over n failing items builds text exponential in n (n = 24: seconds and
    hundreds of MB). The same outcome, with a message of constant size."""

    @functools.wraps(operator)
    def logical(x: Value, y: Value) -> Value:
        if not isinstance(x, celtypes.BoolType) and not isinstance(y, celtypes.BoolType):
            raise TypeError("no such overload")
        return operator(x, y)

    return logical


# The macros (`exists`, `all`) read these from the module at each call; the operators come
# from the function table below.
celtypes.logical_or = _without_reprs(celtypes.logical_or)  # type: ignore[assignment]
celtypes.logical_and = _without_reprs(celtypes.logical_and)  # type: ignore[assignment]

# Functions beyond cel-python's standard set, named as in cel-go's strings extension;
# `matches` replaced by a quiet, cached version of the same RE2 search; `string` as the spec.
_EXTENSIONS: dict[str, Callable[..., Value]] = {
    "lowerAscii": _lower_ascii,
    "upperAscii": _upper_ascii,
    "_||_": celtypes.logical_or,
    "_&&_": celtypes.logical_and,
    "trim": _trim,
    "matches": _matches,
    "string": _string,
}
# Every function or method name cel-python knows (operators are not names).
FUNCTIONS = frozenset(name for name in base_functions if name[0].isalpha()) | set(_EXTENSIONS)

_ENVIRONMENT = celpy.Environment()  # one per process, see the module docstring


def parse(text: str) -> Expression:
    """The shared front end: text -> `Expression`; raises `CelSyntaxError`."""
    from service.policy.references import Reference, references

    try:
        tree = _ENVIRONMENT.compile(text)
    except CELParseError as exc:
        raise CelSyntaxError(
            _parse_message(exc.__context__), exc.line or 1, exc.column or 1
        ) from None
    except RecursionError:
        raise CelSyntaxError("expression nests too deeply") from None
    if _height(tree) > MAX_SYNTAX_DEPTH:  # before anything walks the tree recursively
        raise CelSyntaxError(
            f"expression nests too deeply (more than {MAX_SYNTAX_DEPTH} levels of syntax): "
            "split it into variables"
        )
    variables = frozenset(
        found.path[1]
        for found in references(tree)
        if isinstance(found, Reference) and found.path[0] == "variables" and len(found.path) > 1
    )
    return Expression(text, tree, variables)


# The parse tree's height, past which the walks over it (static checks, both engines'
# conversions, cel-python's evaluator: ~460 from a deep stack) could exhaust Python's stack.
# Google's CEL refuses more than 32 levels of nesting anyway (about 350 here); chains of `&&`
# or `||`, which it balances, reach this at about 390 operands (docs/policy-language.md).
MAX_SYNTAX_DEPTH = 400


def _height(tree: lark.Tree[lark.Token]) -> int:
    tallest, pending = 0, [(tree, 1)]
    while pending:
        node, height = pending.pop()
        tallest = max(tallest, height)
        pending.extend((c, height + 1) for c in node.children if isinstance(c, lark.Tree))
    return tallest


def _parse_message(cause: BaseException | None) -> str:
    if isinstance(cause, lark.UnexpectedToken):
        if cause.token.type == "$END":
            return "syntax error: unexpected end of expression"
        return f"syntax error: unexpected `{cause.token}`"
    if isinstance(cause, lark.UnexpectedCharacters):
        return f"syntax error: unexpected character `{cause.char}`"
    return "syntax error"


class _BudgetExceededError(Exception):
    """Not a CELEvalError, so that no `||`, `&&` or `exists` can absorb it."""


class _Evaluator(Evaluator):
    """cel-python's evaluator, counting comprehension iterations against ITERATION_BUDGET.

    A macro runs its body through a sub-evaluator, once per element: that is what is counted.
    """

    def __init__(self, ast: Any, activation: Any, budget: list[int] | None = None) -> None:
        super().__init__(ast, activation)
        self.budget = budget  # shared by the evaluator and its sub-evaluators; None at the top

    def sub_evaluator(self, ast: Any) -> Evaluator:
        return _Evaluator(ast, self.activation, self.budget if self.budget is not None else [0])

    def evaluate(self, context: Any = None) -> Any:
        if self.budget is not None:
            self.budget[0] += 1
            if self.budget[0] > ITERATION_BUDGET:
                raise _BudgetExceededError
        return super().evaluate(context)


class _Runner(celpy.InterpretedRunner):
    def evaluate(self, context: Any) -> Any:
        return _Evaluator(self.ast, self.new_activation(), None).evaluate(context)


class Program:
    """One expression compiled for cel-python."""

    __slots__ = ("_runner", "expression")

    def __init__(self, expression: Expression) -> None:
        self.expression = expression
        self._runner = _Runner(_ENVIRONMENT, expression.tree, _EXTENSIONS)

    def run(self, names: Mapping[str, Value]) -> Value:
        """Evaluate to a CEL value; raise `EvalError` for every failure, whatever happened."""
        try:
            result = self._runner.evaluate(dict(names))
        except CELEvalError as exc:
            raise _failure(exc) from None
        except _BudgetExceededError:
            raise EvalError(BUDGET_MESSAGE, "budget") from None
        except RecursionError:
            raise EvalError("expression nests too deeply") from None
        except Exception as exc:  # cel-python lets some Python errors through
            raise EvalError(f"evaluation failed: {type(exc).__name__}: {exc}") from None
        if isinstance(result, CELEvalError):
            raise _failure(result)
        return result


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

    def evaluated(self) -> dict[str, Any]:
        """What has been computed so far, as plain values or `EvalError`s."""
        done: dict[str, Any] = {}
        for key, value in dict.items(self):
            try:
                done[str(key)] = to_plain(value)
            except EvalError as exc:
                done[str(key)] = exc
        return done


class _Scope:
    __slots__ = ("_lazy", "_names")

    def __init__(self, names: dict[str, Value], variables: Mapping[str, Program]) -> None:
        def compute(name: str) -> Value:
            program = variables.get(name)
            if program is None:
                raise EvalError(f"unknown variable `{name}`")
            return program.run(names)

        self._lazy = LazyMap(compute)
        names["variables"] = self._lazy
        self._names = names

    def run(self, program: Program) -> Any:
        return to_plain(program.run(self._names))

    def variables(self) -> dict[str, Any]:
        return self._lazy.evaluated()

    def first_match(self, program: Any) -> int:
        raise NotImplementedError  # cel-python builds no rules program


class CelPython:
    """The `cel-python` engine."""

    name = "cel-python"

    def compile(self, expression: Expression) -> Program:
        return Program(expression)

    def rules_program(
        self,
        variables: Mapping[str, Any],
        conditions: Sequence[Any],
        placeholders: Sequence[Sequence[Any]],
    ) -> None:
        return None  # no faster way than rule by rule in pure Python

    def prepare(self, value: Mapping[str, Any]) -> Value:
        return to_cel(value)

    def scope(
        self,
        request: ConnectionRequest,
        now: datetime,
        params: Value,
        variables: Mapping[str, Any],
        fields: RequestFields | None = None,
    ) -> _Scope:
        # Absent (None) fields are left out, so `has()` works. All fields, whatever `fields`
        # says: the reference engine keeps to the plainest conversion.
        cel_request = to_cel(msgspec.to_builtins(request, builtin_types=(datetime,)))
        names = {"request": cel_request, "now": to_cel(now), "params": params}
        return _Scope(names, variables)

    def bind(self, names: Mapping[str, Any]) -> _Scope:
        return _Scope({name: to_cel(value) for name, value in names.items()}, {})


_KINDS: dict[type, str] = {TypeError: "type", KeyError: "missing"}
_KIND_CLASSES = {kind: cls for cls, kind in _KINDS.items()}


def _failure(error: CELEvalError) -> EvalError:
    cause = error.args[1] if len(error.args) > 1 else None
    return EvalError(describe(error), _KINDS.get(cause, "other"))  # type: ignore[arg-type]


def to_cel(value: Any) -> Value:
    """Python data (JSON-like, plus datetimes) -> CEL values. `None` in a mapping is omitted."""
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, int):
        number = json_number(value)
        return celtypes.IntType(number) if isinstance(number, int) else celtypes.DoubleType(number)
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


def to_plain(value: Value) -> Any:
    """CEL values -> plain Python data (`celtypes` subclass the Python types they mirror)."""
    if isinstance(value, CELEvalError):
        raise _failure(value)
    if value is None or isinstance(value, celtypes.BoolType):
        return None if value is None else bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, celtypes.TimestampType):
        t = value.astimezone(UTC)
        return datetime(t.year, t.month, t.day, t.hour, t.minute, t.second, t.microsecond, UTC)
    if isinstance(value, celtypes.DurationType):
        return timedelta(value.days, value.seconds, value.microseconds)
    if isinstance(value, celtypes.BytesType):
        return bytes(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, Mapping):
        return {to_plain(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
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
    if text == "return error for overflow":
        return "integer overflow"  # as the C++ runtime says it
    return text[:1].lower() + text[1:]
