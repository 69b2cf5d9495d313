"""The pure core: policy files in, decisions out. No web framework, no logging, no environment.

policy_set = load_policies(Path("policies"))
decision = evaluate(policy_set, "default", request, now=now)
"""

from service.policy.compiled import PolicySet
from service.policy.decision import Decision
from service.policy.errors import PolicyError, Problem, UnknownPolicyError
from service.policy.evaluator import evaluate
from service.policy.loader import load_policies
from service.policy.request import ConnectionRequest

__all__ = [
    "ConnectionRequest",
    "Decision",
    "PolicyError",
    "PolicySet",
    "Problem",
    "UnknownPolicyError",
    "evaluate",
    "load_policies",
]
