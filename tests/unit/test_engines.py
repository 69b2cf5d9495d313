"""Both CEL engines behind the seam: the `has()` guard, lazy variables, conversions, errors.

Every test runs under each engine; where the engines genuinely differ, the test says so.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from service.policy import PolicyError, evaluate, load_policies
from service.policy.cel import ITERATION_BUDGET, CelSyntaxError, EvalError, parse, to_json
from service.policy.engines import ENGINES, Engine, get_engine
from service.policy.request import ConnectionRequest, Person, Relationship

GUARD = 'has(r.photo) && r.photo != ""'


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Engine:
    return get_engine(request.param)


def run(engine: Engine, text: str, **names: Any) -> Any:
    return engine.bind(names).run(engine.compile(parse(text)))


@pytest.mark.parametrize(
    ("data", "expected"),
    [({}, False), ({"photo": ""}, False), ({"photo": "me.png"}, True)],
)
def test_has_guard_on_an_absent_field_is_false_not_an_error(
    engine: Engine, data: dict[str, str], expected: bool
) -> None:
    assert run(engine, GUARD, r=data) is expected


COMPILED_RUNNER = f"""
import celpy
from celpy.adapter import json_to_cel
env = celpy.Environment(runner_class=celpy.CompiledRunner)
try:
    print(env.program(env.compile({GUARD!r})).evaluate({{"r": json_to_cel({{}})}}))
except Exception as exc:
    print("raised", type(exc).__name__)
"""


def test_cel_pythons_compiled_runner_still_gets_the_guard_wrong() -> None:
    """Why the cel-python engine uses the interpreted runner (docs/adr/0002). A separate
    process, because cel-python's parser cache breaks when runner classes are mixed in one
    process. If this fails, cel-python fixed the bug and the choice can be revisited."""
    result = subprocess.run(
        [sys.executable, "-c", COMPILED_RUNNER], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.startswith("raised"), result.stdout + result.stderr


REQUEST = ConnectionRequest(
    requester=Person(name="Ada", has_photo=True), recipient=Person(name="Bo", has_photo=False)
)
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def policy_scope(engine: Engine, variables: dict[str, str], calls: list[str] | None = None) -> Any:
    programs = {name: engine.compile(parse(text)) for name, text in variables.items()}
    return engine.scope(REQUEST, NOW, engine.prepare({"limit": 3}), programs)


def test_variables_are_computed_once_only_when_used_and_in_dependency_order(
    engine: Engine,
) -> None:
    scope = policy_scope(
        engine,
        {
            "name": "request.requester.name",
            "greeting": "'Hi ' + variables.name",
            "unused": "1 / 0",
        },
    )
    assert scope.run(engine.compile(parse("variables.greeting + '!'"))) == "Hi Ada!"
    assert scope.run(engine.compile(parse("variables.name"))) == "Ada"
    assert scope.variables() == {"name": "Ada", "greeting": "Hi Ada"}


def test_a_failing_variable_can_be_absorbed_and_otherwise_fails_with_its_own_error(
    engine: Engine,
) -> None:
    scope = policy_scope(engine, {"broken": "request.requester.headline", "n": "params.limit"})
    assert scope.run(engine.compile(parse("true || variables.broken"))) is True
    with pytest.raises(EvalError, match="no such key `headline`") as caught:
        scope.run(engine.compile(parse("variables.n > 1 && variables.broken == ''")))
    assert caught.value.kind == "missing"
    assert isinstance(scope.variables()["broken"], EvalError)


@pytest.mark.parametrize(
    ("expression", "message", "kind"),
    [
        ("r.missing", "no such key `missing`", "missing"),
        ('1 + "a"', "no matching overload for `+` on (int, string)", "type"),
        ("r.n > 'x'", "no matching overload for `>` on (int, string)", "type"),
        ('"a".matches("(")', "invalid regular expression: missing ): (", "other"),
    ],
)
def test_errors_read_the_same_and_have_the_same_kind(
    engine: Engine, expression: str, message: str, kind: str
) -> None:
    with pytest.raises(EvalError) as caught:
        run(engine, expression, r={"n": 1})
    assert str(caught.value) == message
    assert caught.value.kind == kind


def test_values_come_out_as_plain_python(engine: Engine) -> None:
    value = run(engine, "r", r={"a": [1, 2.5, "x", True], "t": NOW, "skip": None})
    assert value == {"a": [1, 2.5, "x", True], "t": NOW}
    assert run(engine, 'duration("90m")') == timedelta(minutes=90)
    assert to_json(run(engine, "[r.t, duration('1.5s')]", r={"t": NOW})) == [
        "2026-01-02T03:04:05Z",
        "1.5s",
    ]
    assert run(engine, "b'ab'") == b"ab"


def test_string_extensions(engine: Engine) -> None:
    assert run(engine, '"  MiXed ".trim().lowerAscii() + "x".upperAscii()') == "mixedX"


def test_trim_takes_unicode_white_space_only(engine: Engine) -> None:
    """Python's `strip()` also takes U+001C..U+001F; CEL does not (the differential test
    found it: `"\\x1f".trim() != ""` decided differently under the two engines)."""
    assert run(engine, "s.trim()", s="\u3000\x1f a\u00a0\x1c\t") == "\x1f a\u00a0\x1c"


def test_integers_beyond_64_bits_are_doubles_as_in_cel_json(engine: Engine) -> None:
    names = {"a": {"big": 2**70, "huge": 10**400, "small": 5}}
    assert run(engine, "a.big > 1.0e21", **names) is True
    assert run(engine, "a.huge > 1.0e300", **names) is True
    assert run(engine, "a.small == 5", **names) is True


@pytest.mark.parametrize(
    "expression",
    [
        "xs.map(x, xs.map(y, x * y)).size() > 0",  # 100 + 100 x 100 iterations
        "xs.exists(x, xs.exists(y, xs.exists(z, x + y + z < 0)))",
    ],
)
def test_runaway_comprehensions_stop_at_the_iteration_budget(
    engine: Engine, expression: str
) -> None:
    with pytest.raises(EvalError, match="evaluation budget exceeded") as caught:
        run(engine, expression, xs=list(range(100)))
    assert caught.value.kind == "budget"


def test_comprehensions_within_the_budget_run(engine: Engine) -> None:
    assert run(engine, "xs.map(x, x * 2).size()", xs=list(range(ITERATION_BUDGET - 1))) == (
        ITERATION_BUDGET - 1
    )


def test_a_syntax_error_has_a_position() -> None:
    with pytest.raises(CelSyntaxError) as caught:
        parse("a &&\n  (b")
    assert (caught.value.line, caught.value.column) == (2, 4)


def test_unknown_engine_names_the_choices() -> None:
    with pytest.raises(ValueError, match="cel-expr-python, cel-python"):
        get_engine("cel-go")


def write_policy(directory: Path, rules: str) -> None:
    """`p.yaml`: these rules (YAML list items), and a default that ignores."""
    (directory / "p.yaml").write_text(
        "apiVersion: handshake/v1\nkind: ConnectionPolicy\nrules:\n"
        f"{rules}default: {{decision: ignore, rationale: none}}\n"
    )


@pytest.mark.parametrize(
    "person",
    [
        {"name": "a\x00b"},
        {"name": "a", "headline": "\x00"},
        {"name": "a", "company": "x\x00"},
        {"name": "a", "id": "\x00"},
    ],
)
def test_a_request_string_with_u0000_is_refused(person: dict[str, Any]) -> None:
    """The C++ runtime would cut "a\\x00b" to "a": a decision would depend on the engine."""
    with pytest.raises(ValueError, match="U\\+0000 is not allowed"):
        Person(has_photo=True, **person)
    me = Person(name="Bo", has_photo=True)
    for fields in (
        {"message": "hi\x00"},
        {"attributes": {"k": ["ok", {"deep": "\x00"}]}},
        {"attributes": {"k\x00": 1}},
    ):
        with pytest.raises(ValueError, match="U\\+0000 is not allowed"):
            ConnectionRequest(requester=me, recipient=me, **fields)
    with pytest.raises(ValueError, match="U\\+0000 is not allowed"):
        Relationship(shared_employers=["a", "b\x00"])


@pytest.mark.parametrize(
    ("literal", "refused"),
    [
        ('"\\u0000"', True),
        ('"a\\x00"', True),
        ('b"a\\000b"', True),
        ('{"tag\\U00000000x": 1}', True),
        ('r"\\u0000"', False),  # raw: the text backslash-u-0000
        ('"\\\\u0000"', False),  # an escaped backslash, then text
        ('"\\u00001"', True),
    ],
)
def test_a_literal_with_u0000_is_a_load_error_under_either_engine(
    tmp_path: Path, literal: str, refused: bool
) -> None:
    """Computed values are given back to the C++ runtime as data, which would cut them: no
    literal may hold U+0000, so no expression can compute one."""
    write_policy(
        tmp_path, f"  - {{id: r, when: 'size({literal}) > 0', decision: accept, rationale: x}}\n"
    )
    for engine in ENGINES:
        if refused:
            with pytest.raises(PolicyError) as failed:
                load_policies(tmp_path, engine=engine)
            (problem,) = failed.value.problems
            assert problem.message == "a literal holds U+0000, at which Google's CEL cuts strings"
            assert (problem.line, problem.column) == (4, 25 + literal.startswith("{"))
        else:
            load_policies(tmp_path, engine=engine)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    ("params", "message"),
    [
        ('{m: {"tag\\0x": 1}}', "a string holds U+0000"),
        ("{m: {1: a}}", "map keys must be strings, not `1`"),
        ("{m: [{true: a}]}", "map keys must be strings, not `true`"),
    ],
)
def test_params_the_engines_would_read_apart_are_a_load_error_under_either(
    tmp_path: Path, engine: str, params: str, message: str
) -> None:
    (tmp_path / "p.yaml").write_text(
        f"apiVersion: handshake/v1\nkind: ConnectionPolicy\nparams: {params}\n"
        "rules:\n  - {id: r, when: 'size(params.m) > 0', decision: accept, rationale: x}\n"
        "default: {decision: ignore, rationale: none}\n"
    )
    with pytest.raises(PolicyError) as raised:
        load_policies(tmp_path, engine=engine)
    assert f"p.yaml:3:9: $.params: unsupported value: {message}" in str(raised.value)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_runaway_rule_fails_with_the_budget_and_the_decision_says_so(
    tmp_path: Path, engine: str
) -> None:
    """Nested comprehensions over a large input list: 10,000 iterations, then the rule fails
    (it does not match), the next rule decides, and `errors` names the rule and the budget."""
    write_policy(
        tmp_path,
        "  - id: runaway\n"
        "    when: >-\n"
        "      has(request.attributes.xs) &&\n"
        "      request.attributes.xs.all(x, request.attributes.xs.all(y, int(x) + int(y) >= 0))\n"
        "    decision: decline\n    rationale: r\n"
        "  - {id: photo, when: request.requester.has_photo, decision: accept, rationale: r}\n",
    )
    request = ConnectionRequest(
        requester=Person(name="Ada", has_photo=True),
        recipient=Person(name="Bo", has_photo=True),
        attributes={"xs": list(range(5_000))},  # 25,000,000 iterations if nothing stopped it
    )
    decision = evaluate(load_policies(tmp_path, engine=engine), "p", request, now=NOW)
    assert (decision.decision, decision.rule) == ("accept", "photo")
    assert [(e.rule, e.message) for e in decision.errors] == [
        ("runaway", "evaluation budget exceeded: more than 10,000 comprehension iterations")
    ]
