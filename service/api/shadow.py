"""Shadow evaluation: every live decision made again under a candidate policy set, after the
answer has gone.

`HANDSHAKE_SHADOW_POLICIES` names the candidate (a directory: e.g. a second git-sync checkout
of a branch). It is loaded, watched and reloaded like the live set, and never answers anyone.
A live decision leaves the request to be decided under the candidate after the answers
(afterwards.py), so the caller's bytes and decision id do not change and no request waits
for a shadow decision (they share the worker's CPU). A disagreement (another decision, or no
such policy in the candidate) is counted and logged with both rules and revisions, never
with personal data. Past `MAX_WAITING` requests waiting (a candidate far slower than the
live set), the newest are dropped and counted.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

import structlog
from prometheus_client import Counter, Gauge

from service.api.afterwards import Afterwards
from service.api.observability import Metrics
from service.policy import ConnectionRequest, Decision, PolicyError, PolicySet
from service.policy.alternatives import decide
from service.policy.decision import Instant, Out

__all__ = ["MAX_WAITING", "Shadow", "ShadowStatus"]

MAX_WAITING = 10_000
UNKNOWN_POLICY = "unknown-policy"  # `to` when the candidate has no such policy


class ShadowStatus(Out, frozen=True, kw_only=True):
    """The candidate set: what is loaded (if anything) and how its last load went."""

    directory: str
    policies: int | None = None
    revision: str | None = None
    digest: str | None = None
    loaded_at: Instant | None = None
    last_load: Literal["ok", "failed"]
    problems: list[str] = []


@dataclass
class Shadow:
    directory: Path
    loader: Callable[[PolicySet | None], PolicySet]  # the set loaded before -> the new one
    metrics: Metrics
    policy_set: PolicySet | None = None
    status: ShadowStatus | None = None
    _afterwards: Afterwards = field(default_factory=lambda: Afterwards(MAX_WAITING))

    def __post_init__(self) -> None:
        registry = self.metrics.registry
        self.disagreements = Counter(
            "handshake_shadow_disagreements",
            "Live decisions the candidate set decides otherwise (to: its decision, or "
            "unknown-policy)",
            ["policy", "from", "to"],
            registry=registry,
        )
        self.outcomes = Counter(
            "handshake_shadow_decisions",
            "Live decisions made again under the candidate set, by result "
            "(same, different, dropped: the queue was full, error)",
            ["result"],
            registry=registry,
        )
        self.info = Gauge(
            "handshake_shadow_policy_set_info",
            "The candidate policy set (value 1), labelled with its revision and digest",
            ["revision", "digest"],
            registry=registry,
        )
        self.log = structlog.get_logger("handshake.shadow").bind()

    def load(self, reason: str) -> bool:
        """Load the candidate again (blocking); a failure keeps the one loaded before."""
        previous = self.policy_set
        try:
            loaded = self.loader(previous)
        except PolicyError as exc:
            problems = [str(p) for p in exc.problems]
            self.status = self._status("failed", problems)
            self.log.error("shadow_load_failed", reason=reason, problems=problems)
            return False
        except Exception as exc:  # never the live set's concern
            self.log.exception("shadow_load_crashed", reason=reason)
            self.status = self._status("failed", [f"internal error: {exc!r}"[:500]])
            return False
        self.policy_set = loaded
        self.status = self._status("ok", [])
        self.info.clear()
        self.info.labels(loaded.revision or "", loaded.digest).set(1)
        if previous is None or previous.digest != loaded.digest:
            self.log.info(
                "shadow_loaded",
                reason=reason,
                revision=loaded.revision,
                digest=loaded.digest,
                policies=len(loaded.policies),
            )
        return True

    def observe(
        self,
        name: str,
        request: ConnectionRequest,
        now: datetime,
        live: Decision,
    ) -> None:
        """Queue a live decision to be made again; on the event loop, after the answers."""
        if not self._afterwards.later(functools.partial(self._decide, name, request, now, live)):
            self.metrics.child(self.outcomes, "dropped").inc()

    def _decide(self, name: str, request: ConnectionRequest, now: datetime, live: Decision) -> None:
        candidate = self.policy_set
        if candidate is None:
            return
        try:
            policy = candidate.policies.get(name)
            if policy is not None:  # which rule decides is all it needs: no texts
                rule, to, _ = decide(policy, request, now)
            else:
                rule, to = None, UNKNOWN_POLICY
        except Exception:
            self.log.exception("shadow_evaluation_failed", decision_id=live.decision_id)
            self.metrics.child(self.outcomes, "error").inc()
            return
        if to == live.decision:
            self.metrics.child(self.outcomes, "same").inc()
            return
        self.metrics.child(self.outcomes, "different").inc()
        label = self.metrics.policy_label(name)
        self.metrics.child(self.disagreements, label, live.decision, to).inc()
        self.log.info(
            "shadow_disagreement",
            decision_id=live.decision_id,
            policy=name,
            decision=live.decision,
            rule=live.rule,
            revision=live.policy.revision,
            digest=live.policy.digest,
            shadow_decision=to,
            shadow_rule=rule,
            shadow_revision=candidate.revision,
            shadow_digest=candidate.digest,
        )

    def _status(self, outcome: Literal["ok", "failed"], problems: list[str]) -> ShadowStatus:
        loaded = self.policy_set
        return ShadowStatus(
            directory=str(self.directory),
            policies=len(loaded.policies) if loaded else None,
            revision=loaded.revision if loaded else None,
            digest=loaded.digest if loaded else None,
            loaded_at=loaded.loaded_at if loaded else None,
            last_load=outcome,
            problems=problems,
        )
