"""Differential testing: both CEL engines decide alike on generated requests.

For every starter policy (and the deliberately hostile one), the decision, the deciding rule,
the rationale, the reply, the outputs and which rules failed must be the same under
cel-python (the reference) and cel-expr-python (the default).
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from pathlib import Path

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from service.policy import ConnectionRequest, Decision, PolicySet, evaluate, load_policies
from tests.conftest import POLICIES
from tests.strategies import LOCALES, NOW, REQUESTS

HOSTILE = POLICIES.parent / "tests" / "cases" / "hostile"


@cache
def policy_sets(directory: Path) -> tuple[PolicySet, PolicySet]:
    return (
        load_policies(directory, engine="cel-python"),
        load_policies(directory, engine="cel-expr-python"),
    )


def meaning(decision: Decision) -> dict[str, object]:
    """What a decision says, without what may differ by engine (the wording of errors)."""
    return {
        "decision": decision.decision,
        "rule": decision.rule,
        "rationale": decision.rationale,
        "reply": msgspec.to_builtins(decision.reply),
        "outputs": decision.outputs,
        "failed_rules": [error.rule for error in decision.errors],
    }


def assert_same(directory: Path, name: str, request: ConnectionRequest, **kw: object) -> None:
    reference, fast = policy_sets(directory)
    expected = meaning(evaluate(reference, name, request, **kw))  # type: ignore[arg-type]
    assert meaning(evaluate(fast, name, request, **kw)) == expected  # type: ignore[arg-type]


@settings(max_examples=400, deadline=None)
@given(
    name=st.sampled_from(sorted(policy_sets(POLICIES)[0].policies)),
    request=REQUESTS,
    now=NOW,
    locale=LOCALES,
)
def test_starter_policies_decide_alike_under_both_engines(
    name: str, request: ConnectionRequest, now: datetime, locale: str | None
) -> None:
    assert_same(POLICIES, name, request, now=now, locale=locale)


@settings(max_examples=200, deadline=None)
@given(request=REQUESTS, now=NOW, locale=LOCALES)
def test_the_hostile_policy_decides_alike_under_both_engines(
    request: ConnectionRequest, now: datetime, locale: str | None
) -> None:
    assert_same(HOSTILE, "hostile", request, now=now, locale=locale)
