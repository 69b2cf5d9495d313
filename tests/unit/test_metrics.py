"""The decision metrics stay bounded at any number of policies: the first
`HANDSHAKE_METRICS_POLICIES` decided have series of their own, the rest share `_other`."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

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


def bucket_counts(metrics: Metrics, name: str) -> dict[float, float]:
    (family,) = [f for f in text_string_to_metric_families(exposition(metrics)) if f.name == name]
    return {float(s.labels["le"]): s.value for s in family.samples if s.name.endswith("_bucket")}


def exposition(metrics: Metrics) -> str:
    return generate_latest(metrics.registry).decode()


def test_evaluation_buckets_resolve_ten_microseconds_to_a_second() -> None:
    decision = evaluate(bundled_policies(), "default", REQUEST, now=NOW)
    metrics = Metrics()
    for seconds in (0.000008, 0.00002, 0.00015, 0.9):
        metrics.decided(decision, seconds)
    counts = bucket_counts(metrics, "handshake_evaluation_duration_seconds")
    assert min(counts) == 1e-05
    assert (counts[1e-05], counts[2.5e-05], counts[0.00025], counts[1.0]) == (1, 2, 3, 4)
    assert counts[0.5] == 3  # 0.9 s is told from the rest below a second, not only by +Inf
    assert len(counts) <= 20  # a series each, per policy: /metrics stays small


def test_each_registry_exports_the_process_and_only_its_own_decisions() -> None:
    first, second = Metrics(), Metrics()
    first.decided(evaluate(bundled_policies(), "default", REQUEST, now=NOW), 0.0001)
    for metrics in (first, second):
        names = {f.name for f in text_string_to_metric_families(exposition(metrics))}
        assert {"process_cpu_seconds", "process_resident_memory_bytes", "python_info"} <= names
        assert {"python_gc_collections", "process_open_fds"} <= names
    assert policy_labels(first) == {"default"}
    assert policy_labels(second) == set()
