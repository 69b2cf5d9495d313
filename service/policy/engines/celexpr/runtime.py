"""Google's C++ CEL runtime: the one environment, running a compiled program, and its errors
in the words the cel-python engine uses."""

from __future__ import annotations

import re
from typing import Any

from cel_expr_python import cel
from cel_expr_python.ext import ext_bindings, ext_strings

from service.policy.cel import BUDGET_MESSAGE, EvalError
from service.policy.cel.checker import TYPE_LABELS, operator_symbol

__all__ = ["ENV", "describe", "run"]

NAMES = ("request", "now", "params", "variables", "payload", "headers")
ENV = cel.NewEnv(
    variables=dict.fromkeys(NAMES, cel.Type.DYN),
    extensions=[ext_bindings.ExtBindings(), ext_strings.ExtStrings()],
)
_ERROR = cel.Type.ERROR


def run(compiled: Any, activation: Any = None, data: Any = None) -> Any:
    """Evaluate against an activation or the data itself; the runtime's plain value, or
    `EvalError` (it returns most errors as values and raises only for the iteration budget)."""
    try:
        value = compiled.eval(activation, data)
    except RuntimeError as exc:
        raise _runtime_failure(exc) from None
    if value.type() == _ERROR:
        raise describe(str(value.value()))
    return value.plain_value()


_MISSING = re.compile(r'Key not found in map : "(.*)"|no_such_field : (\w+)', re.DOTALL)
_OVERLOAD = re.compile(r"No matching overloads found : ([^(\s]+)(?:\((.*)\))?", re.DOTALL)
_STATUS = re.compile(r"^[A-Z_]+: ")


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
