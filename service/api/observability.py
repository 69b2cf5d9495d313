"""Request ids, one log event per request, and Prometheus metrics.

`X-Request-ID` is read (when it is a sane token) or generated, returned on every answer, and
bound into the log context. Handlers add decision fields to the request's log event through
`note()`. Metrics live in a registry per app, so tests can build many apps.
"""

from __future__ import annotations

import logging
import random
import re
import time
from typing import Any

import structlog
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from service.policy.compiled import PolicySet
from service.policy.decision import Decision

__all__ = ["Metrics", "RequestLogMiddleware", "note"]

REQUEST_ID = "x-request-id"
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that left before the answer
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_LOG_KEY = "handshake.log"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


OTHER_POLICIES = "_other"


class Metrics:
    def __init__(self, policies: int = 100) -> None:
        """`policies`: how many policies may have series of their own (the first decided);
        the rest share `policy="_other"`, so the series are bounded at any number of them."""
        self._children: dict[tuple[Any, ...], Any] = {}
        self._named: dict[str, str] = {}  # policy -> its label
        self._policies = policies
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "handshake_http_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "handshake_http_request_duration_seconds",
            "HTTP request duration",
            ["route"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.decisions = Counter(
            "handshake_decisions",
            "Decisions by policy, decision and whether errors occurred",
            ["policy", "decision", "errors"],
            registry=self.registry,
        )
        self.evaluation_seconds = Histogram(
            "handshake_evaluation_duration_seconds",
            "Time to evaluate one request against a policy",
            ["policy"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.policy_set = Gauge(
            "handshake_policy_set_info",
            "The active policy set (value 1), labelled with its revision and digest",
            ["revision", "digest"],
            registry=self.registry,
        )
        self.reloads = Counter(
            "handshake_policy_reloads",
            "Policy reloads by result (success: a new set is active; failure: the old one is)",
            ["result"],
            registry=self.registry,
        )
        self.token_reloads = Counter(
            "handshake_token_reloads",
            "Readings of the API tokens on reload (failure: the last good tokens stay in force)",
            ["result"],
            registry=self.registry,
        )
        self.policy_set_loaded = Gauge(
            "handshake_policy_set_loaded_timestamp_seconds",
            "When the active policy set was loaded",
            registry=self.registry,
        )

    def activated(self, policy_set: PolicySet) -> None:
        self.policy_set.clear()
        self.policy_set.labels(policy_set.revision or "", policy_set.digest).set(1)
        self.policy_set_loaded.set(policy_set.loaded_at.timestamp())

    def decided(self, decision: Decision, seconds: float) -> None:
        name = self._named.get(decision.policy.name) or self._label(decision.policy.name)
        errors = "true" if decision.errors else "false"
        self.child(self.decisions, name, decision.decision, errors).inc()
        self.child(self.evaluation_seconds, name).observe(seconds)

    def _label(self, policy: str) -> str:
        label = policy if len(self._named) < self._policies else OTHER_POLICIES
        if label == policy or len(self._named) < 10 * self._policies + 1000:
            self._named[policy] = label  # (bounded too: names beyond it are looked up again)
        return label

    def child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, remembered: prometheus-client locks and checks on every
        `labels()` call, which costs more than the observation on the hot path. Label values
        are bounded (route templates, known methods, statuses, policy names, decisions)."""
        key = (metric, *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found


def note(scope: Scope, **fields: Any) -> None:
    """Add fields to this request's log event (decision id, policy, rule …)."""
    scope.setdefault("state", {}).setdefault(_LOG_KEY, {}).update(fields)


class RequestLogMiddleware:
    """Pure ASGI: cheap, and it sees every answer, including errors and 404s."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics
        # Bound once (logging is configured before the app is made): the module proxy would
        # build a logger on every request.
        self.log = structlog.get_logger("handshake").bind()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        request_id = _request_id(scope)
        started = time.perf_counter()
        status = 500
        left = False  # the client went away before its request was read

        async def receive_noting_departure() -> ReceiveMessage:
            nonlocal left
            message = await receive()
            if message["type"] == "http.disconnect":
                left = True
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        bound = structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive_noting_departure, send_with_id)
        finally:
            try:
                if left:  # whatever was answered, nobody was there: the client's doing
                    status = CLIENT_CLOSED_REQUEST
                seconds = time.perf_counter() - started
                route = _route(scope)
                known = method if method in _METHODS else "OTHER"  # clients choose methods
                self.metrics.child(self.metrics.requests, route, known, str(status)).inc()
                self.metrics.child(self.metrics.request_seconds, route).observe(seconds)
                if self.log.is_enabled_for(logging.INFO):  # else do not even build the event
                    fields = scope.get("state", {}).get(_LOG_KEY, {})
                    self.log.info(
                        "request",
                        method=method,
                        path=scope["path"],
                        status=status,
                        duration_ms=round(seconds * 1000, 3),
                        **fields,
                    )
            finally:
                structlog.contextvars.reset_contextvars(**bound)


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if _SANE_ID.match(text):
                return text
            break
    # Unique, not secret: 128 random bits from the fast generator (reseeded in a forked child).
    return f"{random.getrandbits(128):032x}"


def _route(scope: Scope) -> str:
    """The route template (`/policies/{name:path}`), never the raw path: bounded labels."""
    handler = scope.get("route_handler")
    paths = getattr(handler, "paths", None)
    return sorted(paths)[0] if paths else "unmatched"
