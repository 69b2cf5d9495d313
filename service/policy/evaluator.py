"""evaluate(policy set, policy name, request, now) -> Decision. Pure, total and deterministic.

Rules are tried in order and the first whose `when` is true decides; otherwise the default
does. A condition that fails (a missing field, a type error) does not match: the failure is
reported in `errors`, and with `on_error: default` evaluation stops there and the default
decides. A template that fails never blocks the decision: the failure is reported, a reply
that cannot be rendered is left out (null), a rationale falls back to its template text, and
an output becomes null.
"""

from __future__ import annotations

import functools
import hashlib
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from service.policy.alternatives import alternatives
from service.policy.cel import EvalError, Value, to_json
from service.policy.compiled import CompiledOutcome, CompiledPolicy, PolicySet
from service.policy.deciding import first_match, rule_by_rule
from service.policy.decision import (
    Decision,
    PolicyRef,
    Reply,
    RuleError,
    RuleTrace,
    Trace,
    VariableTrace,
)
from service.policy.engines import Program, Scope
from service.policy.request import ConnectionRequest
from service.policy.wording import NOTHING_KNOWN, choose_locale

__all__ = ["decision_id", "derived_id", "evaluate"]

_NAMESPACE = uuid.UUID("6f0c5e0a-3c2e-4d59-9d38-2b1f8f2f6a11")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def decision_id(
    policy_set: PolicySet,
    policy: str,
    request: ConnectionRequest,
    now: datetime,
    locale: str | None,
) -> str:
    """A UUID derived from everything that determines the decision, so replays are identical.

    Name-based with SHA-1 (version 5) in `_NAMESPACE`; the name is the revision, the digest,
    the policy name, `now` as microseconds since the epoch (the instant, whatever its UTC
    offset; `now` is aware), the locale and the request's canonical JSON, joined by newlines.
    It runs once per decision, so it hashes bytes, not their hex as `uuid.uuid5` would.
    """
    name = b"\n".join(
        [
            policy.encode(),
            b"%d" % ((now - _EPOCH) // _MICROSECOND),
            (locale or "").encode(),
            msgspec.json.encode(request),
        ]
    )
    hasher = _hasher(policy_set.revision, policy_set.digest).copy()
    hasher.update(name)
    digest = bytearray(hasher.digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 9562 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@functools.lru_cache(maxsize=8)
def _hasher(revision: str | None, digest: str) -> Any:
    """SHA-1 over the namespace, the revision and the digest: where every decision id of one
    policy set starts (a few sets at most are in use at a time, around a reload)."""
    head = b"\n".join([(revision or "").encode(), digest.encode(), b""])
    return hashlib.sha1(_NAMESPACE.bytes + head, usedforsecurity=False)


def derived_id(policy_set: PolicySet, *parts: str) -> str:
    """A UUIDv5 of the policy set's revision and digest and `parts` (e.g. a webhook id), the
    same across releases: a webhook's redelivery during an upgrade keeps its decision id."""
    key = "\n".join([policy_set.revision or "", policy_set.digest, *parts])
    return str(uuid.uuid5(_NAMESPACE, key.encode().hex()))


def evaluate(
    policy_set: PolicySet,
    policy_name: str,
    request: ConnectionRequest,
    *,
    now: datetime,
    locale: str | None = None,
    explain: bool = False,
    identifier: str | None = None,
) -> Decision:
    """Decide. Raises only `UnknownPolicyError`; every other failure is in the decision.

    `identifier`: the decision id when the caller has computed it (else `decision_id()`)."""
    policy = policy_set.get(policy_name)
    now = now.astimezone(UTC)
    scope = policy.scope(request, now)
    errors: list[RuleError] = []
    steps: list[RuleTrace] = []

    rule_id: str | None = None
    outcome = policy.default
    match = None if explain else first_match(policy, scope)  # explain needs every step
    if match is None:
        rule_id, outcome = rule_by_rule(policy, scope, errors, steps)
    elif match.position >= 0:
        rule_id, outcome = policy.rules[match.position].id, policy.rules[match.position].outcome

    known = match.values if match is not None else NOTHING_KNOWN
    rationale, reply, outputs = _render(policy, outcome, rule_id, scope, known, locale, errors)
    return Decision(
        decision=outcome.decision,  # type: ignore[arg-type]
        rule=rule_id,
        rationale=rationale,
        reply=reply,
        outputs=outputs,
        errors=errors,
        policy=PolicyRef(name=policy.name, revision=policy_set.revision, digest=policy_set.digest),
        decision_id=identifier or decision_id(policy_set, policy.name, request, now, locale),
        evaluated_at=now,
        trace=(
            Trace(
                rules=steps,
                variables=_variables(scope),
                alternatives=alternatives(policy, request, now, outcome.decision, locale),
            )
            if explain
            else None
        ),
    )


def _render(
    policy: CompiledPolicy,
    outcome: CompiledOutcome,
    rule_id: str | None,
    scope: Scope,
    known: Mapping[Program, Value],
    locale: str | None,
    errors: list[RuleError],
) -> tuple[str, Reply | None, dict[str, object]]:
    """Render only the deciding outcome's templates (with the placeholder values a rules
    program already `known`); failures go to `errors`."""

    def failed(what: str, exc: EvalError) -> None:
        errors.append(RuleError(rule=rule_id, message=f"{what}: {exc}"))

    try:
        rationale = outcome.rationale.render(scope, known)
    except EvalError as exc:
        failed("rationale", exc)
        rationale = outcome.rationale.source

    reply = None
    chosen = choose_locale(outcome.reply, locale, policy.default_locale)
    if chosen is not None:
        try:
            reply = Reply(locale=chosen, text=outcome.reply[chosen].render(scope, known))
        except EvalError as exc:
            failed(f"reply.{chosen}", exc)

    outputs: dict[str, object] = {}
    for key, template in outcome.outputs.items():
        try:
            outputs[key] = template.render_value(scope, known)
        except EvalError as exc:
            failed(f"outputs.{key}", exc)
            outputs[key] = None
    return rationale, reply, outputs


def _variables(scope: Scope) -> dict[str, VariableTrace]:
    return {
        name: VariableTrace(error=str(value))
        if isinstance(value, EvalError)
        else VariableTrace(value=to_json(value))
        for name, value in sorted(scope.variables().items())
    }
