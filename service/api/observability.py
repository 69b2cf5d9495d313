"""Request ids, one log event per request, and Prometheus metrics.

`X-Request-ID` is read (when it is a sane token) or generated, returned on every answer, and
bound into the log context. Handlers add decision fields to the request's log event through
`note()`; an error answer adds its problem `code`, read from the problem document on its way
out. Metrics live in a registry per app, so tests can build many apps; routes are labelled
with their OpenAPI path (`/policies/{name}`).
"""

from __future__ import annotations

import functools
import logging
import random
import re
import time
from typing import Annotated, Any

import msgspec
import structlog
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from service.api.problems import CODES, MEDIA_TYPE
from service.policy.compiled import PolicySet
from service.policy.decision import Decision

__all__ = ["Metrics", "RequestLogMiddleware", "note", "route_of"]

REQUEST_ID = "x-request-id"
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that left before the answer
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_LOG_KEY = "handshake.log"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Log-spaced, 1-2.5-5 a decade: a decision takes 30-200 µs, a request through HTTP 0.1 ms and
# up. Each bucket is a series per label set (per policy: up to HANDSHAKE_METRICS_POLICIES).
EVALUATION_BUCKETS = (
    *(0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005),
    *(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)  # 10 µs .. 1 s: 16
REQUEST_BUCKETS = (
    *(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01),
    *(0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)  # 50 µs .. 2.5 s: 15
_PROBLEM_BYTES = 65536  # of an error answer's body read for its `code` (ours are far smaller)
_PROBLEM_TYPE = MEDIA_TYPE.encode()
_CONVERTER = re.compile(r"\{(\w+):\w+\}")  # litestar's `{name:path}`: OpenAPI's `{name}`


class _Coded(msgspec.Struct):
    code: Annotated[str, msgspec.Meta(max_length=64)] = ""


OTHER_POLICIES = "_other"


class Metrics:
    def __init__(self, policies: int = 100) -> None:
        """`policies`: how many policies may have series of their own (the first decided);
        the rest share `policy="_other"`, so the series are bounded at any number of them."""
        self._children: dict[tuple[Any, ...], Any] = {}
        self._named: dict[str, str] = {}  # policy -> its label
        self._policies = policies
        self.registry = CollectorRegistry()
        # The process's own: CPU, memory, file descriptors (process_*), the Python version
        # (python_info), the garbage collector (python_gc_*), as prometheus-client's default
        # registry would have them.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)  # (CPython only: elsewhere it registers nothing)
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
            buckets=REQUEST_BUCKETS,
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
            buckets=EVALUATION_BUCKETS,
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
        name = self.policy_label(decision.policy.name)
        errors = "true" if decision.errors else "false"
        self.child(self.decisions, name, decision.decision, errors).inc()
        self.child(self.evaluation_seconds, name).observe(seconds)

    def policy_label(self, policy: str) -> str:
        """The `policy` label of `policy`: its name, or `_other` past `policies` names."""
        named = self._named.get(policy)
        if named is not None:
            return named
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
    """Pure ASGI: cheap, and it sees every answer, including errors and 404s.

    The request's log event is at `info`, or `error` for a 5xx; every 4xx and 5xx carries the
    problem `code` of the answer (`client-closed-request` for a 499: nobody was there)."""

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
        left = False  # the client went away before its answer was sent
        answered = False  # the answer's last byte was handed to the server
        problem: bytearray | None = None  # an error answer's problem document (bounded)

        async def receive_noting_departure() -> ReceiveMessage:
            nonlocal left
            message = await receive()
            if message["type"] == "http.disconnect" and not answered:
                left = True  # (after the answer, a disconnect is how a streamed one ends)
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status, problem, answered
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.get("headers", [])
                if status >= 400 and _is_problem(headers):
                    problem = bytearray()
                message["headers"] = [*headers, (b"x-request-id", request_id.encode())]
            elif message["type"] == "http.response.body":
                answered = not message.get("more_body", False)
                if problem is not None:
                    room = _PROBLEM_BYTES + 1 - len(problem)  # one byte past: too long to read
                    problem += message.get("body", b"")[:room]
            await send(message)

        bound = structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive_noting_departure, send_with_id)
        finally:
            try:
                if left:  # whatever was answered, nobody was there: the client's doing
                    status = CLIENT_CLOSED_REQUEST
                seconds = time.perf_counter() - started
                route = route_of(scope)
                known = method if method in _METHODS else "OTHER"  # clients choose methods
                self.metrics.child(self.metrics.requests, route, known, str(status)).inc()
                self.metrics.child(self.metrics.request_seconds, route).observe(seconds)
                level = logging.ERROR if status >= 500 else logging.INFO
                if self.log.is_enabled_for(level):  # else do not even build the event
                    fields = scope.get("state", {}).get(_LOG_KEY, {})
                    if status >= 400:
                        fields = {**fields, "code": _code(status, problem)}
                    self.log.log(
                        level,
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


def _is_problem(headers: Any) -> bool:
    return any(
        name == b"content-type" and value.startswith(_PROBLEM_TYPE) for name, value in headers
    )


def _code(status: int, problem: bytearray | None) -> str:
    """The `code` of the problem document answered; without one (nothing answered, or not a
    problem document), the one `problems.CODES` gives the status."""
    if status == CLIENT_CLOSED_REQUEST:
        return "client-closed-request"
    if problem and len(problem) <= _PROBLEM_BYTES:
        try:
            code = msgspec.json.decode(problem, type=_Coded).code
        except msgspec.DecodeError:
            code = ""
        if code:
            return code
    return CODES.get(status, ("error", ""))[0]


def route_of(scope: Scope) -> str:
    """The route's OpenAPI path (`/policies/{name}`, `/docs`), never the raw path: bounded
    labels. litestar's router leaves it in `path_template`; the fast lane, which answers before
    the router, leaves its route handler (whose paths carry converters: `{name:path}`)."""
    template: str | None = scope.get("path_template")
    if template:
        return template
    handler = scope.get("route_handler")
    paths = getattr(handler, "paths", None)
    return _openapi_path(sorted(paths)[0]) if paths else "unmatched"


@functools.lru_cache(maxsize=64)  # the app's route paths: a few
def _openapi_path(path: str) -> str:
    return _CONVERTER.sub(r"{\1}", path)
