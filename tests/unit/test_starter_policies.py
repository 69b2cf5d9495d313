"""The bundled policies: every suite case passes, and every rule and default is covered."""

from __future__ import annotations

from collections import defaultdict
from functools import cache

import pytest

from service.policy import PolicySet
from service.policy.engines import DEFAULT_ENGINE, ENGINES
from service.policy.model import RESERVED_RULE_ID
from service.policy.suite import LoadedCase, load_suites, run_case
from tests.conftest import POLICIES, bundled_policies


@cache
def bundled(engine: str = DEFAULT_ENGINE) -> tuple[PolicySet, list[LoadedCase]]:
    policy_set = bundled_policies(engine)
    return policy_set, load_suites(POLICIES, policy_set.policies)


@pytest.mark.parametrize("engine", ENGINES)
def test_bundled_policies_compile_without_warnings(engine: str) -> None:
    policy_set, _ = bundled(engine)
    assert policy_set.warnings == ()
    assert {"default", "examples/met-or-worked"} <= set(policy_set.policies)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    "case", bundled()[1], ids=lambda c: f"{c.file.removeprefix(str(POLICIES))}:{c.line}"
)
def test_suite_case(case: LoadedCase, engine: str) -> None:
    """Every suite under each engine: the same policy means the same thing under both."""
    policy_set, _ = bundled(engine)
    assert run_case(policy_set, case).failures == []


def test_every_rule_and_default_is_covered_by_a_case() -> None:
    policy_set, cases = bundled()
    decided: dict[str, set[str]] = defaultdict(set)
    for case in cases:
        decision = run_case(policy_set, case).decision
        assert decision is not None
        decided[case.policy].add(decision.rule or RESERVED_RULE_ID)
    uncovered = {
        name: missing
        for name, policy in policy_set.policies.items()
        if (missing := ({r.id for r in policy.rules} | {RESERVED_RULE_ID}) - decided[name])
    }
    assert uncovered == {}
