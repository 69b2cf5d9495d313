"""POST /evaluate and /evaluate/batch through litestar's test client."""

from __future__ import annotations

import json
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from service.settings import Settings
from tests.api.conftest import app_for, sample
from tests.conftest import POLICIES

Client = TestClient[Litestar]
VALID = (
    b'{"requester": {"name": "A", "has_photo": true},'
    b' "recipient": {"name": "B", "has_photo": true}}'
)
JSON = {"content-type": "application/json"}
NOW = "2026-11-22T09:00:00Z"


def problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"urn:handshake:problem:{code}"
    assert body["title"]
    assert body["detail"]
    assert "Traceback" not in response.text
    return body


def test_evaluate_returns_the_decision(client: Client) -> None:
    response = client.post(
        "/evaluate",
        json={"request": sample("old-colleague"), "locale": "de", "now": NOW},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["decision"] == "defer"
    assert body["rule"] == "reconnect-first"
    assert body["reply"] == {
        "locale": "de",
        "text": "Hallo Ada Byron, schön, nach so langer Zeit von Ihnen zu hören! "
        "Wollen wir vorher kurz telefonieren?",
    }
    assert body["outputs"] == {"next_step": "propose_call"}
    assert body["errors"] == []
    assert body["policy"]["name"] == "default"
    assert body["policy"]["digest"].startswith("sha256:")
    assert set(body["policy"]) == {"name", "revision", "digest"}
    assert body["evaluated_at"] == NOW
    assert "trace" not in body


def test_same_input_same_bytes(client: Client) -> None:
    body = {"request": sample(), "now": NOW}
    first = client.post("/evaluate", json=body)
    second = client.post("/evaluate", json=body)
    assert first.content == second.content


def test_named_policy_and_explain(client: Client) -> None:
    response = client.post(
        "/evaluate",
        json={"policy": "examples/friends-elsewhere", "request": sample("friend"), "explain": True},
    )
    body = response.json()
    assert body["rule"] == "already-connected-elsewhere"
    assert body["trace"]["rules"] == [
        {
            "rule": "already-connected-elsewhere",
            "source": "examples/friends-elsewhere.yaml:18",
            "matched": True,
        }
    ]
    assert body["trace"]["variables"]["elsewhere"] == {"value": True}


def test_the_default_policy_is_configurable(log: Any) -> None:
    app = app_for(Settings(policies=str(POLICIES), default_policy="examples/near-limit"))
    with TestClient(app) as client:
        body = client.post("/evaluate", json={"request": sample()}).json()
    assert body["policy"]["name"] == "examples/near-limit"


@pytest.mark.parametrize(
    ("content", "path", "message"),
    [
        (b'{"request": {"requester": {"name": 1}}}', "$.request.requester.name", "expected `str`"),
        (b'{"request": %s, "explain": 0}' % VALID, "$.explain", "expected `bool`, got `int`"),
        (
            b'{"request": %s, "surprise": 1}' % VALID,
            "$",
            "object contains unknown field `surprise`",
        ),
        (b'{"request": %s, "now": "2026-01-01T00:00:00"}' % VALID, "$.now", "timezone"),
        (b'{"locale": "english!", "request": %s}' % VALID, "$.locale", "expected `str` matching"),
    ],
)
def test_invalid_bodies_name_the_field(
    client: Client, content: bytes, path: str, message: str
) -> None:
    response = client.post(
        "/evaluate", content=content, headers={"content-type": "application/json"}
    )
    body = problem(response, 400, "invalid-request")
    assert body["errors"][0]["path"] == path
    assert message in body["errors"][0]["message"]


def test_out_of_range_values_are_400(client: Client) -> None:
    request = sample()
    request["relationship"]["mutual_connections"] = -1
    body = problem(client.post("/evaluate", json={"request": request}), 400, "invalid-request")
    assert body["errors"] == [
        {"path": "$.request.relationship.mutual_connections", "message": "expected `int` >= 0"}
    ]


def test_integral_floats_count_as_integers(client: Client) -> None:
    request = sample()
    request["relationship"]["mutual_connections"] = 3.0
    assert client.post("/evaluate", json={"request": request}).status_code == 200
    request["relationship"]["mutual_connections"] = 3.5
    problem(client.post("/evaluate", json={"request": request}), 400, "invalid-request")


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        (b'{"request": ', "invalid JSON: input data was truncated (line 1, column 13)"),
        (b'{"policy": "\xff"}', "invalid UTF-8 (line 1, column 13)"),
        (b"", "invalid JSON: input data was truncated (line 1, column 1)"),
    ],
)
def test_malformed_json_is_400(client: Client, content: bytes, detail: str) -> None:
    response = client.post(
        "/evaluate", content=content, headers={"content-type": "application/json"}
    )
    assert problem(response, 400, "invalid-request")["detail"] == detail


def test_unknown_policy_is_404(client: Client) -> None:
    response = client.post(
        "/evaluate", json={"policy": "examples/near-limits", "request": sample()}
    )
    body = problem(response, 404, "unknown-policy")
    assert body["detail"] == (
        "unknown policy `examples/near-limits`; did you mean `examples/near-limit`?"
    )


def test_body_over_the_limit_is_413(log: Any) -> None:
    app = app_for(Settings(policies=str(POLICIES), max_body_bytes=2048))
    request = sample()
    request["message"] = "x" * 1900
    with TestClient(app) as client:
        ok = client.post("/evaluate", json={"request": sample()})
        too_large = client.post("/evaluate", json={"request": request})
    assert ok.status_code == 200
    problem(too_large, 413, "payload-too-large")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_wrong_content_type_is_415(client: Client, content_type: str) -> None:
    response = client.post(
        "/evaluate", content=b'{"request": {}}', headers={"content-type": content_type}
    )
    problem(response, 415, "unsupported-media-type")


def test_json_with_a_charset_or_a_suffix_is_fine(client: Client) -> None:
    for content_type in ("application/json; charset=utf-8", "application/vnd.handshake+json"):
        response = client.post(
            "/evaluate",
            content=b'{"request": {"requester": {"name": "A", "has_photo": true},'
            b' "recipient": {"name": "B", "has_photo": true}}}',
            headers={"content-type": content_type},
        )
        assert response.status_code == 200, response.text


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_wrong_method_is_405(client: Client, method: str) -> None:
    response = client.request(method, "/evaluate")
    problem(response, 405, "method-not-allowed")
    assert "POST" in response.headers["allow"]


def test_unknown_route_is_404(client: Client) -> None:
    problem(client.get("/nope"), 404, "not-found")


def test_batch_gives_each_item_its_own_result(client: Client) -> None:
    good = {"request": sample(), "now": NOW}
    items = [
        good,
        {**good, "policy": "team/sales"},
        {**good, "policy": "examples/friends-elsewhere", "request": sample("friend")},
    ]
    response = client.post("/evaluate/batch", json={"items": items})
    assert response.status_code == 200
    body = response.json()
    assert (body["decided"], body["failed"]) == (2, 1)
    results = body["results"]
    assert [r["index"] for r in results] == [0, 1, 2]
    assert [r["status"] for r in results] == [200, 404, 200]
    single = client.post("/evaluate", json=good).json()
    assert results[0]["decision"] == single  # same answer as a single call
    assert results[1]["problem"]["code"] == "unknown-policy"
    assert results[2]["decision"]["decision"] == "decline"


def test_a_batch_with_invalid_items_is_refused_naming_each(client: Client) -> None:
    """The contract types the items (`EvaluateBody`): a batch with one that is not is a 400,
    with every bad item's fields, so a client fixes them all at once."""
    good = {"request": sample(), "now": NOW}
    items = [good, {"request": {"requester": {"name": "A"}}}, good, {**good, "locale": 3}]
    body = problem(client.post("/evaluate/batch", json={"items": items}), 400, "invalid-request")
    assert body["errors"] == [
        {
            "path": "$.items[1].request.requester",
            "message": "object missing required field `has_photo`",
        },
        {"path": "$.items[3].locale", "message": "expected `str | null`, got `int`"},
    ]
    assert (
        body["detail"] == "$.items[1].request.requester: object missing required field `has_photo`"
    )
    # An item that is not an object at all breaks the batch's own schema.
    assert client.post("/evaluate/batch", json={"items": [good, "x"]}).status_code == 400


def test_a_valid_batch_and_its_item_by_item_reading_agree(client: Client) -> None:
    """All valid: decoded in one go. An integral float (`3.0` for a count) is valid JSON
    Schema but not msgspec: read item by item. Both give the single calls' decisions."""
    good = {"request": sample("old-colleague"), "now": NOW}
    floaty = json.loads(json.dumps(good))
    floaty["request"]["relationship"]["mutual_connections"] = 3.0
    for items in ([good, good], [good, floaty]):
        singles = [client.post("/evaluate", json=item).json() for item in items]
        body = client.post("/evaluate/batch", json={"items": items}).json()
        assert body["failed"] == 0
        assert [r["decision"] for r in body["results"]] == singles


def test_batch_limits(client: Client, log: Any) -> None:
    problem(client.post("/evaluate/batch", json={"items": []}), 400, "invalid-request")
    body = problem(
        client.post("/evaluate/batch", json={"items": [{}] * 101}), 400, "invalid-request"
    )
    assert body["errors"][0]["path"] == "$.items"
    app = app_for(Settings(policies=str(POLICIES), batch_max_items=3))
    with TestClient(app) as small:
        good = {"request": sample()}
        assert small.post("/evaluate/batch", json={"items": [good] * 3}).status_code == 200
        body = problem(
            small.post("/evaluate/batch", json={"items": [good] * 4}), 400, "invalid-request"
        )
        assert body["errors"][0]["path"] == "$.items"


def test_an_internal_fault_is_a_problem_without_a_trace_and_is_logged(
    client: Client, log: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("SECRET-INTERNAL-DETAIL")

    monkeypatch.setattr("service.api.evaluation.evaluate", broken)
    response = client.post("/evaluate", json={"request": sample()})
    body = problem(response, 500, "internal-error")
    assert "SECRET-INTERNAL-DETAIL" not in response.text
    fault = next(e for e in log.events() if e["event"] == "internal_error")
    assert fault["decision_id"]
    assert fault["request_id"] == response.headers["x-request-id"]
    assert "SECRET-INTERNAL-DETAIL" in fault["exception"]
    assert body["detail"].endswith("logged with the request id")


def test_the_engine_setting_does_not_change_the_answer(client: Client) -> None:
    """HANDSHAKE_CEL_ENGINE=cel-python serves the same bytes as the default engine."""
    body = {"request": sample("old-colleague"), "now": NOW, "locale": "fr"}
    fast = client.post("/evaluate", json=body)
    with TestClient(app_for(Settings(policies=str(POLICIES), cel_engine="cel-python"))) as ref:
        reference = ref.post("/evaluate", json=body)
    assert fast.status_code == reference.status_code == 200
    assert fast.content == reference.content


def test_a_bare_request_is_told_to_be_wrapped(client: Client) -> None:
    """examples/requests holds connection requests; posted as they are, the answer says how."""
    body = problem(client.post("/evaluate", json=sample()), 400, "invalid-request")
    assert body["detail"] == (
        "object contains unknown field `id`; this is a connection request: send it as "
        '{"request": <it>}'
    )
