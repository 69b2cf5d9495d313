"""Traces (OpenTelemetry, the `tracing` extra): a caller's `traceparent` is continued on every
route, the fast lane and webhooks included; each decision is a child span that says what was
decided and nothing of the request; every log event of the request carries the trace id."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from service.api import create_app
from service.api.state import load_active
from service.api.tracing import Tracing, tracing_wanted
from service.settings import Settings, SettingsError
from tests.api.conftest import Log, sample
from tests.api.test_webhooks import SECRET, signed
from tests.conftest import POLICIES, bundled_policies

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
TRACEPARENT = {"traceparent": f"00-{TRACE}-{PARENT}-01"}


@pytest.fixture
def traced(log: Log, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, InMemorySpanExporter]]:
    monkeypatch.setenv("EXAMPLE_CRM_WEBHOOK_SECRET", SECRET)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = Settings(policies=str(POLICIES), watch=False)
    active = load_active(settings, previous=bundled_policies(compare_engines=False))
    app = create_app(settings, active, tracing=Tracing(provider))
    with TestClient(app) as client:
        yield client, exporter


def spans_of(exporter: InMemorySpanExporter, trace_id: str = TRACE) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if f"{s.context.trace_id:032x}" == trace_id]


@pytest.mark.parametrize(
    ("path", "body", "name"),
    [
        ("/evaluate", {"request": sample()}, "POST /evaluate"),  # the fast lane
        ("/evaluate/batch", {"items": [{"request": sample()}]}, "POST /evaluate/batch"),
    ],
)
def test_a_traceparent_is_continued_and_a_decision_is_a_child_span(
    traced: tuple[Any, InMemorySpanExporter], log: Log, path: str, body: Any, name: str
) -> None:
    client, exporter = traced
    answer = client.post(path, json=body, headers=TRACEPARENT)
    assert answer.status_code == 200
    spans = spans_of(exporter)
    (server,) = [s for s in spans if s.kind == SpanKind.SERVER]
    (evaluation,) = [s for s in spans if s.name == "evaluate"]
    assert server.name == name
    assert server.parent is not None
    assert f"{server.parent.span_id:016x}" == PARENT
    assert server.attributes["http.route"] == path
    assert evaluation.parent is not None
    assert evaluation.parent.span_id == server.context.span_id
    assert evaluation.attributes["handshake.policy"] == "default"
    assert evaluation.attributes["handshake.decision"] == "defer"
    assert evaluation.attributes["handshake.rule"] == "ask-for-context"
    assert evaluation.attributes["handshake.errors"] == 0
    assert str(evaluation.attributes["handshake.digest"]).startswith("sha256:")
    # Nothing of the request: no name, no note.
    person = sample()["requester"]["name"]
    assert all(person not in str(v) for s in spans for v in (s.attributes or {}).values())
    # Every log event of the request carries the trace id.
    events = [e for e in log.events() if e["event"] in ("request", "decision")]
    assert {e["event"] for e in events} == {"request", "decision"}
    assert {e.get("trace_id") for e in events} == {TRACE}


def test_webhooks_and_errors_are_traced_too(traced: tuple[Any, InMemorySpanExporter]) -> None:
    client, exporter = traced
    body, headers = signed()
    assert (
        client.post(
            "/webhooks/example-crm", content=body, headers={**headers, **TRACEPARENT}
        ).status_code
        == 200
    )
    names = sorted(s.name for s in spans_of(exporter))
    assert names == ["POST /webhooks/{source}", "evaluate"]
    exporter.clear()
    assert client.post("/evaluate", json={"request": {}}, headers=TRACEPARENT).status_code == 400
    (server,) = spans_of(exporter)
    status = server.attributes.get("http.response.status_code")  # OTEL_SEMCONV_STABILITY_OPT_IN
    assert (status or server.attributes["http.status_code"]) == 400
    exporter.clear()
    # Without a traceparent, a trace of its own.
    client.get("/health/live")
    (alone,) = exporter.get_finished_spans()
    assert alone.parent is None
    assert alone.name == "GET /health/live"


@pytest.mark.parametrize(
    ("environ", "wanted"),
    [
        ({}, False),
        ({"OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_the_otel_variables_turn_traces_on(environ: dict[str, str], wanted: bool) -> None:
    assert tracing_wanted(environ) is wanted


def test_an_unknown_exporter_is_a_setting_error() -> None:
    with pytest.raises(SettingsError, match=r"^OTEL_TRACES_EXPORTER: no exporter `zipkinish`"):
        Tracing(environ={"OTEL_TRACES_EXPORTER": "zipkinish"})
    for exporters in ("console", "otlp", "otlp,console"):
        Tracing(environ={"OTEL_TRACES_EXPORTER": exporters}).provider.shutdown()
    grpc = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    with pytest.raises(SettingsError, match="no exporter `otlp_proto_grpc` is installed"):
        Tracing(environ=grpc)


def test_the_server_span_holds_nothing_that_names_anyone(
    traced: tuple[Any, InMemorySpanExporter],
) -> None:
    """No query string, client address or user agent; captured headers redacted."""
    client, exporter = traced
    headers = {**TRACEPARENT, "user-agent": "Zelda's phone", "x-forwarded-for": "203.0.113.7"}
    answer = client.post(
        "/evaluate?email=zelda@example.com", json={"request": sample()}, headers=headers
    )
    assert answer.status_code == 200
    (server,) = [s for s in spans_of(exporter) if s.kind == SpanKind.SERVER]
    shown = json.dumps(dict(server.attributes or {}))
    for secret in ("zelda", "Zelda", "203.0.113.7", "testclient"):
        assert secret not in shown, shown
    assert server.attributes["http.route"] == "/evaluate"
