"""A policy's rules as few calls into C++ as Google's CEL allows: usually one.

The conditions become one chain of conditionals that yields the index of the first rule that
matches (-1: none) and the values of that outcome's placeholders; each variable is bound
around it with `cel.bind` (lazily: only when reached, at most once). The text is rendered from
the parse trees (service/policy/cel/text.py), with `variables.<name>` read from its bound name.

Google's parser refuses more than 32 levels of nesting, and each rule nests one more: the
rules are split into segments that each compile, run in order until one matches. A rule that
cannot compile in a segment of its own (its condition and variables already nest too deeply)
leaves the policy rule by rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from service.policy.cel import Expression
from service.policy.cel.memo import per_load
from service.policy.cel.text import render
from service.policy.engines.base import Match, Program, Rules, Scope
from service.policy.engines.celexpr.data import plain
from service.policy.engines.celexpr.runtime import run
from service.policy.engines.celexpr.scope import CelScope

__all__ = ["CelRulesProgram", "build"]

_BOUND = "hs_var_"  # `variables.x` is bound as `hs_var_x`


class CelRulesProgram:
    __slots__ = ("_placeholders", "_positions", "segments")

    def __init__(self, segments: Sequence[Any], rules: Rules) -> None:
        self.segments = tuple(segments)  # compiled programs, each a run of rules in order
        self._placeholders = rules.placeholders  # per rule, then the default's (index -1)
        self._positions = [_positions(programs) for programs in rules.placeholders]

    def first_match(self, scope: Scope) -> Match:
        """It reads only `request`, `now` and `params` (variables are bound inside), so it
        takes the data itself: an activation costs more, and one call needs none."""
        own: CelScope = scope  # type: ignore[assignment]  # this engine's (base.py)
        data = own.data
        for segment in self.segments:
            index, values = run(segment, data=data)
            if index >= 0:
                break
        index = int(index)
        found = [plain(values[position]) for position in self._positions[index]]
        return Match(index, dict(zip(self._placeholders[index], found, strict=True)))


def build(environment: Any, rules: Rules) -> CelRulesProgram | None:
    """The segments for these rules, or None where even one rule alone will not compile."""
    programs = [
        *rules.variables.values(),
        *rules.conditions,
        *(p for outcome in rules.placeholders for p in outcome),
    ]
    if any(_BOUND in p.expression.text for p in programs):
        return None  # a name of the policy's own could clash with a bound one
    writer = _Writer(environment, rules)
    segments = writer.segments(0, len(rules.conditions))
    return None if segments is None else CelRulesProgram(segments, rules)


class _Writer:
    def __init__(self, environment: Any, rules: Rules) -> None:
        self.environment = environment
        self.rules = rules
        self.names = {name: f"{_BOUND}{name}" for name in rules.variables}

    def segments(self, start: int, end: int) -> list[Any] | None:
        """Rules start..end in as few compiled segments as compile (the last one also answers
        the default's placeholders); None when one rule cannot."""
        last = end == len(self.rules.conditions)
        try:
            return [self.compile(start, end, last)]
        except RuntimeError as exc:
            if "recursion" not in str(exc) or end - start <= 1:
                return None
        middle = (start + end) // 2
        first, second = self.segments(start, middle), self.segments(middle, end)
        return None if first is None or second is None else [*first, *second]

    def compile(self, start: int, end: int, last: bool) -> Any:
        conditions = self.rules.conditions[start:end]
        body = self.answer(-1) if last else "[-1, []]"
        for index in reversed(range(start, end)):
            condition = self.text(conditions[index - start].expression)
            body = f"({condition}) ? {self.answer(index)} : {body}"
        used = [*conditions, *(p for i in range(start, end) for p in self.rules.placeholders[i])]
        if last:
            used += self.rules.placeholders[-1]
        for name in reversed(self.order(used)):
            value = self.text(self.rules.variables[name].expression)
            body = f"cel.bind({_BOUND}{name}, ({value}), {body})"
        return _compiled(self.environment, body)

    def answer(self, index: int) -> str:
        values = ", ".join(
            f"({self.text(p.expression)})" for p in _distinct(self.rules.placeholders[index])
        )
        return f"[{index}, [{values}]]"

    def text(self, expression: Expression) -> str:
        """The expression, its variables read from their bound names; as written when it reads
        none (on lines of its own: a `//` comment ends with its line)."""
        if not expression.variables:
            return f"\n{expression.text}\n"
        return _bound(expression, self.names)

    def order(self, programs: Sequence[Program]) -> list[str]:
        """The variables these programs read, directly or not, each after those it reads."""
        order: list[str] = []
        variables: Mapping[str, Program] = self.rules.variables

        def visit(name: str, trail: tuple[str, ...]) -> None:
            if name in order or name in trail or name not in variables:
                return
            for dep in sorted(variables[name].expression.variables):
                visit(dep, (*trail, name))
            order.append(name)

        for program in programs:
            for name in sorted(program.expression.variables):
                visit(name, ())
        return order


@per_load
def _compiled(environment: Any, text: str) -> Any:
    """A segment, compiled once per load for the policies that share it (copies of one
    template, or policies that extend a base and add nothing before its rules)."""
    return environment.compile(text, disable_check=True)


_RENDERED: dict[str, str] = {}  # expression text -> its text with variables bound
_RENDERED_MAX = 8192


def _bound(expression: Expression, names: Mapping[str, str]) -> str:
    """The expression's text with its variables bound: the same for the same text in any
    policy (a policy reads only its own variables, each bound as `hs_var_<name>`), so
    rendered once for all of them."""
    found = _RENDERED.get(expression.text)
    if found is None:
        found = render(expression.tree, names)
        if len(_RENDERED) < _RENDERED_MAX:
            _RENDERED[expression.text] = found
    return found


def _distinct(programs: Sequence[Program]) -> list[Program]:
    """The first of `programs` for each distinct expression text: a placeholder written in
    every locale's reply (`{{ request.requester.name }}`) is computed once."""
    first: dict[str, Program] = {}
    for program in programs:
        first.setdefault(program.expression.text, program)
    return list(first.values())


def _positions(programs: Sequence[Program]) -> list[int]:
    """For each of `programs`, where its value is among those of `_distinct(programs)`."""
    texts = [p.expression.text for p in _distinct(programs)]
    return [texts.index(p.expression.text) for p in programs]
