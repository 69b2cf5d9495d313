"""The reference engine: cel-python (pure Python), the interpreted runner.

The compiled runner mis-evaluates `has(x.f) && x.f != ""` when `f` is absent and keeps state in
module globals (docs/adr/0002-cel-python-interpreted-runner.md). It evaluates the front end's
parse tree itself (service/policy/cel/syntax.py parses with cel-python's grammar and options).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import celpy
import msgspec
from celpy import celtypes
from celpy.evaluation import CELEvalError, Evaluator

from service.policy.cel import (
    BUDGET_MESSAGE,
    ITERATION_BUDGET,
    EvalError,
    Expression,
    RequestFields,
    Value,
    json_number,
)
from service.policy.cel.syntax import OPERATORS
from service.policy.engines.base import Program, Rules
from service.policy.engines.celpython.functions import EXTENSIONS
from service.policy.request import ConnectionRequest

__all__ = ["CelPython", "LazyMap", "to_cel"]

CelValue = Any  # a celpy.celtypes value


_ENVIRONMENT = celpy.Environment()  # one per process: cel-python caches across environments


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


class PyProgram:
    """One expression compiled for cel-python."""

    __slots__ = ("_runner", "expression")

    def __init__(self, expression: Expression) -> None:
        self.expression = expression
        self._runner = _Runner(_ENVIRONMENT, expression.tree, EXTENSIONS)

    def run(self, names: Mapping[str, CelValue]) -> CelValue:
        """Evaluate to a CEL value; raise `EvalError` for every failure, whatever happened.
        The failure is raised outside the handler, so it carries no context: cel-python's
        exception and its frames would otherwise stay reachable from it."""
        try:
            result = self._runner.evaluate(dict(names))
        except CELEvalError as exc:
            failure = _failure(exc)
        except _BudgetExceededError:
            failure = EvalError(BUDGET_MESSAGE, "budget")
        except RecursionError:
            failure = EvalError("expression nests too deeply")
        except Exception as exc:  # cel-python lets some Python errors through
            failure = EvalError(f"evaluation failed: {type(exc).__name__}: {exc}")
        else:
            if not isinstance(result, CELEvalError):
                return result
            failure = _failure(result)
        raise failure


class LazyMap(celtypes.MapType):
    """A CEL map whose values are computed on first access and then kept.

    Used for `variables`: each is evaluated at most once per request, and only if used. A
    failure is kept as a CEL error value, so `true || variables.broken` is still true.
    """

    def __init__(self, compute: Callable[[str], CelValue]) -> None:
        super().__init__()
        self._compute = compute

    def __getitem__(self, key: Any) -> CelValue:
        name = celtypes.StringType(key)
        if not dict.__contains__(self, name):
            try:
                value = self._compute(name)
            except EvalError as exc:
                value = CELEvalError(str(exc), _KIND_CLASSES.get(exc.kind, ValueError), None)
            dict.__setitem__(self, name, value)
        return dict.__getitem__(self, name)

    def evaluated(self) -> dict[str, Value | EvalError]:
        """What has been computed so far, as plain values or `EvalError`s."""
        done: dict[str, Value | EvalError] = {}
        for key, value in dict.items(self):
            try:
                done[str(key)] = to_plain(value)
            except EvalError as exc:
                done[str(key)] = exc
        return done


class PyScope:
    __slots__ = ("_lazy", "_names")

    def __init__(self, names: dict[str, CelValue], variables: Mapping[str, Program]) -> None:
        programs = cast(Mapping[str, PyProgram], variables)  # this engine's (base.py)

        def compute(name: str) -> CelValue:
            program = programs.get(name)
            if program is None:
                raise EvalError(f"unknown variable `{name}`")
            return program.run(names)

        self._lazy = LazyMap(compute)
        names["variables"] = self._lazy
        self._names = names

    def run(self, program: Program) -> Value:
        own: PyProgram = program  # type: ignore[assignment]  # this engine's (base.py)
        return to_plain(own.run(self._names))

    def variables(self) -> dict[str, Value | EvalError]:
        return self._lazy.evaluated()


class CelPython:
    """The `cel-python` engine."""

    name = "cel-python"
    one_call = False

    def compile(self, expression: Expression) -> PyProgram:
        return PyProgram(expression)

    def rules_program(self, rules: Rules) -> None:
        return None  # no faster way than rule by rule in pure Python

    def prepare(self, value: Mapping[str, object]) -> object:
        return to_cel(value)

    def scope(
        self,
        request: ConnectionRequest,
        now: datetime,
        params: object,
        variables: Mapping[str, Program],
        fields: RequestFields | None = None,
    ) -> PyScope:
        # Absent (None) fields are left out, so `has()` works. All fields, whatever `fields`
        # says: the reference engine keeps to the plainest conversion.
        cel_request = to_cel(msgspec.to_builtins(request, builtin_types=(datetime,)))
        names = {"request": cel_request, "now": to_cel(now), "params": params}
        return PyScope(names, variables)

    def bind(self, names: Mapping[str, object]) -> PyScope:
        return PyScope({name: to_cel(value) for name, value in names.items()}, {})


_KINDS: dict[type, str] = {TypeError: "type", KeyError: "missing"}
_KIND_CLASSES = {kind: cls for cls, kind in _KINDS.items()}


def _failure(error: CELEvalError) -> EvalError:
    cause = error.args[1] if len(error.args) > 1 else None
    return EvalError(describe(error), _KINDS.get(cause, "other"))  # type: ignore[arg-type]


def to_cel(value: Any) -> CelValue:
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


def to_plain(value: CelValue) -> Value:
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

_CLASS = re.compile(r"<class 'celpy\.celtypes\.(\w+)'>")
_OVERLOAD = re.compile(r"found no matching overload for (?:Token\('RULE', '(\w+)'\)|'(\w+)'|(\S+))")
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
        rule, symbol = match.group(1) or match.group(2), match.group(3)
        operator = OPERATORS.get(rule, rule) if rule else symbol
        kinds = [_type_name_of_class(name) for name in _CLASS.findall(text)]
        on = f" on ({', '.join(kinds)})" if kinds else ""
        return f"no matching overload for `{operator}`{on}"
    if text.startswith("unbound function"):
        return text
    if text == "return error for overflow":
        return "integer overflow"  # as the C++ runtime says it
    return text[:1].lower() + text[1:]
