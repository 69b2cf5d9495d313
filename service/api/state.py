"""What the handlers of one app share, and the outcome of the last reload."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from service.api.observability import Metrics
from service.policy import PolicySet
from service.policy.decision import Out
from service.settings import Settings

__all__ = ["AppState", "ReloadStatus"]


class ReloadStatus(Out, frozen=True, kw_only=True):
    """The last reload: `ok` (with what is now active) or `failed` (with every problem)."""

    status: Literal["ok", "failed"]
    at: datetime
    revision: str | None = None
    digest: str | None = None
    unchanged: bool = False  # the files changed, the compiled content did not
    problems: list[str] = []

    @classmethod
    def ok(cls, policy_set: PolicySet, *, unchanged: bool = False) -> ReloadStatus:
        return cls(
            status="ok",
            at=datetime.now(UTC),
            revision=policy_set.revision,
            digest=policy_set.digest,
            unchanged=unchanged,
        )


@dataclass
class AppState:
    """`policy_set` is replaced whole on reload, never changed in place: a request reads it
    once and is evaluated entirely against that set."""

    settings: Settings
    policy_set: PolicySet
    metrics: Metrics
    batch_body: Any  # the batch body's type, made for the configured item limit
    last_reload: ReloadStatus | None = field(default=None)
