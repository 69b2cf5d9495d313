"""CEL runtimes behind one seam (base.py): compile and evaluate, nothing else.

- `cel-expr-python`: Google's C++ CEL; the default (docs/adr/0009-cel-engines.md).
- `cel-python`: the pure-Python reference the product was specified with.

`get_engine` imports only the engine asked for, so that serving with one never loads the
other (docs/adr/0015-layers.md). Every policy suite runs under both, and `handshake check`
warns where they disagree.
"""

from __future__ import annotations

import functools

from service.policy.engines.base import Engine, Match, Program, Rules, RulesProgram, Scope

__all__ = [
    "DEFAULT_ENGINE",
    "ENGINES",
    "Engine",
    "Match",
    "Program",
    "Rules",
    "RulesProgram",
    "Scope",
    "get_engine",
]

ENGINES = ("cel-expr-python", "cel-python")
DEFAULT_ENGINE = "cel-expr-python"


@functools.cache
def get_engine(name: str = DEFAULT_ENGINE) -> Engine:
    """The engine called `name`; raises `ValueError` for any other name."""
    if name == "cel-python":
        from service.policy.engines.celpython import CelPython  # only when asked for

        return CelPython()
    if name == "cel-expr-python":
        from service.policy.engines.celexpr import CelExpr  # only when asked for

        return CelExpr()
    raise ValueError(f"unknown CEL engine `{name}` (choose one of: {', '.join(ENGINES)})")
