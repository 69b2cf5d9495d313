"""What the handlers of one app share, and the outcome of the last reload."""

from __future__ import annotations

import fnmatch
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import structlog

from service.api.auth import Tokens
from service.api.capture import Capture
from service.api.observability import Metrics
from service.api.scopes import Scopes
from service.api.shadow import Shadow
from service.api.tracing import Tracing
from service.policy import PolicyError, PolicySet, Problem, load_policies
from service.policy.decision import Instant, Out
from service.policy.loader import policy_names
from service.revision import policy_revision
from service.settings import Settings
from service.webhook_sources import Webhooks, load_webhooks

__all__ = [
    "Active",
    "AppState",
    "ReloadStatus",
    "TokensStatus",
    "load_active",
    "load_candidate",
    "webhooks_path",
]


class ReloadStatus(Out, frozen=True, kw_only=True):
    """The last reload: `ok` (with what is now active) or `failed` (with every problem)."""

    status: Literal["ok", "failed"]
    at: Instant
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


class TokensStatus(Out, frozen=True, kw_only=True):
    """The last reading of the API tokens (authentication on): `failed` keeps the tokens of
    the last good reading in force, and says why (never a token)."""

    status: Literal["ok", "failed"]
    at: Instant
    problem: str | None = None


def webhooks_path(settings: Settings) -> Path | None:
    """The webhook sources file: the setting, else `webhooks.yaml` in the policy directory."""
    if settings.webhooks:
        return Path(settings.webhooks)
    default = Path(settings.policies) / "webhooks.yaml"
    return default if default.is_file() else None


def load_active(settings: Settings, previous: PolicySet | None = None) -> Active:
    """Load and compile the policies and webhook sources; raises `PolicyError` with every
    problem of both. `previous`: the set in force, whose unchanged policies are kept as they
    are (only what changed is compiled again)."""
    directory = Path(settings.policies)
    policy_set = _load_set(directory, settings, previous, settings.revision)
    path = webhooks_path(settings)
    webhooks = Webhooks()
    if path is not None:
        elsewhere: Collection[str] = ()
        if settings.serve_only is not None:
            elsewhere = set(policy_names(directory)) - policy_set.policies.keys()
        webhooks = load_webhooks(
            path,
            policy_set.policies,
            policy_set.engine,
            settings.default_policy,
            elsewhere=elsewhere,
        )
    return Active(policy_set, webhooks)


def load_candidate(settings: Settings, previous: PolicySet | None = None) -> PolicySet:
    """The shadow's candidate set (HANDSHAKE_SHADOW_POLICIES), loaded as the live one is."""
    assert settings.shadow_policies is not None
    return _load_set(Path(settings.shadow_policies), settings, previous)


def _load_set(
    directory: Path, settings: Settings, previous: PolicySet | None, revision: str | None = None
) -> PolicySet:
    return load_policies(
        directory,
        revision=policy_revision(directory, revision),
        engine=settings.cel_engine,
        compare_engines=False,  # a `check` concern, not a cost of every start-up and reload
        previous=previous,
        only=served(directory, settings.serve_only),
    )


def served(directory: Path, patterns: str | None) -> list[str] | None:
    """The policies `HANDSHAKE_SERVE_ONLY` names (None: all); a pattern that matches none is
    a load problem (a typo would otherwise serve nothing, quietly)."""
    if patterns is None:
        return None
    names = policy_names(directory) if directory.is_dir() else []
    wanted = [p.strip() for p in patterns.split(",") if p.strip()]
    unmatched = [p for p in wanted if not fnmatch.filter(names, p)]
    if unmatched or not wanted:
        message = f"HANDSHAKE_SERVE_ONLY: no policy matches `{', '.join(unmatched) or patterns}`"
        raise PolicyError([Problem(file=str(directory), message=message)])
    return [name for name in names if any(fnmatch.fnmatchcase(name, p) for p in wanted)]


@dataclass(frozen=True)
class Active:
    """What requests are evaluated against; replaced whole on reload."""

    policy_set: PolicySet
    webhooks: Webhooks


@dataclass
class AppState:
    """`active` is replaced whole on reload, never changed in place: a request reads it once
    and is evaluated entirely against that set."""

    settings: Settings
    active: Active
    metrics: Metrics
    batch_body: Any  # the batch body's type, made for the configured item limit
    tokens: Tokens = field(default_factory=Tokens)
    last_reload: ReloadStatus | None = field(default=None)
    tokens_status: TokensStatus | None = None  # None: authentication is off
    shadow: Shadow | None = None  # HANDSHAKE_SHADOW_POLICIES
    capture: Capture | None = None  # HANDSHAKE_CAPTURE_PATH
    tracing: Tracing | None = None  # OTEL_* asks for traces
    source_scopes: dict[str, Scopes] | None = None  # per webhook source; None: no limit
    draining: bool = False  # SIGTERM received: not ready, finishing what was accepted
    # One bound logger for decision events, made once: structlog's module-level proxy would
    # build a new one on every call (cheap, but it is once per decision).
    decision_log: Any = field(
        default_factory=lambda: structlog.get_logger("handshake.decisions").bind()
    )

    @property
    def policy_set(self) -> PolicySet:
        return self.active.policy_set
