"""The fast engine: Google's C++ CEL through `cel-expr-python` (docs/adr/0009-cel-engines.md)."""

from service.policy.engines.celexpr.data import request_data
from service.policy.engines.celexpr.engine import CelExpr

__all__ = ["CelExpr", "request_data"]
