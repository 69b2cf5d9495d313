"""Policies, health, metrics, request ids, logs, and the OpenAPI contract."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from service.api import create_app
from service.api.app import openapi_yaml
from service.api.openapi import contract
from service.api.problems import Problem
from service.api.responses import EXAMPLES, problem_example
from service.settings import Settings
from tests.api.conftest import Log, app_for, sample
from tests.conftest import MINIMAL_POLICY, POLICIES

Client = TestClient[Litestar]
COMMITTED = POLICIES.parent / "openapi" / "openapi.yaml"


def test_list_policies(client: Client) -> None:
    body = client.get("/policies").json()
    assert body["digest"].startswith("sha256:")
    assert {"revision", "loaded_at"} <= set(body)
    names = [p["name"] for p in body["policies"]]
    assert names == sorted(names)
    assert "examples/met-or-worked" in names
    met = next(p for p in body["policies"] if p["name"] == "examples/met-or-worked")
    assert met["rules"] == [
        {
            "id": "reconnect-first",
            "decision": "defer",
            "description": "A work contact gone quiet; friends and family are accepted below.",
            "source": "examples/met-or-worked.yaml:15",
        },
        {"id": "knows-well", "decision": "accept", "source": "examples/met-or-worked.yaml:25"},
    ]
    assert met["default"] == "ignore"


def test_get_one_policy_by_a_name_with_slashes(client: Client) -> None:
    body = client.get("/policies/examples/my-field").json()
    assert body["name"] == "examples/my-field"
    assert body["params"] == {"industries": ["software", "data"], "regions": ["europe"]}
    assert body["variables"]["in_field"] == "variables.industry in params.industries"
    assert [rule["id"] for rule in body["rules"]][:2] == ["known-tie", "same-field-and-region"]
    response = client.get("/policies/examples/nope")
    assert response.status_code == 404
    assert response.json()["code"] == "unknown-policy"


def test_health(client: Client) -> None:
    assert client.get("/health/live").json() == {"status": "ok"}
    ready = client.get("/health/ready").json()
    assert ready["status"] == "ok"
    assert ready["policies"] == 10
    assert ready["digest"] == client.get("/policies").json()["digest"]


def test_revision_comes_from_git_or_the_setting(tmp_path: Path, log: Log) -> None:
    (tmp_path / "p.yaml").write_text(MINIMAL_POLICY)
    app = create_app(Settings(policies=str(tmp_path), default_policy="p", revision="v42"))
    with TestClient(app) as client:
        assert client.get("/health/ready").json()["revision"] == "v42"
        decision = client.post("/evaluate", json={"request": sample()}).json()
    assert decision["policy"]["revision"] == "v42"


def test_metrics(client: Client) -> None:
    client.post("/evaluate", json={"request": sample()})
    client.post("/evaluate", json={"policy": "nope", "request": sample()})
    client.get("/nope")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    assert 'handshake_decisions_total{decision="defer",errors="false",policy="default"} 1.0' in text
    assert 'handshake_http_requests_total{method="POST",route="/evaluate",status="200"} 1.0' in text
    assert 'handshake_http_requests_total{method="POST",route="/evaluate",status="404"} 1.0' in text
    assert 'handshake_http_requests_total{method="GET",route="unmatched",status="404"} 1.0' in text
    assert 'handshake_evaluation_duration_seconds_count{policy="default"} 1.0' in text
    assert "handshake_policy_set_info{digest=" in text
    assert "handshake_policy_set_loaded_timestamp_seconds " in text


def test_request_id_is_read_or_made_and_returned(client: Client, log: Log) -> None:
    given = client.get("/health/live", headers={"x-request-id": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    made = client.get("/health/live", headers={"x-request-id": "not ok " * 30})
    assert len(made.headers["x-request-id"]) == 32
    failed = client.get("/nope")
    assert failed.headers["x-request-id"]
    events = [e for e in log.events() if e["event"] == "request"]
    assert [e["request_id"] for e in events] == [
        "abc-123",
        made.headers["x-request-id"],
        failed.headers["x-request-id"],
    ]


def test_one_request_event_and_one_decision_event_each(client: Client, log: Log) -> None:
    decision = client.post("/evaluate", json={"request": sample()}).json()
    client.post("/evaluate/batch", json={"items": [{"request": sample()}] * 2})
    events = log.events()
    requests = [e for e in events if e["event"] == "request"]
    decisions = [e for e in events if e["event"] == "decision"]
    assert len(requests) == 2
    assert len(decisions) == 3  # one per decision, also inside a batch
    first = requests[0]
    assert (first["method"], first["path"], first["status"]) == ("POST", "/evaluate", 200)
    assert first["duration_ms"] > 0
    assert first["decision_id"] == decision["decision_id"]
    assert first["caller"] == "tests"
    assert first["level"] == "info"
    assert first["timestamp"].endswith("Z")
    event = decisions[0]
    assert event["decision_id"] == decision["decision_id"]
    assert event["request_id"] == first["request_id"]
    assert event["policy"] == "default"
    assert event["revision"] == decision["policy"]["revision"]
    assert event["digest"] == decision["policy"]["digest"]
    assert (event["decision"], event["rule"]) == (decision["decision"], decision["rule"])
    assert event["errors"] == 0
    assert event["latency_ms"] > 0
    assert event["caller"] == "tests"
    assert {e["request_id"] for e in decisions[1:]} == {requests[1]["request_id"]}


MARKERS = {"NAME-MARKER-1", "NOTE-MARKER-2", "ATTR-MARKER-3", "HEADLINE-MARKER-4"}


def _marked() -> dict[str, Any]:
    request = sample()
    request["requester"]["name"] = "NAME-MARKER-1"
    request["requester"]["headline"] = "HEADLINE-MARKER-4"
    request["message"] = "NOTE-MARKER-2"
    request["attributes"] = {"crm": "ATTR-MARKER-3"}
    return request


@pytest.mark.parametrize("personal", [False, True])
def test_personal_data_stays_out_of_the_log_unless_turned_on(log: Log, personal: bool) -> None:
    app = app_for(Settings(policies=str(POLICIES), log_personal_data=personal))
    with TestClient(app) as client:
        client.post("/evaluate", json={"request": _marked(), "explain": True})
        client.post("/evaluate/batch", json={"items": [{"request": _marked()}]})
        client.post("/evaluate", json={"request": {**_marked(), "surprise": "NOTE-MARKER-2"}})
    text = log.getvalue()
    assert text
    logged = {marker for marker in MARKERS if marker in text}
    assert logged == ({"NAME-MARKER-1"} if personal else set())


def test_the_committed_openapi_document_is_current() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == openapi_yaml(), (
        "openapi/openapi.yaml is out of date: run `handshake openapi`"
    )


def test_the_document_is_served_and_every_reference_resolves(client: Client) -> None:
    served = client.get("/openapi.json").json()
    assert served == contract(client.app)
    schemas = served["components"]["schemas"]
    text = msgspec.json.encode(served).decode()
    for name in {part.split('"')[0] for part in text.split("#/components/schemas/")[1:]}:
        assert name in schemas, name
    assert schemas["EvaluateBody"]["additionalProperties"] is False
    assert client.get("/docs").status_code == 200


def test_every_operation_documents_its_statuses_with_examples(client: Client) -> None:
    document = contract(client.app)
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if path == "/metrics":
                    continue
                (content,) = response["content"].values()
                assert content.get("examples"), (method, path, status)


def test_examples_are_what_the_service_would_answer() -> None:
    for kind, example in EXAMPLES.items():
        msgspec.convert(example, kind)
    for status in (400, 404, 405, 413, 415):
        msgspec.convert(problem_example(status), Problem)


def test_a_keyed_hash_of_the_requester_id_can_correlate_decisions(log: Log) -> None:
    settings = Settings(policies=str(POLICIES), log_requester_hash_key="k" * 32)
    request = _marked()
    request["requester"]["id"] = "ID-MARKER-5"
    with TestClient(app_for(settings)) as client:
        client.post("/evaluate", json={"request": request})
        client.post("/evaluate", json={"request": request, "locale": "de"})
    hashes = [e["requester_hash"] for e in log.events() if e["event"] == "decision"]
    assert len(hashes) == 2
    assert hashes[0] == hashes[1]
    assert len(hashes[0]) == 64
    assert not [marker for marker in (*MARKERS, "ID-MARKER-5") if marker in log.getvalue()]


@pytest.mark.parametrize(
    ("settings", "evaluate", "metrics"),
    [
        (Settings(), [], []),
        (Settings(api_tokens="t:" + "x" * 16), [{"bearerAuth": []}], []),
        (
            Settings(api_tokens="t:" + "x" * 16, metrics_require_token=True),
            [{"bearerAuth": []}],
            [{"bearerAuth": []}],
        ),
    ],
)
def test_the_served_document_asks_for_what_this_server_requires(
    settings: Settings, evaluate: list[Any], metrics: list[Any], log: Log
) -> None:
    settings = msgspec.structs.replace(settings, policies=str(POLICIES), watch=False)
    with TestClient(app_for(settings)) as client:
        served = client.get("/openapi.json").json()
        assert client.get("/docs/openapi.json").json() == served  # one document, both places
    assert served["paths"]["/evaluate"]["post"]["security"] == evaluate
    assert served["paths"]["/metrics"]["get"]["security"] == metrics
    assert served["paths"]["/health/live"]["get"]["security"] == []
    assert "security" not in served  # no document-wide requirement: each operation says
