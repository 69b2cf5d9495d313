"""Traces with OpenTelemetry: optional (`pip install handshake[tracing]`), configured by the
standard `OTEL_*` variables, off unless they ask for an exporter.

On, every request gets a server span (OpenTelemetry's own ASGI middleware, outside everything
else, so the fast lane and webhooks are traced too), continuing the caller's W3C
`traceparent`, named by the route's OpenAPI path; each decision a child span `evaluate` with
the policy, revision, digest, decision, rule and error count, and never the request's
content. The trace and span ids are bound into the request's log context, so every log event
of the request carries them. Off, none of this is imported, and nothing runs per request.

    OTEL_TRACES_EXPORTER=otlp OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318 handshake serve
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any, cast

import structlog
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from service.policy import Decision
from service.settings import SettingsError

__all__ = ["Tracing", "tracing_wanted"]

_ORIGINAL = "handshake.scope"  # the request as it came, under the copy the span is made of
_PERSONAL_HEADERS = frozenset((b"user-agent", b"x-forwarded-for", b"forwarded", b"x-real-ip"))
_SECRET_HEADERS = (
    "authorization",
    "cookie",
    "set-cookie",
    "webhook-signature",
    "x-hub-signature-256",
)


def tracing_wanted(environ: Mapping[str, str]) -> bool:
    """Whether the `OTEL_*` variables ask for traces: an exporter other than `none`, or an
    OTLP endpoint; `OTEL_SDK_DISABLED=true` wins."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters:
        return exporters != "none"
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


class Tracing:
    """The tracer and the middleware; `provider` is given by tests (an in-memory exporter),
    else made from the `OTEL_*` variables."""

    def __init__(self, provider: Any = None, environ: Mapping[str, str] | None = None) -> None:
        try:
            from opentelemetry import trace
        except ImportError:
            raise SettingsError(
                "OTEL_*: traces are asked for, but OpenTelemetry is not installed "
                "(pip install 'handshake[tracing]')"
            ) from None
        self._trace = trace
        self.provider = provider or _provider(os.environ if environ is None else environ)
        self.tracer = self.provider.get_tracer("handshake")

    def wrap(self, app: ASGIApp, route_of: Callable[[Scope], str]) -> ASGIApp:
        """`app` inside a server span per request, the span named by its route.

        OpenTelemetry's middleware records what the scope it is given holds, so it is given a
        copy without what could name someone or carry a secret: no query string, no client
        address, no user agent; captured headers (OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_*)
        have credentials and signatures redacted. The app gets the request as it came."""
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        trace = self._trace

        async def named(shown: Any, receive: Receive, send: Send) -> None:
            scope = shown.get(_ORIGINAL, shown)
            if scope["type"] != "http":  # lifespan: no span, no ids
                await app(scope, receive, send)
                return
            span = trace.get_current_span()
            context = span.get_span_context()
            bound = structlog.contextvars.bind_contextvars(
                trace_id=f"{context.trace_id:032x}", span_id=f"{context.span_id:016x}"
            )

            async def naming(message: Message) -> None:
                if message["type"] == "http.response.start":  # routed; the span still open
                    route = route_of(scope)
                    span.update_name(f"{scope['method']} {route}")
                    span.set_attribute("http.route", route)
                await send(message)

            try:
                await app(scope, receive, naming)
            finally:
                structlog.contextvars.reset_contextvars(**bound)

        middleware = cast(
            ASGIApp,
            OpenTelemetryMiddleware(
                named,
                tracer_provider=self.provider,
                exclude_spans=["receive", "send"],  # a span per ASGI message: noise, and cost
                default_span_details=lambda scope: (scope.get("method", "HTTP"), {}),
                http_capture_headers_sanitize_fields=list(_SECRET_HEADERS),
            ),
        )

        async def redacted(scope: Any, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await middleware(scope, receive, send)
                return
            headers = [(k, v) for k, v in scope["headers"] if k not in _PERSONAL_HEADERS]
            shown: Any = {**scope, "query_string": b"", "client": None, "headers": headers}
            shown[_ORIGINAL] = scope
            await middleware(shown, receive, send)

        return redacted

    def evaluated(self, evaluate: Callable[[], Decision]) -> Decision:
        """`evaluate()` in a child span `evaluate` that says what was decided."""
        with self.tracer.start_as_current_span("evaluate") as span:
            decision = evaluate()
            span.set_attributes(
                {
                    "handshake.policy": decision.policy.name,
                    "handshake.revision": decision.policy.revision or "",
                    "handshake.digest": decision.policy.digest,
                    "handshake.decision": decision.decision,
                    "handshake.rule": decision.rule or "",
                    "handshake.errors": len(decision.errors),
                    "handshake.decision_id": decision.decision_id,
                }
            )
            return decision


def _provider(environ: Mapping[str, str]) -> Any:
    """A tracer provider as the `OTEL_*` variables describe it: the sampler
    (`OTEL_TRACES_SAMPLER`), the resource (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`)
    and the batch processor (`OTEL_BSP_*`) read them themselves; the exporters are found by
    name, as the SDK registers them."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME", "handshake")})
    provider = TracerProvider(resource=resource)
    names = environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    protocol = environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
    )
    otlp = "otlp_proto_grpc" if protocol.strip() == "grpc" else "otlp_proto_http"
    for name in (n.strip() for n in names.split(",") if n.strip() not in ("", "none")):
        name = otlp if name == "otlp" else name  # as the SDK reads it: http/protobuf by default
        found = entry_points(group="opentelemetry_traces_exporter", name=name)
        if not found:
            raise SettingsError(f"OTEL_TRACES_EXPORTER: no exporter `{name}` is installed")
        exporter = next(iter(found)).load()()
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider
