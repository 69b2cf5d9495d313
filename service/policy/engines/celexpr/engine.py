"""The fast engine: Google's C++ CEL through `cel-expr-python`.

A policy's rules run as one program (rules.py: the first match in one call). Single
expressions (templates, and rules one by one when that program reports a failure) run as
programs in a scope (scope.py). Data crosses into C++ as plain values (data.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from service.policy.cel import Expression, RequestFields
from service.policy.engines.base import Program, Rules
from service.policy.engines.celexpr.data import request_data, timestamp, to_data
from service.policy.engines.celexpr.rules import CelRulesProgram, build
from service.policy.engines.celexpr.runtime import ENV
from service.policy.engines.celexpr.scope import CelProgram, CelScope
from service.policy.request import ConnectionRequest

__all__ = ["CelExpr"]


class CelExpr:
    """The `cel-expr-python` engine."""

    name = "cel-expr-python"
    one_call = True

    def compile(self, expression: Expression) -> CelProgram:
        return CelProgram(expression)

    def rules_program(self, rules: Rules) -> CelRulesProgram | None:
        return build(ENV, rules)

    def prepare(self, value: Mapping[str, object]) -> object:
        return to_data(dict(value), keep_null=False)

    def scope(
        self,
        request: ConnectionRequest,
        now: datetime,
        params: object,
        variables: Mapping[str, Program],
        fields: RequestFields | None = None,
    ) -> CelScope:
        data = {"request": request_data(request, fields), "now": timestamp(now), "params": params}
        return CelScope(data, variables)

    def bind(self, names: Mapping[str, object]) -> CelScope:
        return CelScope({name: to_data(value, False) for name, value in names.items()}, {})
