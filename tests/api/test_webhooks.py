"""POST /webhooks/{source}: signed with the official `standardwebhooks` package and GitHub-style."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import TestClient
from standardwebhooks import Webhook

from service.api import create_app
from service.settings import Settings
from tests.api.conftest import Log, app_for
from tests.conftest import POLICIES, bundled_policies
from tests.strategies import JSON, NAME

Client = TestClient[Litestar]
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
PREVIOUS = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
OTHER = "whsec_bm90IHRoZSByaWdodCBzZWNyZXQgYXQgYWxs"
GITHUB_SECRET = "it's a secret to everybody"
PAYLOAD = {
    "type": "invitation.created",
    "data": {
        "invitation_id": "inv_123",
        "sent_at": "2026-11-22T08:00:00Z",
        "note": "",
        "sender": {"id": "u-9", "full_name": "Jordan Lee", "avatar_url": "https://x/a.png"},
        "owner": {"name": "Sam Rivera", "connections": 1200},
        "mutual_count": 3,
        "stage": "lead",
    },
}
INBOX = {"invite": {"text": "", "from": {"name": "Kim", "photo": False}, "mutuals": 0}}


@pytest.fixture
def app(tmp_path: Path, log: Log, monkeypatch: pytest.MonkeyPatch) -> Litestar:
    monkeypatch.setenv("EXAMPLE_CRM_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("EXAMPLE_CRM_WEBHOOK_SECRET_PREVIOUS", PREVIOUS)
    monkeypatch.setenv("INBOX_TOOL_WEBHOOK_SECRET", GITHUB_SECRET)
    return app_for(Settings(policies=str(POLICIES), watch=False))


@pytest.fixture
def client(app: Litestar) -> Any:
    with TestClient(app) as client:
        yield client


def signed(
    payload: Any = PAYLOAD,
    *,
    secret: str = SECRET,
    msg_id: str = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W",
    at: datetime | None = None,
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    timestamp = at or datetime.now(UTC)
    signature = Webhook(secret).sign(msg_id, timestamp, body.decode())
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }
    return body, headers


def github(
    payload: Any = INBOX, secret: str = GITHUB_SECRET, delivery: str = "d-1"
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return body, {
        "x-hub-signature-256": f"sha256={digest}",
        "x-inbox-delivery": delivery,
        "x-inbox-account": "Sam Rivera",
        "content-type": "application/json",
    }


def post(client: Client, source: str, body: bytes, headers: Any) -> Any:
    return client.post(f"/webhooks/{source}", content=body, headers=headers)


def rejected(response: Any, code: str) -> dict[str, Any]:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Signature")
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert body["type"] == f"urn:handshake:problem:{code}"
    return body


def test_a_valid_delivery_gets_the_decision(client: Client) -> None:
    at = datetime.now(UTC).replace(microsecond=0)
    response = post(client, "example-crm", *signed(at=at))
    assert response.status_code == 200, response.text
    decision = response.json()
    assert decision["decision"] == "defer"
    assert decision["rule"] == "ask-for-context"
    assert decision["reply"]["text"].startswith("Hi Jordan Lee,")
    assert decision["policy"]["name"] == "default"
    assert datetime.fromisoformat(decision["evaluated_at"]) == at  # the webhook's own time
    people = {"requester": {"name": "A", "has_photo": True}}
    people["recipient"] = {"name": "B", "has_photo": True}
    same_document = client.post("/evaluate", json={"request": people}).json()
    assert set(decision) == set(same_document)


@pytest.mark.parametrize(
    ("where", "path"),
    [
        (("sender", "full_name"), "$.data.sender.full_name"),
        (("unread",), "$.data.unread"),  # a field the mapping does not read
        (("tags\x00x",), "$.data"),  # a key: the C++ runtime would read it as `tags`
    ],
)
def test_a_payload_with_u0000_is_refused_with_its_path(
    client: Client, where: tuple[str, ...], path: str
) -> None:
    """Google's CEL would cut "Jordan\\x00Lee" short: no payload may decide on a cut value."""
    payload = json.loads(json.dumps(PAYLOAD))
    target = payload["data"]
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = "Jordan\x00Lee" if "\x00" not in where[-1] else ["colleague"]
    response = post(client, "example-crm", *signed(payload))
    assert response.status_code == 400, response.text
    (error,) = response.json()["errors"]
    assert error == {"path": path, "message": "U+0000 is not allowed in strings"}


def test_a_retry_gets_identical_bytes_from_any_replica(client: Client, app: Litestar) -> None:
    body, headers = signed()
    first = post(client, "example-crm", body, headers)
    again = post(client, "example-crm", body, headers)
    other_replica = app_for(Settings(policies=str(POLICIES), watch=False))
    with TestClient(other_replica) as other:
        third = post(other, "example-crm", body, headers)
    assert first.status_code == 200
    assert first.content == again.content == third.content
    body2, headers2 = signed(msg_id="msg_another")
    assert (
        post(client, "example-crm", body2, headers2).json()["decision_id"]
        != first.json()["decision_id"]
    )


def test_rotated_secrets_both_verify(
    client: Client, monkeypatch: pytest.MonkeyPatch, log: Log
) -> None:
    assert post(client, "example-crm", *signed(secret=PREVIOUS)).status_code == 200
    monkeypatch.delenv("EXAMPLE_CRM_WEBHOOK_SECRET_PREVIOUS")
    rotated = app_for(Settings(policies=str(POLICIES), watch=False))
    with TestClient(rotated) as client2:
        assert post(client2, "example-crm", *signed()).status_code == 200
        rejected(post(client2, "example-crm", *signed(secret=PREVIOUS)), "no-matching-signature")


def test_several_signatures_any_valid_one_counts(client: Client) -> None:
    body, headers = signed()
    wrong = signed(secret=OTHER)[1]["webhook-signature"]
    headers["webhook-signature"] = f"{wrong} v2,abc {headers['webhook-signature']}"
    assert post(client, "example-crm", body, headers).status_code == 200


def test_wrong_secret_and_tampered_body(client: Client) -> None:
    rejected(post(client, "example-crm", *signed(secret=OTHER)), "no-matching-signature")
    body, headers = signed()
    rejected(
        post(client, "example-crm", body.replace(b"Jordan", b"Jordon"), headers),
        "no-matching-signature",
    )


@pytest.mark.parametrize(
    "shift", [timedelta(minutes=-6), timedelta(minutes=6), timedelta(days=-400)]
)
def test_old_and_future_timestamps(client: Client, shift: timedelta) -> None:
    response = post(client, "example-crm", *signed(at=datetime.now(UTC) + shift))
    rejected(response, "timestamp-out-of-tolerance")


def test_within_tolerance_is_fine(client: Client) -> None:
    assert (
        post(
            client, "example-crm", *signed(at=datetime.now(UTC) - timedelta(minutes=4))
        ).status_code
        == 200
    )


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_headers(client: Client, missing: str) -> None:
    body, headers = signed()
    del headers[missing]
    assert rejected(post(client, "example-crm", body, headers), "missing-header")["detail"] == (
        f"`{missing}` is missing"
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("webhook-timestamp", "yesterday"),
        ("webhook-timestamp", "-1"),
        ("webhook-signature", "v1,not base64!"),
        ("webhook-signature", "v2,abc"),
        ("webhook-signature", "v1"),
        ("webhook-signature", "x" * 5000),
    ],
)
def test_malformed_headers(client: Client, name: str, value: str) -> None:
    body, headers = signed()
    headers[name] = value
    rejected(post(client, "example-crm", body, headers), "malformed-header")


def test_non_ascii_and_duplicated_headers(client: Client) -> None:
    body, headers = signed()
    raw = [(k.encode(), v.encode()) for k, v in headers.items() if k != "webhook-signature"]
    non_ascii = [*raw, (b"webhook-signature", "v1,é".encode())]
    rejected(
        client.post("/webhooks/example-crm", content=body, headers=non_ascii), "malformed-header"
    )
    twice = [*raw, (b"webhook-signature", headers["webhook-signature"].encode())] * 1
    twice += [(b"webhook-signature", headers["webhook-signature"].encode())]
    rejected(client.post("/webhooks/example-crm", content=body, headers=twice), "malformed-header")


def test_github_style(client: Client) -> None:
    response = post(client, "inbox-tool", *github())
    assert response.status_code == 200, response.text
    assert response.json()["policy"]["name"] == "examples/who-is-this"
    assert response.json()["rule"] == "anonymous"
    rejected(post(client, "inbox-tool", *github(secret="wrong")), "no-matching-signature")
    body, headers = github()
    headers["x-hub-signature-256"] = "sha1=abc"
    rejected(post(client, "inbox-tool", body, headers), "malformed-header")
    del headers["x-hub-signature-256"]
    rejected(post(client, "inbox-tool", body, headers), "missing-header")


def test_github_delivery_ids_make_decision_ids(client: Client) -> None:
    first = post(client, "inbox-tool", *github(delivery="d-1")).json()["decision_id"]
    other = post(client, "inbox-tool", *github(delivery="d-2")).json()["decision_id"]
    assert first != other


def test_a_payload_that_does_not_map_is_422_naming_the_leaf(client: Client) -> None:
    payload = json.loads(json.dumps(PAYLOAD))
    del payload["data"]["sender"]["full_name"]
    response = post(client, "example-crm", *signed(payload))
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "unmappable-payload"
    (error,) = body["errors"]
    assert error["path"] == "$.requester.name"
    assert error["message"] == "no such key `full_name`"
    assert error["mapping"].endswith("policies/webhooks.yaml:21")


def test_a_mapped_value_that_breaks_the_schema_is_422(client: Client) -> None:
    payload = json.loads(json.dumps(PAYLOAD))
    payload["data"]["mutual_count"] = "three"
    body = post(client, "example-crm", *signed(payload)).json()
    assert body["status"] == 422
    assert body["errors"][0]["path"] == "$.relationship.mutual_connections"
    assert body["errors"][0]["mapping"].endswith("policies/webhooks.yaml:31")


def test_optional_fields_missing_from_the_payload_are_left_out(client: Client) -> None:
    payload = json.loads(json.dumps(PAYLOAD))
    del payload["data"]["sent_at"], payload["data"]["stage"]
    assert post(client, "example-crm", *signed(payload)).status_code == 200


def test_a_signed_body_that_is_not_json_is_400(client: Client) -> None:
    body, headers = signed()
    body = b"{not json"
    headers["webhook-signature"] = Webhook(SECRET).sign(
        headers["webhook-id"], datetime.now(UTC), body.decode()
    )
    headers["webhook-timestamp"] = str(int(datetime.now(UTC).timestamp()))
    response = post(client, "example-crm", body, headers)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid-request"


def test_unknown_source_and_too_large(
    client: Client, log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    response = post(client, "nope", *signed())
    assert response.status_code == 404
    assert response.json()["code"] == "unknown-source"
    monkeypatch.setenv("EXAMPLE_CRM_WEBHOOK_SECRET", SECRET)
    small = app_for(Settings(policies=str(POLICIES), watch=False, max_body_bytes=1024))
    big = json.loads(json.dumps(PAYLOAD))
    big["data"]["note"] = "x" * 2000
    with TestClient(small) as client2:
        assert post(client2, "example-crm", *signed(big)).status_code == 413


def test_a_source_without_secrets_refuses_everything(log: Log, tmp_path: Path) -> None:
    tree = tmp_path / "policies"
    shutil.copytree(POLICIES, tree)
    app = create_app(Settings(policies=str(tree), watch=False))  # no secret in the environment
    with TestClient(app) as client:
        rejected(post(client, "example-crm", *signed()), "no-matching-signature")


def test_webhook_configuration_problems_are_load_errors(tmp_path: Path) -> None:
    from service.policy import PolicyError
    from service.webhook_sources import load_webhooks

    (tmp_path / "w.yaml").write_text(
        "apiVersion: handshake/v1\nkind: WebhookSources\nsources:\n"
        "  crm:\n    scheme: standard-webhooks\n    secrets: [{env: HANDSHAKE_SECRET}]\n"
        "    mapping: {requester: {name: payload.n, has_photo: true}}\n"
    )
    policies = bundled_policies()
    with pytest.raises(PolicyError) as caught:
        load_webhooks(tmp_path / "w.yaml", policies.policies, policies.engine, "default", {})
    assert [str(p).split(": ", 1)[1] for p in caught.value.problems] == [
        "$.sources.crm.secrets[0]: `HANDSHAKE_*` variables are settings; name secrets otherwise"
    ]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    payload=st.one_of(
        JSON,
        st.fixed_dictionaries({"type": st.just("invitation.created"), "data": JSON}),
        st.fixed_dictionaries(
            {"type": st.just("invitation.created"), "data": st.dictionaries(NAME, JSON, max_size=8)}
        ),
    ),
    source=st.sampled_from(["example-crm", "inbox-tool"]),
)
def test_fuzzed_signed_deliveries_get_an_answer_never_a_fault(
    client: Client, log: Log, payload: Any, source: str
) -> None:
    """Whatever a correctly signed payload holds: a decision, or a 4xx problem; never a 5xx,
    and nothing logged as an error."""
    body, headers = signed(payload) if source == "example-crm" else github(payload)
    response = post(client, source, body, headers)
    assert response.status_code in (200, 400, 422), response.text
    if response.status_code != 200:
        assert response.headers["content-type"] == "application/problem+json"
    assert not [e for e in log.events() if e.get("level") == "error"]
