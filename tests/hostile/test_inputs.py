"""Input refused at the door, with a 400 naming the path: JSON nested past 64 levels (before
anything recursive runs: msgspec's decoder would raise RecursionError at ~2,500 levels, a 5 KB
body), and U+0000 in any string (so that no request can move a decision to another engine)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
from standardwebhooks import Webhook

from tests.api.conftest import sample
from tests.api.test_webhooks import PAYLOAD
from tests.hostile.conftest import AUTH, WEBHOOK_SECRET, Server, evaluate

DEEP = "[" * 2500 + "]" * 2500  # 5 KB


def deep_request() -> dict[str, object]:
    return {**sample(), "attributes": {"team": "__DEEP__"}}


def with_deep(document: object) -> bytes:
    return json.dumps(document).replace('"__DEEP__"', DEEP).encode()


def refused(response: httpx.Response, path: str) -> None:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "invalid-request"
    (error,) = problem["errors"]
    assert error["path"].startswith(path), error
    assert error["message"] == "nested deeper than 64 levels"


def test_a_deep_request_is_refused_with_its_path(server: Server) -> None:
    response = evaluate(server, with_deep({"request": deep_request()}))
    refused(response, "$.request.attributes.team[0][0]")


def test_a_deep_batch_item_is_refused_with_its_path(server: Server) -> None:
    items = [{"request": sample()}, {"request": deep_request()}]
    response = httpx.post(
        server.url + "/evaluate/batch",
        content=with_deep({"items": items}),
        headers={**AUTH, "content-type": "application/json"},
        timeout=10,
    )
    refused(response, "$.items[1].request.attributes.team[0]")


def test_a_deep_signed_webhook_payload_is_refused(server: Server) -> None:
    payload = {**PAYLOAD, "data": {**PAYLOAD["data"], "stage": "__DEEP__"}}  # type: ignore[dict-item]
    body = with_deep(payload)
    at = datetime.now(UTC)
    headers = {
        "webhook-id": "msg_deep",
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(WEBHOOK_SECRET).sign("msg_deep", at, body.decode()),
        "content-type": "application/json",
    }
    response = httpx.post(server.url + "/webhooks/example-crm", content=body, headers=headers)
    refused(response, "$.data.stage[0][0]")


def test_u0000_is_refused_in_a_request_and_in_a_batch_item(server: Server) -> None:
    request = {**sample(), "message": "hello\x00world"}
    response = evaluate(server, json.dumps({"request": request}).encode())
    assert response.status_code == 400, response.text
    assert response.json()["errors"] == [
        {"path": "$.request.message", "message": "U+0000 is not allowed in strings"}
    ]
    items = [{"request": sample()}, {"request": request}]
    batch = httpx.post(
        server.url + "/evaluate/batch", json={"items": items}, headers=AUTH, timeout=10
    )
    assert batch.status_code == 400, batch.text
    assert batch.json()["errors"] == [
        {"path": "$.items[1].request.message", "message": "U+0000 is not allowed in strings"}
    ]
