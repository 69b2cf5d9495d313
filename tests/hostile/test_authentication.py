"""Authentication fails closed: whatever happens to the tokens file of a running server, an
anonymous caller never gets an answer, and the failure is logged, counted and shown."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import sample
from tests.api.server import events_of, running_server

OPS = "ops-token-aaaaaaaaaaaaaaaa"
GUARDED = [
    ("POST", "/evaluate", {"request": sample()}),
    ("POST", "/evaluate/batch", {"items": [{"request": sample()}]}),
    ("GET", "/policies", None),
    ("GET", "/policies/default", None),
    ("POST", "/admin/reload", None),
]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def call(url: str, method: str, path: str, body: object, **kwargs: object) -> httpx.Response:
    return httpx.request(method, url + path, json=body, timeout=10, **kwargs)  # type: ignore[arg-type]


def emptied(path: Path) -> None:
    path.write_text("")


def comments_only(path: Path) -> None:
    path.write_text("# rotated out\n\n")


def removed(path: Path) -> None:
    path.unlink()


def unreadable_bytes(path: Path) -> None:
    path.write_bytes(b"\xff\xfe ops:" + OPS.encode())


def malformed(path: Path) -> None:
    path.write_text("ops:short\n")


def placeholder(path: Path) -> None:
    path.write_text("crm:REPLACE-WITH-A-LONG-RANDOM-TOKEN\n")


@pytest.mark.parametrize(
    "damage", [emptied, comments_only, removed, unreadable_bytes, malformed, placeholder]
)
def test_a_damaged_tokens_file_keeps_the_last_good_tokens(tmp_path: Path, damage) -> None:  # type: ignore[no-untyped-def]
    tokens = tmp_path / "tokens"
    tokens.write_text(f"ops:{OPS}\n")
    env = {"HANDSHAKE_API_TOKENS_FILE": str(tokens), "HANDSHAKE_WATCH": "false"}
    with running_server(env=env) as (url, process):
        damage(tokens)
        reloaded = call(url, "POST", "/admin/reload", None, headers=bearer(OPS))
        assert reloaded.status_code == 200, reloaded.text
        for method, path, body in GUARDED:
            anonymous = call(url, method, path, body)
            assert anonymous.status_code == 401, (path, anonymous.text)
            assert anonymous.headers["content-type"] == "application/problem+json"
            assert call(url, method, path, body, headers=bearer(OPS)).status_code == 200, path
        ready = httpx.get(url + "/health/ready").json()
        assert ready["tokens"]["status"] == "failed"
        assert "HANDSHAKE_API_TOKENS_FILE" in ready["tokens"]["problem"]
        metrics = httpx.get(url + "/metrics").text
        # two readings failed: the reload above, and the one in GUARDED
        assert 'handshake_token_reloads_total{result="failure"} 2.0' in metrics
        tokens.write_text(f"ops:{OPS}\n")  # mended: the next reload reads it again
        call(url, "POST", "/admin/reload", None, headers=bearer(OPS))
        assert httpx.get(url + "/health/ready").json()["tokens"]["status"] == "ok"
        log = events_of(process)
    failed = [e for e in log if e["event"] == "tokens_reload_failed"]
    assert [e["level"] for e in failed] == ["error", "error"]
    assert OPS not in json.dumps(log)


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"HANDSHAKE_API_TOKENS_FILE": "{empty}"}, "hold no token"),
        ({"HANDSHAKE_API_TOKENS_FILE": "{comments}"}, "hold no token"),
        ({"HANDSHAKE_API_TOKENS_FILE": "{missing}"}, "cannot read"),
        ({"HANDSHAKE_API_TOKENS": ""}, "hold no token"),
        ({"HANDSHAKE_API_TOKENS": "crm:REPLACE-WITH-A-LONG-RANDOM-TOKEN"}, "placeholder"),
        ({"HANDSHAKE_AUTHENTICATION": "tokens"}, "needs HANDSHAKE_API_TOKENS"),
        ({"HANDSHAKE_AUTHENTICATION": "none", "HANDSHAKE_API_TOKENS": OPS}, "`none`, but"),
    ],
)
def test_a_server_whose_tokens_are_not_usable_does_not_start(
    tmp_path: Path, env: dict[str, str], reason: str
) -> None:
    (tmp_path / "empty").write_text("")
    (tmp_path / "comments").write_text("# nobody yet\n")
    env = {
        k: v.format(**{n: str(tmp_path / n) for n in ("empty", "comments", "missing")})
        for k, v in env.items()
    }
    (line,) = [e for e in refused_start(env) if e["event"] == "not_started"]
    assert reason in line["reason"]


def test_a_placeholder_webhook_secret_is_refused_at_start_up() -> None:
    env = {"EXAMPLE_CRM_WEBHOOK_SECRET": "whsec_REPLACEWITHBASE64SECRET"}
    problems = [e for e in refused_start(env) if e["event"] == "policy_problem"]
    assert any("is a placeholder" in p["problem"] for p in problems), problems


def refused_start(env: dict[str, str]) -> list[dict[str, Any]]:
    """The log events of a server that must refuse to start (exit 2)."""
    with pytest.raises(RuntimeError, match="server exited with 2") as exited:  # noqa: SIM117
        with running_server(env=env, timeout=20):
            pass
    lines = str(exited.value).splitlines()[1:]
    return [json.loads(line) for line in lines if line.startswith("{")]
