"""Wire Structs of the HTTP API, kept apart from the policy model.

The request (`ConnectionRequest`) and the answer (`Decision`) are the core's own Structs: the
HTTP contract is exactly what the core takes and gives.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from service.api.shadow import ShadowStatus
from service.api.state import ReloadStatus, TokensStatus
from service.policy.decision import Decision, Instant, Out
from service.policy.model import Locale, PolicyName
from service.policy.request import (
    Base,
    ConnectionRequest,
    Timestamp,
    check_timestamps,
)

__all__ = [
    "BatchItem",
    "BatchResult",
    "EvaluateBody",
    "Health",
    "PolicyDetail",
    "PolicyList",
    "PolicySummary",
    "RuleSummary",
    "batch_body",
]


class EvaluateBody(Base, frozen=True, kw_only=True):
    """The body of `POST /evaluate`."""

    policy: PolicyName | None = None
    request: ConnectionRequest
    locale: Locale | None = None
    now: Timestamp | None = None
    explain: bool = False

    def __post_init__(self) -> None:
        check_timestamps(self.now)


def batch_body(max_items: int) -> type[msgspec.Struct]:
    """`POST /evaluate/batch`'s body, for a configured number of items, each the body of
    `POST /evaluate`."""
    items = Annotated[list[EvaluateBody], msgspec.Meta(min_length=1, max_length=max_items)]
    return msgspec.defstruct(
        "BatchBody", [("items", items)], frozen=True, kw_only=True, forbid_unknown_fields=True
    )


class BatchProblem(Out, frozen=True, kw_only=True):
    code: str
    detail: str


class BatchItem(Out, frozen=True, kw_only=True):
    index: int
    status: Literal[200, 403, 404]
    decision: Decision | None = None
    problem: BatchProblem | None = None


class BatchResult(Out, frozen=True, kw_only=True):
    decided: int
    failed: int
    results: list[BatchItem]


class RuleSummary(Out, frozen=True, kw_only=True):
    id: str
    decision: str
    description: str = ""
    source: str  # `file:line` where the rule was written (a base's file for inherited rules)


class PolicySummary(Out, frozen=True, kw_only=True):
    name: str
    description: str
    rules: list[RuleSummary]
    default: str


class PolicySetInfo(Out, frozen=True, kw_only=True):
    revision: str | None
    digest: str
    loaded_at: Instant


class PolicyList(PolicySetInfo, frozen=True, kw_only=True):
    last_reload: ReloadStatus | None = None
    shadow: ShadowStatus | None = None  # HANDSHAKE_SHADOW_POLICIES: the candidate set
    policies: list[PolicySummary]


class PolicyDetail(PolicySetInfo, frozen=True, kw_only=True):
    name: str
    file: str
    description: str
    extends: list[str]  # the bases, nearest first
    default_locale: str
    on_error: str
    params: dict[str, Any]
    variables: dict[str, str]
    rules: list[RuleSummary]
    default: str


class Health(Out, frozen=True, kw_only=True):
    status: Literal["ok"]
    policies: int | None = None
    revision: str | None = None
    digest: str | None = None
    loaded_at: Instant | None = None
    last_reload: ReloadStatus | None = None  # a failed reload: the active set still serves
    tokens: TokensStatus | None = None  # a failed reading: the last good tokens stay in force
    shadow: ShadowStatus | None = None  # HANDSHAKE_SHADOW_POLICIES: the candidate set
