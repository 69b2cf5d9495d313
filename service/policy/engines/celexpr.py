"""The fast engine: Google's C++ CEL through `cel-expr-python`.

A policy's rules run as one program (`RulesProgram`: the first match in one call). Single
expressions (templates, and rules one by one when that program reports a failure) run as
`Program`s; the runtime cannot call back into Python for a lazy map, so their `variables` are
computed on demand, in dependency order, and bound into a fresh `Activation` only when a
program needs one that the current activation lacks. Data crosses into C++ as plain Python
values, with the adapter's conversions: timestamps and durations inside maps become protobuf
`Timestamp`s and `Duration`s, `None` fields of the request are left out (so `has()` works),
and integers beyond int64 become doubles, exactly as the cel-python engine reads them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from cel_expr_python import cel
from cel_expr_python.ext import ext_bindings, ext_strings
from google.protobuf import duration_pb2, timestamp_pb2

from service.policy.engines.base import (
    BUDGET_MESSAGE,
    CelSyntaxError,
    EvalError,
    Expression,
    RequestFields,
    json_number,
)
from service.policy.request import ConnectionRequest

__all__ = ["TYPE_LABELS", "CelExpr", "compile_error", "describe", "operator_symbol"]

NAMES = ("request", "now", "params", "variables", "payload", "headers")
_ENV = cel.NewEnv(
    variables=dict.fromkeys(NAMES, cel.Type.DYN),
    extensions=[ext_bindings.ExtBindings(), ext_strings.ExtStrings()],
)
_ERROR = cel.Type.ERROR


class Program:
    """One expression compiled for the C++ runtime (type checking is done apart, at load)."""

    __slots__ = ("_compiled", "expression")

    def __init__(self, expression: Expression) -> None:
        self.expression = expression
        try:
            self._compiled = _ENV.compile(expression.text, disable_check=True)
        except RuntimeError as exc:
            raise compile_error(exc) from None

    def eval(self, activation: Any) -> Any:
        """Plain Python data; raises `EvalError`."""
        return _plain(_run(self._compiled, activation))


class RulesProgram:
    """A policy's rules as ONE program: the index of the first rule that matches (-1: none)
    and the values of that outcome's template placeholders. Variables are bound with
    `cel.bind` (lazily: only when reached, at most once), so a decision costs one call into
    C++ instead of one per rule, variable and placeholder.

    It answers only when nothing failed on the way: any error (a failing or non-bool
    condition or placeholder, the iteration budget over the whole program) raises, and the
    evaluator then goes rule by rule to report it exactly. So the result is always the
    rule-by-rule one.
    """

    __slots__ = ("_compiled", "_positions", "placeholders")

    def __init__(self, text: str, placeholders: Sequence[Sequence[Program]]) -> None:
        self._compiled = _ENV.compile(text, disable_check=True)
        self.placeholders = placeholders  # per rule, then the default's (index -1)
        self._positions = [_positions(programs) for programs in placeholders]

    def first_match(self, data: dict[str, Any]) -> tuple[int, list[Any]]:
        """The first match and the values of its outcome's placeholders, in order. It reads
        only `request`, `now` and `params` (variables are bound inside), so it takes the data
        itself: an activation costs more, and one call needs none."""
        index, values = _run(self._compiled, data=data)
        index = int(index)
        plain = [_plain(value) for value in values]
        return index, [plain[position] for position in self._positions[index]]


def distinct(programs: Sequence[Program]) -> list[Program]:
    """The first of `programs` for each distinct expression text: a placeholder written in
    every locale's reply (`{{ request.requester.name }}`) is computed once."""
    first: dict[str, Program] = {}
    for program in programs:
        first.setdefault(program.expression.text, program)
    return list(first.values())


def _positions(programs: Sequence[Program]) -> list[int]:
    """For each of `programs`, where its value is among those of `distinct(programs)`."""
    texts = [p.expression.text for p in distinct(programs)]
    return [texts.index(p.expression.text) for p in programs]


def _run(compiled: Any, activation: Any = None, data: Any = None) -> Any:
    """Evaluate against an activation or the data itself; the runtime's plain value, or
    `EvalError` (it returns most errors as values and raises only for the iteration budget)."""
    try:
        value = compiled.eval(activation, data)
    except RuntimeError as exc:
        raise _runtime_failure(exc) from None
    if value.type() == _ERROR:
        raise describe(str(value.value()))
    return value.plain_value()


def rules_program(
    variables: Mapping[str, Program],
    conditions: Sequence[Program],
    placeholders: Sequence[Sequence[Program]],
) -> RulesProgram | None:
    """The single program for these conditions and their outcomes' placeholders (one list per
    condition, then the default's), or None where one cannot be built."""
    order: list[str] = []

    def visit(name: str, trail: tuple[str, ...]) -> None:
        if name in order or name in trail or name not in variables:
            return
        for dep in sorted(variables[name].expression.variables):
            visit(dep, (*trail, name))
        order.append(name)

    for program in [*conditions, *(p for programs in placeholders for p in programs)]:
        for name in sorted(program.expression.variables):
            visit(name, ())

    def answer(index: int) -> str:
        values = ", ".join(f"(\n{_inline(p.expression)}\n)" for p in distinct(placeholders[index]))
        return f"[{index}, [{values}]]"

    try:
        body = answer(-1)
        for index in reversed(range(len(conditions))):
            body = f"(\n{_inline(conditions[index].expression)}\n) ? {answer(index)} : ({body})"
        for name in reversed(order):
            body = f"cel.bind({_BOUND}{name}, (\n{_inline(variables[name].expression)}\n), {body})"
        return RulesProgram(body, placeholders)
    except (ValueError, RuntimeError):  # `has(variables.x)`, or nesting the parser refuses
        return None


_BOUND = "hs_var_"  # `variables.x` is bound as `hs_var_x`


def _inline(expression: Expression) -> str:
    """The expression's text with `variables.<name>` read from its `cel.bind` name."""
    from service.policy.references import Reference, references

    text = expression.text
    if _BOUND in text:  # the policy's own name would clash with a bound one
        raise ValueError("reserved prefix")
    starts = [0]
    for line in text.split("\n"):
        starts.append(starts[-1] + len(line) + 1)
    spans = []
    for found in references(expression.tree):
        if isinstance(found, Reference) and found.path[0] == "variables" and len(found.path) > 1:
            (line0, column0), (line1, column1) = found.positions[:2]
            start = starts[line0 - 1] + column0 - 1
            end = starts[line1 - 1] + column1 - 1 + len(found.path[1])
            if text[start:end].replace(" ", "") != f"variables.{found.path[1]}":
                raise ValueError("unexpected layout")
            if text[:start].rstrip().endswith("has("):
                raise ValueError("has() on a variable")
            spans.append((start, end, found.path[1]))
    for start, end, name in sorted(spans, reverse=True):
        text = f"{text[:start]}{_BOUND}{name}{text[end:]}"
    return text


class _Scope:
    __slots__ = ("_activation", "_bound", "_data", "_failed", "_given", "_programs", "_values")

    def __init__(self, data: dict[str, Any], programs: Mapping[str, Program]) -> None:
        self._data = data
        self._programs = programs
        self._values: dict[str, Any] = {}  # computed variables, as plain values
        self._failed: dict[str, EvalError] = {}
        data["variables"] = {}  # the same, as data for C++
        self._activation: Any = None
        self._bound: frozenset[str] = frozenset()  # the variables in `_activation`
        self._given: dict[Program, Any] = {}  # placeholder values from the rules program

    def run(self, program: Program) -> Any:
        if program in self._given:
            return self._given[program]
        needed = program.expression.variables
        for name in needed:
            self._compute(name, ())
        try:
            return program.eval(self._activation_for(needed))
        except EvalError:
            # As in cel-python, reading a failed variable fails with the variable's error.
            for name in sorted(needed):
                if name in self._failed:
                    raise self._failed[name] from None
            raise

    def variables(self) -> dict[str, Any]:
        return {**self._values, **self._failed}

    def first_match(self, program: RulesProgram) -> int:
        index, values = program.first_match(self._data)
        self._given = dict(zip(program.placeholders[index], values, strict=True))
        return index

    def _compute(self, name: str, chain: tuple[str, ...]) -> None:
        if name in self._values or name in self._failed:
            return
        program = self._programs.get(name)
        if program is None or name in chain:  # the compiler refuses both; stay total anyway
            self._failed[name] = EvalError(f"unknown variable `{name}`")
            return
        for dep in program.expression.variables:
            self._compute(dep, (*chain, name))
        try:
            value = program.eval(self._activation_for(program.expression.variables))
        except EvalError as exc:
            self._failed[name] = exc
            return
        self._values[name] = value
        self._data["variables"][name] = to_data(value, keep_null=True)

    def _activation_for(self, needed: frozenset[str]) -> Any:
        """The current activation, rebuilt only when it lacks a computed variable."""
        if self._activation is None or any(
            name in self._values and name not in self._bound for name in needed
        ):
            self._activation = _ENV.Activation(self._data)
            self._bound = frozenset(self._values)
        return self._activation


class CelExpr:
    """The `cel-expr-python` engine."""

    name = "cel-expr-python"

    def compile(self, expression: Expression) -> Program:
        return Program(expression)

    def rules_program(
        self,
        variables: Mapping[str, Any],
        conditions: Sequence[Any],
        placeholders: Sequence[Sequence[Any]],
    ) -> RulesProgram | None:
        return rules_program(variables, conditions, placeholders)

    def prepare(self, value: Mapping[str, Any]) -> Any:
        return to_data(dict(value), keep_null=False)

    def scope(
        self,
        request: ConnectionRequest,
        now: datetime,
        params: Any,
        variables: Mapping[str, Any],
        fields: RequestFields | None = None,
    ) -> _Scope:
        data = {"request": request_data(request, fields), "now": _timestamp(now), "params": params}
        return _Scope(data, variables)

    def bind(self, names: Mapping[str, Any]) -> _Scope:
        return _Scope({name: to_data(value, False) for name, value in names.items()}, {})


_EVERY_FIELD: RequestFields = dict.fromkeys(ConnectionRequest.__struct_fields__)


def request_data(request: ConnectionRequest, fields: RequestFields | None = None) -> dict[str, Any]:
    """The request as data for C++, the fast way (once per evaluation, the hot path): only
    the `fields` the policy reads, when it says which (the runtime takes in every value it is
    given, and fewer values cost less), else all of them.

    The schema bounds every typed field (counts far below int64), so only absent fields and
    timestamps need work there; free-form `attributes` get the full conversion. No string holds
    U+0000, at which the runtime would cut it: requests, payloads, params and literals refuse it.
    """
    data: dict[str, Any] = {}
    for key, names in (_EVERY_FIELD if fields is None else fields).items():
        value = getattr(request, key)
        if value is None:
            continue
        if names is not None:  # some fields of a struct; plain loops, the fastest way here
            part = {}
            for name in names:
                field = getattr(value, name)
                if field is not None:
                    part[name] = _typed(field)
            data[key] = part
        elif isinstance(value, msgspec.Struct):
            found = msgspec.to_builtins(value, builtin_types=(datetime,)).items()
            data[key] = {name: _typed(field) for name, field in found if field is not None}
        elif key == "attributes":
            data[key] = to_data(msgspec.to_builtins(value), keep_null=False)
        else:
            data[key] = _typed(value)
    return data


def _typed(value: Any) -> Any:
    """A typed field's value for C++: timestamps as protobuf, the rest as it is."""
    return _timestamp(value) if type(value) is datetime else value


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    delta = value - _EPOCH  # exact, unlike value.timestamp() (a float)
    seconds = delta.days * 86_400 + delta.seconds
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=delta.microseconds * 1000)


def to_data(value: Any, keep_null: bool) -> Any:
    """Plain Python data -> what the C++ runtime accepts inside maps and lists."""
    if isinstance(value, dict):
        return {
            to_data(k, keep_null): to_data(v, keep_null)
            for k, v in value.items()
            if keep_null or v is not None
        }
    if isinstance(value, list | tuple):
        return [to_data(v, keep_null) for v in value]
    if isinstance(value, str | bool | float) or value is None:
        return value
    if isinstance(value, int):
        return json_number(value)
    if isinstance(value, datetime):
        return _timestamp(value)
    if isinstance(value, timedelta):
        duration = duration_pb2.Duration()
        duration.FromTimedelta(value)
        return duration
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    raise TypeError(f"cannot give a `{type(value).__name__}` to CEL")


def _plain(value: Any) -> Any:
    """The runtime's plain values, normalised: bytes, not bytearray; UTC datetimes."""
    if isinstance(value, bool | int | str | float) or value is None:
        return value
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, bytearray):
        return bytes(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return value


# Error texts of the C++ runtime, made to read like the cel-python engine's.
_MISSING = re.compile(r'Key not found in map : "(.*)"|no_such_field : (\w+)', re.DOTALL)
_OVERLOAD = re.compile(r"No matching overloads found : ([^(\s]+)(?:\((.*)\))?", re.DOTALL)
_STATUS = re.compile(r"^[A-Z_]+: ")
TYPE_LABELS = {  # the runtime's and checker's type names -> CEL's
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


def describe(text: str) -> EvalError:
    if match := _MISSING.search(text):
        return EvalError(f"no such key `{match.group(1) or match.group(2)}`", "missing")
    if "found : <iter_range>" in text:
        return EvalError("a comprehension needs a list or a map", "type")
    if match := _OVERLOAD.search(text):
        kinds = [
            TYPE_LABELS.get(k.strip(), k.strip()) for k in (match.group(2) or "").split(",") if k
        ]
        on = f" on ({', '.join(kinds)})" if kinds else ""
        return EvalError(
            f"no matching overload for `{operator_symbol(match.group(1))}`{on}", "type"
        )
    text = _STATUS.sub("", text.strip())
    return EvalError(text[:1].lower() + text[1:])


def _runtime_failure(exc: RuntimeError) -> EvalError:
    if "Iteration budget exceeded" in str(exc):
        return EvalError(BUDGET_MESSAGE, "budget")
    return describe(str(exc).removesuffix(" [INTERNAL]"))


_POSITION = re.compile(r"<input>:(\d+):(\d+): (.*?)(?:\n|$)")


def compile_error(exc: RuntimeError) -> CelSyntaxError:
    """The first problem of a C++ compile error, with its position in the expression."""
    if match := _POSITION.search(str(exc)):
        line, column = int(match.group(1)), int(match.group(2))
        if line >= 2**31 or column >= 2**31:  # -1 as an unsigned int: the parser knew none
            line = column = 1
        message = match.group(3)
        if "max recursion depth" in message or "recursion limit" in message:
            message = (
                "expression nests too deeply for Google's CEL (more than 32 levels, counting "
                "each operand of a chain like `a + b + c`): split it into variables"
            )
        return CelSyntaxError(message, line, column)
    return CelSyntaxError(_STATUS.sub("", str(exc)).split("\n")[0])
