"""CEL engines behind one seam (service/policy/engines/base.py).

- `cel-expr-python`: Google's C++ CEL; the default (docs/adr/0009-cel-engines.md).
- `cel-python`: the pure-Python reference the product was specified with.

Every policy suite runs under both, and `handshake check` warns where they disagree.
"""

from __future__ import annotations

import functools

from service.policy.engines.base import (
    ITERATION_BUDGET,
    MACROS,
    CelSyntaxError,
    Engine,
    EvalError,
    Expression,
    Program,
    RequestFields,
    Scope,
    to_json,
    type_name,
)
from service.policy.engines.celpython import parse

__all__ = [
    "DEFAULT_ENGINE",
    "ENGINES",
    "ITERATION_BUDGET",
    "MACROS",
    "CelSyntaxError",
    "Engine",
    "EvalError",
    "Expression",
    "Program",
    "RequestFields",
    "Scope",
    "get_engine",
    "parse",
    "to_json",
    "type_name",
]

ENGINES = ("cel-expr-python", "cel-python")
DEFAULT_ENGINE = "cel-expr-python"


@functools.cache
def get_engine(name: str = DEFAULT_ENGINE) -> Engine:
    """The engine called `name`; raises `ValueError` for any other name."""
    if name == "cel-python":
        from service.policy.engines.celpython import CelPython

        return CelPython()
    if name == "cel-expr-python":
        from service.policy.engines.celexpr import CelExpr

        return CelExpr()
    raise ValueError(f"unknown CEL engine `{name}` (choose one of: {', '.join(ENGINES)})")
