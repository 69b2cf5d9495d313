"""Scoped tokens and webhook sources: each scope allows what it names and refuses the rest
with a 403 `out-of-scope` problem, on every route that decides or reads, the fast lane
included; a plain `name:token` keeps full access."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from service.api.auth import _listed
from service.api.scopes import parse_scopes, source_scopes
from service.settings import Settings, SettingsError
from tests.api.conftest import Log, app_for, sample
from tests.api.server import running_server
from tests.api.test_webhooks import SECRET, signed
from tests.conftest import POLICIES

Client = TestClient[Litestar]
OPS = "ops-token-aaaaaaaaaaaaaaaa"
SALES = "sales-token-bbbbbbbbbbbbbbbb"
SCRAPER = "scraper-token-cccccccccccccc"
ADMIN = "admin-token-dddddddddddddddd"
TOKENS = (
    f"ops:{OPS} sales:{SALES}:evaluate=examples/**,read=examples/**,"
    f"scraper:{SCRAPER}:metrics admin:{ADMIN}:admin"
)
IN_SCOPE = "examples/met-or-worked"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def out_of_scope(response: Any) -> str:
    assert response.status_code == 403, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "out-of-scope"
    return str(response.json()["detail"])


@pytest.fixture
def client(log: Log) -> Iterator[Client]:
    settings = Settings(policies=str(POLICIES), api_tokens=TOKENS, metrics_require_token=True)
    with TestClient(app_for(settings)) as client:
        yield client


@pytest.mark.parametrize(
    ("glob", "matches", "misses"),
    [
        ("sales/**", ["sales/a", "sales/a/b"], ["sales", "salesx/a", "x/sales/a"]),
        ("team-*", ["team-a", "team-"], ["team-a/b", "team"]),
        ("**/oncall", ["oncall", "a/oncall", "a/b/oncall"], ["a/oncallx"]),
        ("default", ["default"], ["default2", "x/default"]),
        ("a.b?", ["a.bc"], ["axbc", "a.b/"]),
    ],
)
def test_patterns(glob: str, matches: list[str], misses: list[str]) -> None:
    scopes = parse_scopes(f"evaluate={glob}")
    assert [name for name in matches if scopes.allows("evaluate", name)] == matches
    assert [name for name in misses if scopes.allows("evaluate", name)] == []
    assert not scopes.allows("read", matches[0])  # only what is granted


def test_entries_in_the_variable_keep_their_scopes() -> None:
    assert _listed(TOKENS) == [
        f"ops:{OPS}",
        f"sales:{SALES}:evaluate=examples/**,read=examples/**",
        f"scraper:{SCRAPER}:metrics",
        f"admin:{ADMIN}:admin",
    ]
    assert _listed(f"a:{OPS},b:{SALES}") == [f"a:{OPS}", f"b:{SALES}"]


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        (f"x:{OPS}:write=a", "HANDSHAKE_API_TOKENS: `write=a` is not a scope"),
        (f"x:{OPS}:read=a b", "at least 16 characters"),  # after a space: a new entry, `b`
        # A scope cut from its token never becomes a token that may do everything.
        (f"x:{OPS}:evaluate=sales/**, read=sales/emea/**", "`read=sales/emea/**` is a scope"),
        (f"x:{OPS},evaluate=default/**", "`evaluate=default/**` is a scope, not a token"),
        (f"x:{OPS}:", "`x` has an empty list of scopes"),
        (f"x:{OPS} y:{OPS}:read=a", "the same token is listed twice"),
        (f"x:{OPS}:read=a:b", "an entry is `name:token` or `name:token:scopes`"),
        (f"x:{OPS}:evaluate=(a|b)", "`(a|b)` is not a policy name pattern"),
    ],
)
def test_a_bad_scope_is_a_setting_error(tokens: str, message: str, log: Log) -> None:
    with pytest.raises(SettingsError) as raised:
        app_for(Settings(policies=str(POLICIES), api_tokens=tokens))
    assert message in str(raised.value)


def test_evaluate_within_scope_only(client: Client, log: Log) -> None:
    body = {"policy": IN_SCOPE, "request": sample()}
    assert client.post("/evaluate", json=body, headers=bearer(SALES)).status_code == 200
    detail = out_of_scope(
        client.post("/evaluate", json={"request": sample()}, headers=bearer(SALES))
    )
    assert detail == (
        "the token `sales` may not evaluate `default` "
        "(its scopes: evaluate=examples/**,read=examples/**)"
    )
    # Outside the scope, a policy that does not exist is refused the same way: no probing.
    out_of_scope(
        client.post(
            "/evaluate", json={"policy": "nope", "request": sample()}, headers=bearer(SALES)
        )
    )
    unknown = {"policy": "examples/nope", "request": sample()}
    assert client.post("/evaluate", json=unknown, headers=bearer(SALES)).status_code == 404
    # Within the scope, "did you mean" names only what the token may use: a pattern that
    # admits `**/near-limits` must not learn `examples/near-limit`, which it does not admit.
    narrow = f"n:{ADMIN}x:evaluate=**/near-limits,read=**/near-limits"
    with TestClient(app_for(Settings(policies=str(POLICIES), api_tokens=narrow))) as other:
        near = {"policy": "examples/near-limits", "request": sample()}
        answer = other.post("/evaluate", json=near, headers=bearer(ADMIN + "x"))
        assert answer.json()["detail"] == "unknown policy `examples/near-limits`"
        answer = other.get("/policies/examples/near-limits", headers=bearer(ADMIN + "x"))
        assert answer.json()["detail"] == "unknown policy `examples/near-limits`"
    answer = client.post(
        "/evaluate", json={**near, "policy": "examples/near-limits"}, headers=bearer(OPS)
    )
    assert "did you mean `examples/near-limit`?" in answer.json()["detail"]  # unscoped: helped
    out_of_scope(client.post("/evaluate", json=body, headers=bearer(SCRAPER)))
    assert (
        client.post("/evaluate", json={"request": sample()}, headers=bearer(OPS)).status_code == 200
    )
    decisions = [e for e in log.events() if e["event"] == "decision"]
    assert [(e["caller"], e["policy"]) for e in decisions] == [
        ("sales", IN_SCOPE),
        ("ops", "default"),
    ]


def test_batch_items_outside_the_scope_are_refused_one_by_one(client: Client) -> None:
    items = [{"policy": IN_SCOPE, "request": sample()}, {"request": sample()}]
    answer = client.post("/evaluate/batch", json={"items": items}, headers=bearer(SALES)).json()
    assert [item["status"] for item in answer["results"]] == [200, 403]
    assert answer["results"][1]["problem"]["code"] == "out-of-scope"
    assert (answer["decided"], answer["failed"]) == (1, 1)


def test_read_lists_and_shows_only_what_the_scope_names(client: Client) -> None:
    listed = client.get("/policies", headers=bearer(SALES)).json()["policies"]
    names = [p["name"] for p in listed]
    assert names
    assert all(name.startswith("examples/") for name in names)
    everything = [
        p["name"] for p in client.get("/policies", headers=bearer(OPS)).json()["policies"]
    ]
    assert set(names) < set(everything)
    assert "default" in everything
    assert client.get(f"/policies/{IN_SCOPE}", headers=bearer(SALES)).status_code == 200
    out_of_scope(client.get("/policies/default", headers=bearer(SALES)))
    out_of_scope(client.get("/policies/no-such", headers=bearer(SALES)))
    assert client.get("/policies", headers=bearer(SCRAPER)).json()["policies"] == []


def test_metrics_and_reload_need_their_scopes(client: Client) -> None:
    assert client.get("/metrics", headers=bearer(SCRAPER)).status_code == 200
    assert client.get("/metrics", headers=bearer(OPS)).status_code == 200
    out_of_scope(client.get("/metrics", headers=bearer(SALES)))
    assert client.post("/admin/reload", headers=bearer(ADMIN)).json()["status"] == "ok"
    assert client.post("/admin/reload", headers=bearer(OPS)).status_code == 200
    assert out_of_scope(client.post("/admin/reload", headers=bearer(SALES))) == (
        "the token `sales` may not admin (its scopes: evaluate=examples/**,read=examples/**)"
    )


def test_a_webhook_source_evaluates_only_within_its_scope(
    log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXAMPLE_CRM_WEBHOOK_SECRET", SECRET)
    merged = source_scopes("example-crm=examples/**, example-crm=default")
    assert merged is not None
    assert merged["example-crm"].allows("evaluate", "default")
    assert merged["example-crm"].allows("evaluate", "examples/x")
    assert not merged["example-crm"].allows("evaluate", "other")
    for scopes, allowed in (("example-crm=default", True), ("example-crm=examples/**", False)):
        settings = Settings(policies=str(POLICIES), watch=False, webhook_scopes=scopes)
        with TestClient(app_for(settings)) as client:
            body, headers = signed()
            answer = client.post("/webhooks/example-crm", content=body, headers=headers)
            if allowed:
                assert answer.status_code == 200, answer.text
            else:
                assert "the webhook source `example-crm` may not evaluate" in out_of_scope(answer)
            # A source the setting does not name may evaluate nothing.
    settings = Settings(policies=str(POLICIES), watch=False, webhook_scopes="other=**")
    with TestClient(app_for(settings)) as client:
        out_of_scope(client.post("/webhooks/example-crm", content=body, headers=headers))
    with pytest.raises(SettingsError, match=r"^HANDSHAKE_WEBHOOK_SCOPES: `crm` is not"):
        app_for(Settings(policies=str(POLICIES), webhook_scopes="crm"))


def test_the_fast_lane_of_a_real_server_keeps_to_the_scopes() -> None:
    with running_server(env={"HANDSHAKE_API_TOKENS": TOKENS}) as (url, _):
        body = {"policy": IN_SCOPE, "request": sample()}
        answer = httpx.post(f"{url}/evaluate", json=body, headers=bearer(SALES), timeout=10)
        assert answer.json()["policy"]["name"] == IN_SCOPE
        refused = httpx.post(
            f"{url}/evaluate", json={"request": sample()}, headers=bearer(SALES), timeout=10
        )
        out_of_scope(refused)
        full = httpx.post(
            f"{url}/evaluate", json={"request": sample()}, headers=bearer(OPS), timeout=10
        )
        assert full.json()["policy"]["name"] == "default"
