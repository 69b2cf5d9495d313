"""The engine seam: what the core needs from a CEL runtime, and nothing more.

The front end (service/policy/cel/) parses and checks an expression once; an engine compiles
it into a `Program`. Per evaluation the engine converts the request once into a `Scope`;
`Scope.run(program)` returns plain data (`Value`) or raises `EvalError`. An engine may also
compile a policy's rules into one `RulesProgram` that finds the first match in one call.

    engine = get_engine("cel-expr-python")
    program = engine.compile(parse("request.relationship.mutual_connections > 10"))
    scope = engine.scope(request, now, engine.prepare({}), variables={})
    scope.run(program)  # True

A program reaches only the scopes of the engine that compiled it: a compiled policy holds
its engine, and everything it runs was compiled by that engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple, Protocol

from service.policy.cel import EvalError, Expression, RequestFields, Value
from service.policy.request import ConnectionRequest

__all__ = ["Engine", "Match", "Program", "Rules", "RulesProgram", "Scope"]


class Program(Protocol):
    """An expression compiled by one engine."""

    @property
    def expression(self) -> Expression: ...


class Scope(Protocol):
    """One evaluation's names (request, now, params, variables), converted once."""

    def run(self, program: Program) -> Value:
        """The program's value as plain data; raises `EvalError`."""
        ...

    def variables(self) -> dict[str, Value | EvalError]:
        """The variables computed so far: a value, or the `EvalError` it failed with."""
        ...


@dataclass(frozen=True, slots=True)
class Rules:
    """What a rules program decides between: the policy's variables, its rules' conditions in
    order, and the placeholders of each rule's outcome, then the default's."""

    variables: Mapping[str, Program]
    conditions: Sequence[Program]
    placeholders: Sequence[Sequence[Program]]


class Match(NamedTuple):  # a tuple: built once per decision, on the hot path
    """What a rules program found: the position of the first rule whose condition is true
    (-1: none, the default decides), and the values of that outcome's placeholders."""

    position: int
    values: Mapping[Program, Value]


class RulesProgram(Protocol):
    def first_match(self, scope: Scope) -> Match:
        """Raises `EvalError` when anything on the way failed (a condition, a placeholder,
        the iteration budget): the evaluator then goes rule by rule to report it exactly, so
        a match is always the rule-by-rule answer."""
        ...


class Engine(Protocol):
    name: str
    one_call: bool  # whether `rules_program` builds one (else rules go one by one by design)

    def compile(self, expression: Expression) -> Program:
        """Raises `CelSyntaxError` when this engine cannot run the expression."""
        ...

    def rules_program(self, rules: Rules) -> RulesProgram | None:
        """All the rules as one program, or None: go rule by rule."""
        ...

    def prepare(self, value: Mapping[str, object]) -> object:
        """Convert constant data (a policy's params) once, ahead of evaluations."""
        ...

    def scope(
        self,
        request: ConnectionRequest,
        now: datetime,
        params: object,
        variables: Mapping[str, Program],
        fields: RequestFields | None = None,
    ) -> Scope:
        """Names for one evaluation; `variables` are computed lazily, once. `params` is what
        `prepare` returned. `fields`: what the policy's expressions read of the request
        (None: anything); an engine may leave the rest out."""
        ...

    def bind(self, names: Mapping[str, object]) -> Scope:
        """A scope of plain data only (webhook mappings: `payload`, `headers`)."""
        ...
