"""What would change a decision (service/policy/alternatives.py): the alternatives for the
example requests, and that every alternative, applied, really is decided so."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from service.policy import evaluate
from service.policy.alternatives import _with
from service.policy.request import decode_request
from tests.conftest import POLICIES, bundled_policies

NOW = datetime(2026, 11, 22, 9, tzinfo=UTC)
SAMPLES = sorted((POLICIES.parent / "examples" / "requests").glob("*.json"))


def explained(name: str, policy: str = "default") -> list[tuple[str, str | None, str, object]]:
    request = decode_request(
        (POLICIES.parent / "examples" / "requests" / f"{name}.json").read_bytes()
    )
    decision = evaluate(bundled_policies(), policy, request, now=NOW, explain=True)
    assert decision.trace is not None
    return [(a.decision, a.rule, a.field, a.value) for a in decision.trace.alternatives]


def test_the_examples_alternatives_on_default() -> None:
    assert explained("stranger") == [
        ("accept", "close-tie", "relationship.met_in_person", True),
        ("decline", "personal-tie", "relationship.known_via", "friend"),
        ("ignore", None, "message", "Hello — I'd like to connect."),
    ]
    assert explained("friend") == [("accept", "close-tie", "relationship.known_via", "colleague")]
    assert explained("old-colleague") == [
        ("accept", "my-field", "relationship.worked_together", False),
        ("decline", "personal-tie", "relationship.known_via", "friend"),
    ]


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.stem)
def test_every_alternative_holds(sample: Path) -> None:
    policy_set = bundled_policies()
    request = decode_request(sample.read_bytes())
    for name in policy_set.policies:
        decision = evaluate(policy_set, name, request, now=NOW, explain=True)
        assert decision.trace is not None
        reached = [a.decision for a in decision.trace.alternatives]
        assert decision.decision not in reached, name
        assert len(reached) == len(set(reached)), name
        for alternative in decision.trace.alternatives:
            changed = _with(request, tuple(alternative.field.split(".")), alternative.value)
            msgspec.convert(msgspec.to_builtins(changed), type(request))  # a request one can send
            again = evaluate(policy_set, name, changed, now=NOW)
            assert (again.decision, again.rule) == (alternative.decision, alternative.rule), (
                name,
                alternative,
            )
