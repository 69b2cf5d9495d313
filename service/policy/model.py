"""The policy file format as msgspec Structs: the single source of truth for its schema.

`handshake schema` prints the JSON Schema generated from `PolicyDocument`, for editors.
Strings that hold CEL (`when`, variables) and templates (`rationale`, `reply`, `outputs`) are
plain strings here; the compiler turns them into programs.
"""

from __future__ import annotations

import re
import typing
from typing import Annotated, Any, Literal

import msgspec

from service.policy.request import Base

__all__ = [
    "DECISIONS",
    "POLICY_NAME",
    "RESERVED_RULE_ID",
    "RULE_LISTS",
    "Decision",
    "Outcome",
    "PolicyDocument",
    "Rule",
]

Decision = Literal["accept", "decline", "ignore", "defer"]
DECISIONS: tuple[str, ...] = typing.get_args(Decision)

# Where rules may be written, in evaluation order around a base's rules.
RULE_LISTS = ("rules_before", "rules", "rules_after")

# Test suites say `rule: default` when they expect the default to decide.
RESERVED_RULE_ID = "default"

Identifier = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=64, description="A CEL identifier"
    ),
]
RuleId = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        max_length=64,
        description="Unique within the policy; `default` is reserved",
    ),
]
Locale = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$",
        description="A BCP 47 language tag such as `en` or `pt-BR`",
    ),
]
Expression = Annotated[str, msgspec.Meta(min_length=1, description="A CEL expression")]
Template = Annotated[
    str, msgspec.Meta(description="Text with `{{ <CEL expression> }}` placeholders")
]


class Outcome(Base, frozen=True, kw_only=True):
    """What a decision says: shared by rules and the default."""

    decision: Decision
    rationale: Template
    reply: dict[Locale, Template] = {}
    outputs: dict[Identifier, Template] = {}


Hint = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=300,
        description="What the requester could do so that this rule decides; plain text",
    ),
]


class Rule(Outcome, frozen=True, kw_only=True):
    id: RuleId
    description: str = ""
    when: Expression | bool  # `when: true` is written unquoted in YAML
    # Shown to a requester by an integration, with an explained decision's alternatives.
    hint: dict[Locale, Hint] = {}


# A policy's name is its path under the policy directory, without `.yaml`: segments of letters,
# digits, `.`, `_` and `-`, each starting with a letter or digit (no `..`, no leading `/`).
POLICY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")
PolicyName = Annotated[
    str,
    msgspec.Meta(
        pattern=POLICY_NAME.pattern,
        max_length=200,
        description="A policy name: its path under the policy directory without `.yaml`",
    ),
]


class PolicyDocument(Base, frozen=True, kw_only=True):
    """A policy file. One that `extends` a base takes the base's variables, rules, wording and
    default, merges its own `params` and `variables` over the base's, and may add rules before
    and after the base's (`rules_before`, `rules_after`) and its own `default`."""

    api_version: Literal["handshake/v1"] = msgspec.field(name="apiVersion")
    kind: Literal["ConnectionPolicy"]
    description: str = ""
    extends: PolicyName | None = None
    default_locale: Locale | None = None  # else the base's, else `en`
    on_error: Literal["skip", "default"] | None = None  # else the base's, else `skip`
    params: dict[Identifier, Any] = {}
    variables: dict[Identifier, Expression | bool] = {}
    rules: list[Rule] = []
    rules_before: list[Rule] = []
    rules_after: list[Rule] = []
    default: Outcome | None = None  # required unless the policy extends another
