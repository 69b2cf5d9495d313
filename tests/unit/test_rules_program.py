"""cel-expr-python's one-call rules program gives exactly the rule-by-rule answer.

The evaluator asks the engine for the first matching rule in one call; on any failure it goes
rule by rule, which reports the failure. These tests pin that the shortcut never changes a
decision or hides an error.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from service.policy import ConnectionRequest, evaluate, load_policies
from service.policy.request import Relationship, decode_request
from tests.conftest import POLICIES, bundled_policies

NOW = datetime(2026, 11, 22, 9, tzinfo=UTC)
SAMPLES = sorted((POLICIES.parent / "examples" / "requests").glob("*.json"))


def without_trace(decision: object) -> dict[str, object]:
    data = msgspec.to_builtins(decision)
    data.pop("trace", None)
    return data


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.stem)
def test_the_rules_program_decides_as_rule_by_rule(sample: Path) -> None:
    policy_set = bundled_policies("cel-expr-python")
    request = decode_request(sample.read_bytes())
    for name, policy in policy_set.policies.items():
        assert policy.rules_program is not None, name
        fast = evaluate(policy_set, name, request, now=NOW)
        slow = evaluate(policy_set, name, request, now=NOW, explain=True)  # rule by rule
        assert without_trace(fast) == without_trace(slow), name


def load(tmp_path: Path, rules: str, variables: str = "{}") -> object:
    (tmp_path / "p.yaml").write_text(
        "apiVersion: handshake/v1\nkind: ConnectionPolicy\n"
        f"variables: {variables}\nrules:\n{rules}"
        "default: {decision: ignore, rationale: none matched}\n"
    )
    return load_policies(tmp_path, engine="cel-expr-python")


REQUEST = msgspec.convert(
    {
        "requester": {"name": "Ada", "has_photo": True},
        "recipient": {"name": "Bo", "has_photo": True},
        "attributes": {"xs": list(range(80))},
    },
    ConnectionRequest,
)


def test_a_failure_before_the_match_is_still_reported(tmp_path: Path) -> None:
    policy_set = load(
        tmp_path,
        "  - {id: unguarded, when: 'request.requester.headline == \"x\"', decision: decline,"
        " rationale: r}\n"
        "  - {id: photo, when: 'variables.photo', decision: accept, rationale: r}\n",
        variables="{photo: request.requester.has_photo}",
    )
    decision = evaluate(policy_set, "p", REQUEST, now=NOW)  # type: ignore[arg-type]
    assert (decision.decision, decision.rule) == ("accept", "photo")
    assert [(e.rule, e.message) for e in decision.errors] == [
        ("unguarded", "no such key `headline`")
    ]


def test_the_iteration_budget_is_per_expression_not_per_chain(tmp_path: Path) -> None:
    """80 x 80 = 6,400 iterations a rule: each is within the budget, the chain is not."""
    square = "request.attributes.xs.all(x, request.attributes.xs.all(y, int(x) + int(y) >= 0))"
    policy_set = load(
        tmp_path,
        f"  - {{id: first, when: '!({square})', decision: decline, rationale: r}}\n"
        f"  - {{id: second, when: '{square}', decision: accept, rationale: r}}\n",
    )
    decision = evaluate(policy_set, "p", REQUEST, now=NOW)  # type: ignore[arg-type]
    assert (decision.decision, decision.rule, decision.errors) == ("accept", "second", [])


def test_any_number_of_rules_runs_as_a_rules_program(tmp_path: Path) -> None:
    """Google's parser nests at most 32 levels; 40 rules run in segments, in order."""
    rules = "".join(
        f"  - {{id: r{i}, when: 'variables.n == {i}', decision: accept,"
        f" rationale: 'rule {i} for {{{{ variables.n }}}}'}}\n"
        for i in range(40)
    )
    policy_set = load(tmp_path, rules, variables="{n: request.relationship.mutual_connections}")
    policy = policy_set.get("p")  # type: ignore[attr-defined]
    assert policy.rules_program is not None
    assert len(policy.rules_program.segments) > 1
    for n in (0, 17, 39, 40):  # the first segment, a later one, the last rule, no rule
        request = msgspec.structs.replace(REQUEST, relationship=Relationship(mutual_connections=n))
        match = policy.rules_program.first_match(policy.scope(request, NOW))
        assert match.position == (n if n < 40 else -1)
        fast = evaluate(policy_set, "p", request, now=NOW)  # type: ignore[arg-type]
        slow = evaluate(policy_set, "p", request, now=NOW, explain=True)  # type: ignore[arg-type]
        assert without_trace(fast) == without_trace(slow)
        assert (fast.rule, fast.rationale) == (
            (f"r{n}", f"rule {n} for {n}") if n < 40 else (None, "none matched")
        )


def test_check_says_when_the_rules_cannot_run_as_one_program(tmp_path: Path) -> None:
    """A name of the policy's own that could clash with a bound variable's: rule by rule,
    and a warning saying so (under the C++ engine; cel-python always goes rule by rule)."""
    policy_set = load(
        tmp_path,
        "  - {id: r, when: '[1].exists(hs_var_x, hs_var_x > 0)', decision: accept, rationale: r}\n",
    )
    policy = policy_set.get("p")  # type: ignore[attr-defined]
    assert policy.rules_program is None
    assert [w.message for w in policy_set.warnings] == [  # type: ignore[attr-defined]
        "cel-expr-python cannot run these rules as one program (a rule nests too deeply with "
        "the variables it reads, or a name starts with `hs_var_`): they are decided one by "
        "one, which costs more"
    ]
    decision = evaluate(policy_set, "p", REQUEST, now=NOW)  # type: ignore[arg-type]
    assert (decision.decision, decision.rule) == ("accept", "r")
