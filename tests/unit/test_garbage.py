"""A decision under the C++ engine leaves no reference cycle behind, failing or not, explained
or not: everything it made is freed by reference counting at once. A cycle waits for the
garbage collector, which a busy worker pays for as pauses (a failing rule used to leave 26
objects in cycles, through the tracebacks its scope kept)."""

from __future__ import annotations

import gc
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pytest

from service.policy import evaluate, load_policies
from service.policy.request import decode_request
from tests.conftest import POLICIES

NOW = datetime(2026, 11, 22, 9, tzinfo=UTC)
FAILING = """\
apiVersion: handshake/v1
kind: ConnectionPolicy
variables:
  bad: request.relationship.shared_employers[3]
rules:
  - {id: r, when: 'variables.bad == "x"', decision: accept, rationale: x}
  - {id: s, when: 'request.requester.has_photo', decision: accept, rationale: y}
default: {decision: ignore, rationale: z}
"""


def cycles_left(decide: Callable[[], object]) -> int:
    gc.collect()
    gc.disable()
    try:
        for _ in range(20):
            decide()
        return gc.collect()
    finally:
        gc.enable()


@pytest.mark.parametrize("explain", [False, True])
def test_a_failing_decision_leaves_no_cycle(tmp_path: Path, explain: bool) -> None:
    (tmp_path / "p.yaml").write_text(FAILING)
    policy_set = load_policies(tmp_path, compare_engines=False)
    request = decode_request(
        b'{"requester": {"name": "a", "has_photo": true},'
        b' "recipient": {"name": "b", "has_photo": true}}'
    )
    decision = evaluate(policy_set, "p", request, now=NOW)
    assert (decision.rule, [e.rule for e in decision.errors]) == ("s", ["r"])
    assert cycles_left(partial(evaluate, policy_set, "p", request, now=NOW, explain=explain)) == 0


@pytest.mark.parametrize("explain", [False, True])
def test_a_bundled_decision_leaves_no_cycle(explain: bool) -> None:
    policy_set = load_policies(POLICIES, compare_engines=False)
    for sample in sorted((POLICIES.parent / "examples" / "requests").glob("*.json")):
        request = decode_request(sample.read_bytes())
        for name in policy_set.policies:
            decide = partial(evaluate, policy_set, name, request, now=NOW, explain=explain)
            assert cycles_left(decide) == 0, (sample.stem, name)
