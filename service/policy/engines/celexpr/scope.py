"""One expression compiled for the C++ runtime, and one evaluation's names.

The runtime cannot call back into Python for a lazy map, so `variables` are computed on
demand, in dependency order, and bound into a fresh `Activation` only when a program needs
one that the current activation lacks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from service.policy.cel import EvalError, Expression, Value
from service.policy.cel.checker import compile_error
from service.policy.cel.memo import per_load
from service.policy.engines.base import Program
from service.policy.engines.celexpr.data import plain, to_data
from service.policy.engines.celexpr.runtime import ENV, run

__all__ = ["CelProgram", "CelScope"]


class CelProgram:
    """One expression compiled for the C++ runtime (type checking is done apart, at load)."""

    __slots__ = ("_compiled", "expression")

    def __init__(self, expression: Expression) -> None:
        self.expression = expression
        self._compiled = _compiled(expression.text)

    def eval(self, activation: Any) -> Value:
        """Plain Python data; raises `EvalError`."""
        return plain(run(self._compiled, activation))


@per_load
def _compiled(text: str) -> Any:
    """The runtime's program for `text`, shared by the policies of a load that have it (the
    runtime's programs are immutable)."""
    try:
        return ENV.compile(text, disable_check=True)
    except RuntimeError as exc:
        raise compile_error(exc) from None


class CelScope:
    __slots__ = ("_activation", "_bound", "_failed", "_programs", "_values", "data")

    def __init__(self, data: dict[str, Any], programs: Mapping[str, Program]) -> None:
        self.data = data  # what the runtime reads: request, now, params, variables
        self._programs = cast(Mapping[str, CelProgram], programs)  # this engine's (base.py)
        self._values: dict[str, Value] = {}  # computed variables, as plain values
        self._failed: dict[str, EvalError] = {}
        data["variables"] = {}  # the same, as data for C++
        self._activation: Any = None
        self._bound: frozenset[str] = frozenset()  # the variables in `_activation`

    def run(self, program: Program) -> Value:
        needed = program.expression.variables
        for name in needed:
            self._compute(name, ())
        own: CelProgram = program  # type: ignore[assignment]  # this engine's (base.py)
        try:
            return own.eval(self._activation_for(needed))
        except EvalError:
            # As in cel-python, reading a failed variable fails with the variable's error.
            failed = next((self._failed[n] for n in sorted(needed) if n in self._failed), None)
            if failed is None:
                raise
        raise failed.detached()

    def variables(self) -> dict[str, Value | EvalError]:
        return {**self._values, **self._failed}

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
            self._failed[name] = exc.detached()
            return
        self._values[name] = value
        self.data["variables"][name] = to_data(value, keep_null=True)

    def _activation_for(self, needed: frozenset[str]) -> Any:
        """The current activation, rebuilt only when it lacks a computed variable."""
        if self._activation is None or any(
            name in self._values and name not in self._bound for name in needed
        ):
            self._activation = ENV.Activation(self.data)
            self._bound = frozenset(self._values)
        return self._activation
