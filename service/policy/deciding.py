"""Which rule decides: the engine's one-call rules program where it has one and nothing
failed, else the rules one by one. The evaluator, the alternatives and the decision map all
decide through here, so they cannot come to different answers."""

from __future__ import annotations

from service.policy.cel import EvalError, type_name
from service.policy.compiled import CompiledOutcome, CompiledPolicy
from service.policy.decision import RuleError, RuleTrace
from service.policy.engines import Match, Scope

__all__ = ["first_match", "rule_by_rule"]


def first_match(policy: CompiledPolicy, scope: Scope) -> Match | None:
    """The engine's one-call answer, when it has one and nothing failed on the way."""
    if policy.rules_program is None:
        return None
    try:
        return policy.rules_program.first_match(scope)
    except EvalError:
        return None  # go rule by rule, which reports the failure exactly


def rule_by_rule(
    policy: CompiledPolicy,
    scope: Scope,
    errors: list[RuleError],
    steps: list[RuleTrace] | None = None,
) -> tuple[str | None, CompiledOutcome]:
    """Rules in order; the first whose condition is true decides (None: the default).
    Failures go to `errors`, and each rule tried to `steps` when given."""
    for rule in policy.rules:
        try:
            result = scope.run(rule.when)
            if type(result) is not bool:
                raise EvalError(f"condition returned a {type_name(result)}, not a bool")
        except EvalError as exc:
            errors.append(RuleError(rule=rule.id, message=str(exc)))
            if steps is not None:
                steps.append(
                    RuleTrace(rule=rule.id, source=rule.origin, matched=False, error=str(exc))
                )
            if policy.on_error == "default":
                break
            continue
        if steps is not None:
            steps.append(RuleTrace(rule=rule.id, source=rule.origin, matched=result))
        if result:
            return rule.id, rule.outcome
    return None, policy.default
