"""Metrics and request logs by convention: routes labelled with their OpenAPI path, the process's
own metrics, latency buckets that resolve a decision, and on every error answer's log line its
problem `code`, at `error` for a 5xx."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import yaml
from litestar import Litestar
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.log import configure_logging
from service.settings import Settings
from tests.api.conftest import TOKEN, Log, app_for, sample
from tests.api.server import events_of, running_server
from tests.conftest import POLICIES

Client = TestClient[Litestar]
OPENAPI_PATHS = set(
    yaml.safe_load((POLICIES.parent / "openapi" / "openapi.yaml").read_text())["paths"]
)
DOCS = {"/docs", "/docs/openapi.json", "/docs/{path}", "/docs/oauth2-redirect.html"}


def families(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def buckets(family: Any) -> list[float]:
    bounds = {float(s.labels["le"]) for s in family.samples if s.name.endswith("_bucket")}
    return sorted(bound for bound in bounds if bound != float("inf"))


def test_a_real_server_labels_routes_by_their_openapi_path_and_exports_the_process() -> None:
    with running_server() as (url, process):
        with httpx.Client(base_url=url, timeout=10) as client:
            assert client.post("/evaluate", json={"request": sample()}).status_code == 200
            assert client.get("/policies/examples/my-field").status_code == 200
            assert client.get("/docs").status_code == 200
            assert client.get("/no/such/path").status_code == 404
            bad = client.post(
                "/evaluate", content=b'{"request": ', headers={"content-type": "application/json"}
            )
            assert bad.status_code == 400
            text = client.get("/metrics").text
        events = [e for e in events_of(process) if e["event"] == "request"]
    found = families(text)

    requests = found["handshake_http_requests"].samples
    counted = {
        (s.labels["method"], s.labels["route"], s.labels["status"])
        for s in requests
        if s.name == "handshake_http_requests_total"
    }
    assert {
        ("POST", "/evaluate", "200"),  # answered by the fast lane
        ("GET", "/policies/{name}", "200"),
        ("GET", "/docs", "200"),
        ("GET", "unmatched", "404"),
        ("POST", "/evaluate", "400"),  # answered by the route behind the lane
    } <= counted
    routes = {route for _, route, _ in counted}
    assert routes <= OPENAPI_PATHS | DOCS | {"/openapi.json", "unmatched"}, routes

    # The process's own metrics, as prometheus-client's default registry has them.
    assert {
        "process_cpu_seconds",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
        "python_info",
        "python_gc_collections",
    } <= set(found)
    cpu = found["process_cpu_seconds"].samples[0].value
    assert cpu > 0

    # Buckets that resolve a decision (30-200 µs) and a request through the fast lane.
    evaluation = buckets(found["handshake_evaluation_duration_seconds"])
    assert evaluation[0] <= 1e-05
    assert evaluation[-1] >= 1.0
    assert 12 <= len(evaluation) <= 20  # each bucket is a series per policy
    request = buckets(found["handshake_http_request_duration_seconds"])
    assert request[0] <= 5e-05
    assert 12 <= len(request) <= 20

    by_status = {e["status"]: e for e in events}
    assert (by_status[404]["code"], by_status[404]["level"]) == ("not-found", "info")
    assert (by_status[400]["code"], by_status[400]["level"]) == ("invalid-request", "info")
    assert "code" not in by_status[200]


def test_each_error_answer_logs_its_problem_code_and_a_5xx_is_an_error(
    client: Client, log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = [
        client.post("/evaluate", json={"request": sample()}),
        client.post("/evaluate", json={"policy": "nope", "request": sample()}),
        client.get("/policies/examples/nope"),
        client.delete("/evaluate"),  # litestar's router: 405
        client.post("/evaluate", content=b"x", headers={"content-type": "text/plain"}),
        client.post("/webhooks/nowhere", json={}),
    ]
    monkeypatch.setattr("service.api.evaluation.evaluate", _broken)
    answers.append(client.post("/evaluate", json={"request": sample()}))
    requests = [e for e in log.events() if e["event"] == "request"]
    assert [(e["status"], e.get("code"), e["level"]) for e in requests] == [
        (200, None, "info"),
        (404, "unknown-policy", "info"),
        (404, "unknown-policy", "info"),
        (405, "method-not-allowed", "info"),
        (415, "unsupported-media-type", "info"),
        (404, "unknown-source", "info"),
        (500, "internal-error", "error"),
    ]
    assert [e["code"] for e in requests[1:]] == [r.json()["code"] for r in answers[1:]]


def test_at_level_warning_a_5xx_is_still_logged_and_a_4xx_is_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = Log()
    configure_logging(Settings(log_format="json", log_level="warning"), stream)
    with TestClient(app_for(Settings(policies=str(POLICIES)))) as client:
        assert client.get("/nope").status_code == 404
        monkeypatch.setattr("service.api.evaluation.evaluate", _broken)
        assert client.post("/evaluate", json={"request": sample()}).status_code == 500
    requests = [e for e in stream.events() if e["event"] == "request"]
    assert [(e["status"], e["code"], e["level"]) for e in requests] == [
        (500, "internal-error", "error")
    ]


def test_a_client_that_leaves_is_logged_as_499_with_a_code_of_its_own(
    app: Litestar, log: Log
) -> None:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/evaluate/batch",
        "raw_path": b"/evaluate/batch",
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"test"),
            (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {TOKEN}".encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    messages: list[Any] = [{"type": "http.request", "body": b'{"items": [', "more_body": True}]

    async def receive() -> Any:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        pass

    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    (event,) = [e for e in log.events() if e["event"] == "request"]
    assert (event["status"], event["code"], event["level"]) == (
        499,
        "client-closed-request",
        "info",
    )


def test_an_error_answer_that_is_no_problem_document_logs_the_code_of_its_status(
    client: Client, log: Log
) -> None:
    """The Swagger UI's own 404 is an HTML page: its line still has a code, from the table."""
    response = client.get("/docs/no-such-page")
    assert response.status_code == 404
    assert not response.headers["content-type"].startswith("application/problem+json")
    (event,) = [e for e in log.events() if e["event"] == "request"]
    assert (event["code"], event["level"]) == ("not-found", "info")
    metrics = families(client.get("/metrics").text)["handshake_http_requests"].samples
    assert {s.labels["route"] for s in metrics if s.labels.get("status") == "404"} == {
        "/docs/{path}"
    }


def _broken(*args: Any, **kwargs: Any) -> None:
    raise RuntimeError("boom")
