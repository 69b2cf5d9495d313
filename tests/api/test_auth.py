"""Bearer tokens: missing, wrong, rotated (two at once, and a rotated file), what stays open."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from service.server import startup_warnings
from service.settings import Settings, SettingsError
from tests.api.conftest import TOKEN, Log, app_for, sample
from tests.conftest import POLICIES

Client = TestClient[Litestar]
OLD = "old-token-aaaaaaaaaaaaaaaa"
NEW = "new-token-bbbbbbbbbbbbbbbb"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def unauthorized(response: Any, code: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith('Bearer realm="handshake"')
    assert response.json()["code"] == code


@pytest.fixture
def guarded(log: Log) -> Any:
    app = app_for(Settings(policies=str(POLICIES), api_tokens=f"ops:{OLD}, crm:{NEW}"))
    with TestClient(app) as client:
        yield client


def test_a_missing_or_wrong_token_is_refused(guarded: Client) -> None:
    body = {"request": sample()}
    unauthorized(guarded.post("/evaluate", json=body), "missing-token")
    unauthorized(
        guarded.post("/evaluate", json=body, headers={"Authorization": "Basic x"}), "missing-token"
    )
    unauthorized(guarded.post("/evaluate", json=body, headers=bearer("nope-" * 4)), "invalid-token")
    unauthorized(guarded.get("/policies", headers=bearer(TOKEN)), "invalid-token")
    unauthorized(guarded.post("/evaluate/batch", json={"items": [body]}), "missing-token")
    unauthorized(guarded.get("/policies/default"), "missing-token")
    unauthorized(guarded.post("/admin/reload"), "missing-token")


def test_every_configured_token_works_and_names_the_caller(guarded: Client, log: Log) -> None:
    for token in (OLD, NEW):
        response = guarded.post("/evaluate", json={"request": sample()}, headers=bearer(token))
        assert response.status_code == 200
        assert guarded.get("/policies", headers=bearer(token)).status_code == 200
    callers = [e["caller"] for e in log.events() if e["event"] == "decision"]
    assert callers == ["ops", "crm"]


def test_health_docs_and_signed_webhooks_stay_open(guarded: Client) -> None:
    assert guarded.get("/health/live").status_code == 200
    assert guarded.get("/health/ready").status_code == 200
    assert guarded.get("/openapi.json").status_code == 200
    assert guarded.get("/metrics").status_code == 200
    response = guarded.post("/webhooks/example-crm", content=b"{}")
    assert response.json()["code"] == "missing-header"  # the signature guards it, not a token


def test_metrics_can_be_guarded(log: Log) -> None:
    settings = Settings(policies=str(POLICIES), api_tokens=OLD, metrics_require_token=True)
    with TestClient(app_for(settings)) as client:
        unauthorized(client.get("/metrics"), "missing-token")
        assert client.get("/metrics", headers=bearer(OLD)).status_code == 200


def test_a_tokens_file_is_read_again_on_reload(tmp_path: Path, log: Log) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# the operators\nops:{OLD}\n")
    app = app_for(Settings(policies=str(POLICIES), api_tokens_file=str(tokens), watch=False))
    with TestClient(app) as client:
        assert client.get("/policies", headers=bearer(OLD)).status_code == 200
        tokens.write_text(f"ops:{OLD}\nops-next:{NEW}\n")  # rotation: both for a while
        reloaded = client.post("/admin/reload", headers=bearer(OLD))
        assert reloaded.status_code == 200
        assert reloaded.json()["status"] == "ok"
        assert client.get("/policies", headers=bearer(NEW)).status_code == 200
        tokens.write_text(f"ops-next:{NEW}\n")  # the old one retired
        client.post("/admin/reload", headers=bearer(NEW))
        unauthorized(client.get("/policies", headers=bearer(OLD)), "invalid-token")


def test_tokens_are_never_logged(guarded: Client, log: Log) -> None:
    guarded.post("/evaluate", json={"request": sample()}, headers=bearer(OLD))
    guarded.post("/evaluate", json={"request": sample()}, headers=bearer(NEW + "x"))
    text = log.getvalue()
    assert OLD not in text
    assert NEW not in text
    assert json.loads(text.splitlines()[0])["caller"] == "ops"


def test_short_tokens_are_a_setting_error(log: Log) -> None:
    with pytest.raises(SettingsError, match="at least 16 characters"):
        app_for(Settings(policies=str(POLICIES), api_tokens="short"))


def test_a_loud_warning_when_open_beyond_loopback() -> None:
    assert startup_warnings(Settings(host="127.0.0.1"), authenticated=False) == []
    assert startup_warnings(Settings(host="0.0.0.0"), authenticated=True) == []
    ((event, fields),) = startup_warnings(Settings(host="0.0.0.0"), authenticated=False)
    assert event == "NO_AUTHENTICATION"
    assert "HANDSHAKE_API_TOKENS" in fields["detail"]
