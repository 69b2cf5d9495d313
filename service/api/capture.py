"""Privacy-safe capture: sampled live requests as JSON lines for `handshake diff --requests`.

`HANDSHAKE_CAPTURE_PATH` turns it on; `HANDSHAKE_CAPTURE_SAMPLE` is the share of decisions
kept. A captured request is built field by field from what this module knows to be safe, so a
field added to the request later is left out until someone decides how to keep it:
- names, ids, first names, employers and companies become a keyed hash
  (`HANDSHAKE_CAPTURE_KEY`): the same person or company gets the same value in every line, so
  comparisons between fields still hold, but nobody without the key can tell who;
- the note and the headline keep only what a policy can read of them without the words: empty
  or not, and their length (the text becomes as many `x`);
- `attributes` keep only the keys `HANDSHAKE_CAPTURE_ATTRIBUTES` names;
- flags, counts, timestamps, categories (industry, function, region, how they know each
  other) and the earlier decision are kept as they are. The categories are short texts the
  requests' sender fills in: if yours can hold more than a category, leave capture off.

A line is made and written after the answers (afterwards.py), as one `write` to a file opened
for appending, so workers that share the file do not interleave lines. Past
`HANDSHAKE_CAPTURE_MAX_BYTES`, nothing more is written.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import random
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
from prometheus_client import Counter

from service.api.afterwards import Afterwards
from service.api.observability import Metrics
from service.policy import ConnectionRequest
from service.policy.request import Person, Previous, Relationship
from service.settings import Settings, SettingsError, is_placeholder

__all__ = ["Capture", "pseudonymous"]

MIN_KEY_LENGTH = 16
MAX_WAITING = 1_000  # lines waiting to be written after the answers


@dataclass
class Capture:
    path: str
    key: bytes
    sample: float
    attributes: frozenset[str]
    max_bytes: int
    metrics: Metrics
    _fd: int = field(init=False)
    _random: random.Random = field(default_factory=random.Random)
    _afterwards: Afterwards = field(default_factory=lambda: Afterwards(MAX_WAITING))

    def __post_init__(self) -> None:
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise SettingsError(f"HANDSHAKE_CAPTURE_PATH: cannot open: {exc.strerror}") from None
        self.lines = Counter(
            "handshake_captured_requests",
            "Requests written to the capture file, or not (full: past its size limit; "
            "failed: the write failed; dropped: too many waiting to be written)",
            ["result"],
            registry=self.metrics.registry,
        )

    @classmethod
    def from_settings(cls, settings: Settings, metrics: Metrics) -> Capture | None:
        if settings.capture_path is None:
            return None
        key = settings.capture_key or ""
        if len(key) < MIN_KEY_LENGTH or is_placeholder(key):
            raise SettingsError(
                f"HANDSHAKE_CAPTURE_KEY: capture needs a secret key of at least "
                f"{MIN_KEY_LENGTH} characters, so that its hashes cannot be reversed by guessing"
            )
        allowed = frozenset(a.strip() for a in (settings.capture_attributes or "").split(","))
        return cls(
            path=settings.capture_path,
            key=key.encode(),
            sample=settings.capture_sample,
            attributes=allowed - {""},
            max_bytes=settings.capture_max_bytes,
            metrics=metrics,
        )

    def offer(
        self, policy: str, request: ConnectionRequest, now: datetime, locale: str | None
    ) -> None:
        """Write the request, pseudonymous, after the answers, if this decision is sampled."""
        if self._random.random() >= self.sample:
            return
        write = functools.partial(self._write, policy, request, now, locale)
        if not self._afterwards.later(write):
            self.metrics.child(self.lines, "dropped").inc()

    def _write(
        self, policy: str, request: ConnectionRequest, now: datetime, locale: str | None
    ) -> None:
        body: dict[str, Any] = {
            "policy": policy,
            "now": now,
            "request": pseudonymous(request, self.key, self.attributes),
        }
        if locale:
            body["locale"] = locale
        line = msgspec.json.encode(body) + b"\n"
        try:
            if os.fstat(self._fd).st_size + len(line) > self.max_bytes:
                self.metrics.child(self.lines, "full").inc()
                return
            os.write(self._fd, line)
        except OSError:
            self.metrics.child(self.lines, "failed").inc()
            return
        self.metrics.child(self.lines, "written").inc()

    def close(self) -> None:
        os.close(self._fd)


def pseudonymous(
    request: ConnectionRequest, key: bytes, attributes: frozenset[str]
) -> dict[str, Any]:
    """The request as a JSON object with no personal data (see the module's docstring)."""

    def hashed(kind: str, value: str) -> str:
        digest = hmac.new(key, f"{kind}\0{value}".encode(), hashlib.sha256).hexdigest()
        return f"{kind}-{digest[:20]}"

    def person(who: Person) -> dict[str, Any]:
        kept = {
            "name": hashed("person", who.name),
            "has_photo": who.has_photo,
            "industry": who.industry,
            "function": who.function,
            "region": who.region,
            "connection_count": who.connection_count,
            "connection_limit": who.connection_limit,
            "last_active_at": who.last_active_at,
        }
        if who.id is not None:
            kept["id"] = hashed("id", who.id)
        if who.first_name is not None:
            kept["first_name"] = hashed("first", who.first_name)
        if who.company is not None:
            kept["company"] = hashed("company", who.company)
        if who.headline is not None:
            kept["headline"] = _shape(who.headline)
        return _present(kept)

    def relationship(tie: Relationship) -> dict[str, Any]:
        return _present(
            {
                "met_in_person": tie.met_in_person,
                "worked_together": tie.worked_together,
                "shared_employers": [hashed("company", e) for e in tie.shared_employers],
                "mutual_connections": tie.mutual_connections,
                "last_interaction_at": tie.last_interaction_at,
                "known_via": tie.known_via,
                "connected_elsewhere": list(tie.connected_elsewhere),
                "declined_at": tie.declined_at,
            }
        )

    def previous(earlier: Previous) -> dict[str, Any]:
        return {  # a rule id is the policy's, not the person's
            "decision": earlier.decision,
            "decided_at": earlier.decided_at,
            "rule": earlier.rule,
            "followed_up": earlier.followed_up,
        }

    captured: dict[str, Any] = {
        "platform": request.platform,
        "received_at": request.received_at,
        "message": _shape(request.message),
        "requester": person(request.requester),
        "recipient": person(request.recipient),
        "relationship": relationship(request.relationship),
        "previous": previous(request.previous) if request.previous else None,
        "attributes": {k: v for k, v in request.attributes.items() if k in attributes},
    }
    if request.id is not None:
        captured["id"] = hashed("request", request.id)
    return _present(captured)


def _present(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None and v != {}}


def _shape(text: str) -> str:
    """What a policy can read of a text without its words: empty or not, and its length."""
    return "x" * len(text)
