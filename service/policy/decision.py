"""What an evaluation returns. These Structs are also the body of the HTTP answer."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec

from service.policy.model import Decision as DecisionValue

__all__ = [
    "Alternative",
    "Decision",
    "Instant",
    "PolicyRef",
    "Reply",
    "RuleError",
    "RuleTrace",
    "Trace",
    "VariableTrace",
]


# A moment with its time zone, as every output gives one: `format: date-time` in the schema.
Instant = Annotated[datetime, msgspec.Meta(tz=True)]


class Out(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Output Structs omit optional members that were not set (e.g. `trace`)."""


class Reply(Out, frozen=True, kw_only=True):
    locale: str
    text: str


class RuleError(Out, frozen=True, kw_only=True):
    rule: str | None  # None: the default's templates
    message: str


class PolicyRef(Out, frozen=True, kw_only=True):
    name: str
    revision: str | None  # git commit of the policy directory, when known
    digest: str


class RuleTrace(Out, frozen=True, kw_only=True):
    rule: str
    source: str  # `file:line` where the rule was written: a base's file for inherited rules
    matched: bool
    error: str | None = None


class VariableTrace(Out, frozen=True, kw_only=True):
    value: Any = None
    error: str | None = None


class Alternative(Out, frozen=True, kw_only=True):
    """Another decision the policy reaches from this request with one field changed."""

    decision: DecisionValue
    rule: str | None  # the rule that would decide (None: the default)
    field: str  # the field changed, as `relationship.met_in_person`
    value: Any = None  # its value then (absent: left out)
    hint: str | None = None  # the deciding rule's hint for the requester, in their locale


class Trace(Out, frozen=True, kw_only=True):
    rules: list[RuleTrace]
    variables: dict[str, VariableTrace]
    # For each other decision reachable by changing one field the policy reads.
    alternatives: list[Alternative] = []


class Decision(Out, frozen=True, kw_only=True):
    decision: DecisionValue
    rule: str | None  # None: no rule matched and the default applied
    rationale: str
    reply: Reply | None
    outputs: dict[str, Any]
    errors: list[RuleError]
    policy: PolicyRef
    decision_id: str
    evaluated_at: Instant
    trace: Trace | None = None
