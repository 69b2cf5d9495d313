"""The load-time memory bound (service/policy/cost.py): it holds for real values, it keeps
what a comprehension builds from its own variable linear, and it refuses the runaways."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings

from service.policy.cel import ITERATION_BUDGET, EvalError, parse
from service.policy.cel.cost import ELEMENT, INPUT_BYTES, SCALAR
from service.policy.cost import EXPRESSION_BUDGET, estimate
from service.policy.engines import get_engine
from service.policy.request import ConnectionRequest, Person, Relationship
from tests.strategies import REQUESTS

PARAMS = {"vip": ["vip", "board"], "greeting": "hello"}
# Expressions that build values from every kind of source the estimate knows.
EXPRESSIONS = [
    "request.message + request.requester.name",
    'request.message.lowerAscii() + "!"',
    "request.relationship.shared_employers.map(e, e + e)",
    'request.relationship.shared_employers.filter(e, e.startsWith("a"))',
    "[request.requester.name, request.recipient.name, params.greeting]",
    '{"a": request.message, "b": params.vip}',
    "request.attributes",
    "request.attributes.map(k, k + k)",
    "string(request.relationship.connected_elsewhere)",
    "request.requester.has_photo ? request.message : params.greeting + params.greeting",
    "params.vip.map(v, request.requester.name + v)",
]


def measured(value: Any) -> float:
    """A value's size in the estimate's terms: UTF-8 bytes, plus ELEMENT per element."""
    if isinstance(value, str):
        return float(len(value.encode()))
    if isinstance(value, bytes):
        return float(len(value))
    if isinstance(value, Mapping):
        return sum(measured(k) + measured(v) + ELEMENT for k, v in value.items())
    if isinstance(value, list | tuple):
        return sum(measured(v) + ELEMENT for v in value)
    return SCALAR


def bound(text: str, variables: Mapping[str, Any] | None = None) -> tuple[float, float]:
    """(the bound on the value's size, the bytes the expression may allocate)."""
    program = get_engine("cel-python").compile(parse(text))
    size, allocated = estimate(program, PARAMS, variables or {})
    return size.total.constant, allocated


@settings(max_examples=60, deadline=None)
@given(REQUESTS)
def test_the_bound_holds_for_real_values(request: ConnectionRequest) -> None:
    engine = get_engine("cel-expr-python")
    scope = engine.scope(request, datetime.now(UTC), engine.prepare(PARAMS), {})
    for text in EXPRESSIONS:
        try:
            value = scope.run(engine.compile(parse(text)))
        except EvalError:
            continue
        assert measured(value) <= bound(text)[0], text


WIDE = "\U0001f91d"  # four bytes in UTF-8: the schema's longest strings at their most bytes


def largest() -> ConnectionRequest:
    """Every typed string and list of the request at its schema's maximum."""
    person = Person(
        id=WIDE * 128,
        name=WIDE * 200,
        headline=WIDE * 300,
        industry=WIDE * 200,
        function=WIDE * 200,
        region=WIDE * 200,
        company=WIDE * 200,
        has_photo=True,
    )
    return ConnectionRequest(
        message=WIDE * 2000,
        requester=person,
        recipient=person,
        relationship=Relationship(
            shared_employers=[WIDE * 200] * 50, connected_elsewhere=["x" * 40] * 20
        ),
        attributes={"big": "a" * 30_000, "list": ["b" * 100] * 200},
    )


def test_the_bound_holds_at_the_schemas_limits() -> None:
    """Where values are as large as the schema lets them be, the bound is still above them."""
    engine = get_engine("cel-expr-python")
    scope = engine.scope(largest(), datetime.now(UTC), engine.prepare(PARAMS), {})
    checked = 0
    for text in EXPRESSIONS:
        try:
            value = scope.run(engine.compile(parse(text)))
        except EvalError:  # `string()` of a list: not in Google's CEL
            continue
        checked += 1
        assert measured(value) <= bound(text)[0], text
    assert checked == len(EXPRESSIONS) - 1


class TestComprehensions:
    """What a body builds from its own variable adds up to the list; the rest, once a step."""

    def test_built_from_the_variable_adds_up_to_the_list(self) -> None:
        _, allocated = bound("request.attributes.tags.map(t, t.lowerAscii() + t.trim())")
        assert allocated < 16 * INPUT_BYTES  # linear in the body (+32 bytes a step), not 10,000x

    def test_built_from_anything_else_counts_once_a_step(self) -> None:
        _, allocated = bound('request.attributes.tags.map(t, request.attributes.s + "!")')
        assert allocated >= ITERATION_BUDGET * INPUT_BYTES
        assert allocated > EXPRESSION_BUDGET

    def test_nothing_built_costs_nothing_however_deep(self) -> None:
        text = "request.attributes.a.exists(x, request.attributes.b.all(y, x != y))"
        assert bound(text)[1] == 0

    def test_typed_lists_are_bounded_by_the_schema(self) -> None:
        _, allocated = bound("request.relationship.shared_employers.map(e, request.message + e)")
        one_step = 8_000 + 800  # the note's 2,000 and an employer's 200 characters, in UTF-8
        assert 50 * one_step <= allocated < 2**20  # 50 items at most, not 10,000

    @pytest.mark.parametrize(
        "text",
        [
            "a.l.map(x, a.l.map(y, a.s + a.s))",
            "a.l.map(x, a.s + a.s)",
            "a.l.all(x, a.l.all(y, size(a.s + a.s) > 0))",  # the issue's: +562 MiB at 70 x 70
            "a.l.filter(x, (a.s + a.s) != x)",
        ],
    )
    def test_the_runaways_exceed_the_budget(self, text: str) -> None:
        assert bound(text.replace("a.", "request.attributes."))[1] > EXPRESSION_BUDGET
