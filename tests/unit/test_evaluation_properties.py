"""Evaluation is total (always a decision, never an exception) and deterministic."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta, timezone
from functools import cache

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.policy import ConnectionRequest, PolicySet, evaluate, load_policies
from service.policy.engines import DEFAULT_ENGINE, ENGINES
from service.policy.evaluator import _NAMESPACE
from service.policy.model import DECISIONS
from tests.conftest import POLICIES, bundled_policies
from tests.strategies import LOCALES, NOW, REQUESTS


@cache
def bundled(engine: str = DEFAULT_ENGINE) -> PolicySet:
    return bundled_policies(engine)


POLICY_NAMES = st.sampled_from(sorted(bundled().policies))


@pytest.mark.parametrize("engine", ENGINES)
@settings(max_examples=200, deadline=None)
@given(name=POLICY_NAMES, request=REQUESTS, now=NOW, locale=LOCALES, explain=st.booleans())
def test_evaluation_is_total_and_deterministic(
    engine: str,
    name: str,
    request: ConnectionRequest,
    now: datetime,
    locale: str | None,
    explain: bool,
) -> None:
    policy_set = bundled(engine)
    policy = policy_set.policies[name]
    first = evaluate(policy_set, name, request, now=now, locale=locale, explain=explain)

    assert first.decision in DECISIONS
    assert first.rule in {rule.id for rule in policy.rules} | {None}
    if first.rule is None:
        assert first.decision == policy.default.decision
    assert first.evaluated_at == now
    for error in first.errors:
        assert error.message

    # Same input, same output, byte for byte; also after a JSON round trip of the request.
    again = evaluate(policy_set, name, request, now=now, locale=locale, explain=explain)
    assert msgspec.json.encode(again) == msgspec.json.encode(first)
    decoded = msgspec.json.decode(msgspec.json.encode(request), type=ConnectionRequest)
    replayed = evaluate(policy_set, name, decoded, now=now, locale=locale, explain=explain)
    assert msgspec.json.encode(replayed) == msgspec.json.encode(first)


@settings(max_examples=100, deadline=None)
@given(request=REQUESTS, now=NOW)
def test_different_requests_get_different_decision_ids(
    request: ConnectionRequest, now: datetime
) -> None:
    policy_set = bundled()
    other = msgspec.structs.replace(request, id=(request.id or "") + "-other")
    first = evaluate(policy_set, "default", request, now=now)
    second = evaluate(policy_set, "default", other, now=now)
    assert first.decision_id != second.decision_id


@settings(max_examples=100, deadline=None)
@given(request=REQUESTS, now=NOW, locale=LOCALES)
def test_decision_ids_are_the_uuid5_of_what_decided(
    request: ConnectionRequest, now: datetime, locale: str | None
) -> None:
    """The id is hashed and formatted by hand on the hot path; it must stay the standard
    name-based SHA-1 UUID (version 5) of the documented name (docs/adr/0003)."""
    policy_set = bundled()
    decision = evaluate(policy_set, "default", request, now=now, locale=locale)
    micros = (now - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    fields = [policy_set.revision or "", policy_set.digest, "default", str(micros)]
    name = "\n".join([*fields, locale or "", msgspec.json.encode(request).decode()])
    digest = hashlib.sha1(_NAMESPACE.bytes + name.encode()).digest()
    assert decision.decision_id == str(uuid.UUID(bytes=digest[:16], version=5))


@settings(max_examples=50, deadline=None)
@given(request=REQUESTS, now=NOW, hours=st.integers(-23, 23))
def test_the_same_instant_in_another_utc_offset_is_the_same_decision(
    request: ConnectionRequest, now: datetime, hours: int
) -> None:
    policy_set = bundled()
    elsewhere = now.astimezone(timezone(timedelta(hours=hours)))
    first = evaluate(policy_set, "default", request, now=now)
    second = evaluate(policy_set, "default", request, now=elsewhere)
    assert msgspec.json.encode(second) == msgspec.json.encode(first)


@cache
def hostile(engine: str) -> PolicySet:
    return load_policies(POLICIES.parent / "tests" / "cases" / "hostile", engine=engine)


@pytest.mark.parametrize("engine", ENGINES)
@settings(max_examples=200, deadline=None)
@given(request=REQUESTS, now=NOW, locale=LOCALES)
def test_evaluation_is_total_under_a_hostile_policy(
    engine: str, request: ConnectionRequest, now: datetime, locale: str | None
) -> None:
    policy_set = hostile(engine)
    first = evaluate(policy_set, "hostile", request, now=now, locale=locale, explain=True)
    again = evaluate(policy_set, "hostile", request, now=now, locale=locale, explain=True)
    assert msgspec.json.encode(again) == msgspec.json.encode(first)
    assert first.trace is not None
    assert len(first.trace.rules) >= 1
