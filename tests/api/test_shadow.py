"""Shadow evaluation (HANDSHAKE_SHADOW_POLICIES): the caller's answer does not change by a
byte, and every live decision the candidate decides otherwise is counted and logged, with
both rules and revisions and no personal data."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import REQUESTS
from tests.api.server import events_of, running_server
from tests.conftest import POLICIES

NOW = "2026-12-01T09:00:00Z"
SAMPLES = sorted(REQUESTS.glob("*.json"))
FIRST_RULE = "  - id: anonymous\n"
EVERYONE = """  - id: everyone
    when: "true"
    decision: ignore
    rationale: The candidate ignores everyone.

"""


def candidate(tmp_path: Path) -> Path:
    """The bundled policies, but `default` ignores everyone (its first rule always matches),
    and one example policy is gone."""
    directory = tmp_path / "candidate"
    shutil.copytree(POLICIES, directory)
    default = directory / "default.yaml"
    text = default.read_text()
    assert FIRST_RULE in text
    default.write_text(text.replace(FIRST_RULE, EVERYONE + FIRST_RULE))
    (directory / "examples" / "met-or-worked.yaml").unlink()
    (directory / "examples" / "met-or-worked_test.yaml").unlink(missing_ok=True)
    return directory


def bodies() -> list[dict[str, Any]]:
    requests = [json.loads(path.read_text()) for path in SAMPLES]
    anonymous = {  # ignored by both
        "requester": {"name": "Kim Quiet", "has_photo": False},
        "recipient": {"name": "Sam", "has_photo": True},
    }
    return [{"request": r, "now": NOW} for r in [*requests, anonymous]] + [
        {"policy": "examples/met-or-worked", "request": requests[0], "now": NOW}
    ]


def samples(url: str, metric: str) -> dict[tuple[tuple[str, str], ...], float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == metric
    }


def test_shadow_changes_no_answer_and_counts_what_it_would_change(tmp_path: Path) -> None:
    posted = bodies()
    with running_server() as (url, _):
        plain = [httpx.post(f"{url}/evaluate", json=b, timeout=10) for b in posted]
        plain.append(httpx.post(f"{url}/evaluate/batch", json={"items": posted}, timeout=10))
    env = {"HANDSHAKE_SHADOW_POLICIES": str(candidate(tmp_path))}
    with running_server(env=env) as (url, process):
        shadowed = [httpx.post(f"{url}/evaluate", json=b, timeout=10) for b in posted]
        shadowed.append(httpx.post(f"{url}/evaluate/batch", json={"items": posted}, timeout=10))
        assert [r.content for r in shadowed] == [r.content for r in plain]
        assert all(r.status_code == 200 for r in shadowed)

        live = [json.loads(r.content) for r in shadowed[:-1]]
        expected: dict[tuple[tuple[str, str], ...], float] = {}
        for body, decision in zip(posted, live, strict=True):
            gone = body.get("policy") == "examples/met-or-worked"
            to = "unknown-policy" if gone else "ignore"
            if decision["decision"] != to:
                key = (
                    ("from", decision["decision"]),
                    ("policy", body.get("policy", "default")),
                    ("to", to),
                )
                expected[key] = expected.get(key, 0) + 2  # once alone, once in the batch
        assert len(expected) >= 2
        deadline = time.monotonic() + 10
        while samples(url, "handshake_shadow_disagreements_total") != expected:
            assert time.monotonic() < deadline, samples(url, "handshake_shadow_disagreements_total")
            time.sleep(0.05)
        outcomes = samples(url, "handshake_shadow_decisions_total")
        assert outcomes[(("result", "different"),)] == sum(expected.values())
        assert outcomes[(("result", "same"),)] == 2 * len(posted) - sum(expected.values())

        ready = httpx.get(f"{url}/health/ready", timeout=10).json()
        assert ready["shadow"]["last_load"] == "ok"
        assert ready["shadow"]["digest"] != ready["digest"]
        listed = httpx.get(f"{url}/policies", timeout=10).json()
        assert listed["shadow"]["digest"] == ready["shadow"]["digest"]
        events = [e for e in events_of(process) if e.get("event") == "shadow_disagreement"]
    assert len(events) == sum(expected.values())
    assert {e["shadow_digest"] for e in events} == {ready["shadow"]["digest"]}
    first = events[0]
    assert {"decision_id", "rule", "revision", "shadow_revision"} <= first.keys()
    assert {e["shadow_rule"] for e in events if e["shadow_decision"] == "ignore"} == {"everyone"}
    logged = json.dumps(events)
    for body in posted:  # no names, ids or notes
        person = body["request"]["requester"]
        assert person["name"] not in logged
        if body["request"].get("message"):
            assert body["request"]["message"] not in logged


def test_a_broken_candidate_is_reported_and_the_live_set_serves(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "default.yaml").write_text("apiVersion: handshake/v1\nkind: Nope\n")
    with running_server(env={"HANDSHAKE_SHADOW_POLICIES": str(broken)}) as (url, process):
        body = {"request": json.loads(SAMPLES[0].read_text())}
        assert httpx.post(f"{url}/evaluate", json=body, timeout=10).status_code == 200
        shadow = httpx.get(f"{url}/health/ready", timeout=10).json()["shadow"]
        assert shadow["last_load"] == "failed"
        assert "digest" not in shadow  # nothing loaded
        assert "default.yaml" in shadow["problems"][0]
        # Fixed, the candidate is picked up like the live set (watched).
        shutil.copy(POLICIES / "default.yaml", broken / "default.yaml")
        deadline = time.monotonic() + 15
        while httpx.get(f"{url}/health/ready", timeout=10).json()["shadow"]["last_load"] != "ok":
            assert time.monotonic() < deadline, "the fixed candidate was not reloaded"
            time.sleep(0.1)
        assert any(e.get("event") == "shadow_load_failed" for e in events_of(process))
