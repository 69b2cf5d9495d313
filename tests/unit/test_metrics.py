"""The decision metrics stay bounded at any number of policies: the first
`HANDSHAKE_METRICS_POLICIES` decided have series of their own, the rest share `_other`."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import generate_latest

from service.api.observability import Metrics
from service.policy import evaluate
from service.policy.request import decode_request
from tests.conftest import POLICIES, bundled_policies

NOW = datetime(2026, 11, 22, 9, tzinfo=UTC)
REQUEST = decode_request((POLICIES.parent / "examples" / "requests" / "stranger.json").read_bytes())
NAMES = ["default", "examples/my-field", "examples/who-is-this", "examples/near-limit"]


def policy_labels(metrics: Metrics) -> set[str]:
    text = generate_latest(metrics.registry).decode()
    found = set()
    for line in text.splitlines():
        if line.startswith("handshake_decisions_total{"):
            found.add(line.split('policy="', 1)[1].split('"', 1)[0])
    return found


def test_the_first_policies_decided_are_named_and_the_rest_share_other() -> None:
    policy_set = bundled_policies()
    metrics = Metrics(policies=2)
    for name in [*NAMES, *NAMES]:
        metrics.decided(evaluate(policy_set, name, REQUEST, now=NOW), 0.001)
    assert policy_labels(metrics) == {"default", "examples/my-field", "_other"}


def test_zero_names_none() -> None:
    policy_set = bundled_policies()
    metrics = Metrics(policies=0)
    for name in NAMES:
        metrics.decided(evaluate(policy_set, name, REQUEST, now=NOW), 0.001)
    assert policy_labels(metrics) == {"_other"}
