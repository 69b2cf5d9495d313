"""What every route that decides shares: the JSON check, the problem for an invalid body, and
one evaluation with its metrics and its decision log event."""

import functools
import hashlib
import hmac
import logging
import time
from datetime import UTC, datetime
from typing import Any

import structlog
from litestar.plugins.problem_details import ProblemDetailsException

from service.api.auth import caller, policy_for
from service.api.problems import FieldError, problem
from service.api.schemas import EvaluateBody
from service.api.state import AppState
from service.policy import ConnectionRequest, Decision, PolicySet, evaluate
from service.policy.evaluator import decision_id
from service.policy.request import InputError
from service.settings import Settings

__all__ = ["evaluate_body", "invalid_body", "require_json", "timed_evaluation"]


def require_json(content_type: str) -> None:
    """415 unless the body is declared as JSON (`application/json` or `application/*+json`)."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        raise problem(415, f"expected `application/json`, got `{media or 'nothing'}`")


def evaluate_body(state: AppState, body: EvaluateBody, scope: Any) -> Decision:
    """One `POST /evaluate` body, against the set that is active now; raises a 403 problem
    (outside the caller's scopes), then `UnknownPolicyError`, before any work."""
    policy_set = state.policy_set  # one set for the whole evaluation, even during a reload
    name = body.policy or state.settings.default_policy
    policy_for(scope, policy_set, "evaluate", name)
    now = body.now or datetime.now(UTC)
    return timed_evaluation(
        state,
        scope,
        policy_set,
        name,
        body.request,
        now=now,
        locale=body.locale,
        explain=body.explain,
        identifier=decision_id(policy_set, name, body.request, now, body.locale),
    )


def timed_evaluation(
    state: AppState,
    scope: Any,
    policy_set: PolicySet,
    name: str,
    request: ConnectionRequest,
    *,
    now: datetime,
    locale: str | None,
    explain: bool = False,
    identifier: str,
    **context: Any,
) -> Decision:
    """Evaluate, count it, and write the decision log event (one per decision)."""
    structlog.contextvars.bind_contextvars(decision_id=identifier)  # for any fault log
    started = time.perf_counter()
    work = functools.partial(
        evaluate,
        policy_set,
        name,
        request,
        now=now,
        locale=locale,
        explain=explain,
        identifier=identifier,
    )
    decision = work() if state.tracing is None else state.tracing.evaluated(work)
    seconds = time.perf_counter() - started
    if state.decision_log.is_enabled_for(logging.INFO):  # else do not build the event
        state.decision_log.info(
            "decision",
            decision_id=decision.decision_id,
            policy=decision.policy.name,
            revision=decision.policy.revision,
            digest=decision.policy.digest,
            decision=decision.decision,
            rule=decision.rule,
            errors=len(decision.errors),
            latency_ms=round(seconds * 1000, 3),
            caller=caller(scope),
            **context,
            **_personal(state.settings, request),
        )
    # Counted once written: a decision whose event fails is answered with a 500, not given.
    state.metrics.decided(decision, seconds)
    if state.shadow is not None:
        state.shadow.observe(name, request, now, decision)
    if state.capture is not None:
        state.capture.offer(name, request, now, locale)
    return decision


def invalid_body(exc: InputError) -> ProblemDetailsException:
    """A 400 problem naming each offending field, or where the JSON broke."""
    errors = None if exc.at else [FieldError(path=exc.path or "$", message=exc.message)]
    where = f" (line {exc.at[0]}, column {exc.at[1]})" if exc.at else ""
    return problem(400, exc.message + where, errors=errors)


def _personal(settings: Settings, request: ConnectionRequest) -> dict[str, Any]:
    """Who the decision was about: nothing by default; a keyed hash of the requester id
    (`log_requester_hash_key`), or the name and id (`log_personal_data`) when turned on."""
    fields: dict[str, Any] = {}
    requester = request.requester
    if settings.log_requester_hash_key and requester.id:
        key = settings.log_requester_hash_key.encode()
        fields["requester_hash"] = hmac.new(key, requester.id.encode(), hashlib.sha256).hexdigest()
    if settings.log_personal_data:
        fields |= {"requester": requester.name, "requester_id": requester.id}
    return fields
