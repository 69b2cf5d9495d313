"""Privacy-safe capture (HANDSHAKE_CAPTURE_PATH): sampled live requests as JSON lines that
`handshake diff --requests` replays to the same decisions, with none of the names, ids or
words they came with."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from service.api.capture import pseudonymous
from service.cli import main
from service.diff import read_requests
from service.policy import evaluate
from service.policy.request import ConnectionRequest, Person, Previous, Relationship
from service.settings import Settings, SettingsError
from tests.api.conftest import Log, app_for
from tests.api.server import running_server
from tests.conftest import POLICIES, bundled_policies
from tests.unit.test_diff import commit, git_repo

KEY = "capture-key-0123456789abcdef"
PENDING = POLICIES.parent / "examples" / "pending-requests.jsonl"
NOW = "2026-12-01T09:00:00Z"
PLANTED = {
    "id": "req-planted-4711",
    "message": "Hi Sam, it was great meeting you at the Lisbon offsite!",
    "requester": {
        "id": "member-planted-0815",
        "name": "Zelda Quintero-Planted",
        "first_name": "Zelda",
        "headline": "Head of Secret Projects at Initech",
        "company": "Initech Planted",
        "has_photo": True,
        "industry": "software",
    },
    "recipient": {"name": "Sam Rivera-Planted", "has_photo": True, "company": "Initech Planted"},
    "relationship": {"shared_employers": ["Initech Planted"], "mutual_connections": 2},
    "attributes": {"crm_stage": "lead", "email": "zelda@planted.example"},
}
SECRETS = [
    "req-planted-4711",
    "Lisbon",
    "member-planted-0815",
    "Zelda",
    "Quintero",
    "Secret Projects",
    "Initech",
    "Sam Rivera",
    "zelda@planted",
]


def pending_bodies() -> list[dict[str, Any]]:
    lines = PENDING.read_text().splitlines()
    return [{**json.loads(line), "now": NOW} for line in lines if line.strip()]


def test_a_captured_request_keeps_what_policies_read_and_nothing_personal() -> None:
    request = msgspec.convert(PLANTED, ConnectionRequest)
    captured = pseudonymous(request, KEY.encode(), frozenset({"crm_stage"}))
    text = json.dumps(captured)
    assert [s for s in SECRETS if s in text] == []
    assert captured["message"] == "x" * len(PLANTED["message"])
    assert captured["requester"]["headline"] == "x" * len(PLANTED["requester"]["headline"])
    # The same company is the same hash wherever it appears; people are told apart.
    company = captured["requester"]["company"]
    assert company.startswith("company-")
    assert captured["recipient"]["company"] == company
    assert captured["relationship"]["shared_employers"] == [company]
    assert captured["requester"]["name"] != captured["recipient"]["name"]
    assert captured["attributes"] == {"crm_stage": "lead"}
    assert captured["requester"]["industry"] == "software"
    # Another key, other hashes: without the key, nobody can tell who by guessing names.
    other = pseudonymous(request, b"another-key-0123456789", frozenset())
    assert other["requester"]["name"] != captured["requester"]["name"]
    msgspec.convert(captured, ConnectionRequest)  # still a valid request


def test_every_field_of_a_request_is_decided_on() -> None:
    """A field added to the request must be classified here (kept, hashed, shaped), or a
    captured request leaves it out: this fails until someone decides."""
    at = "2026-01-01T00:00:00Z"
    everything = msgspec.convert(
        {
            "id": "r",
            "received_at": at,
            "message": "m",
            "requester": {
                "id": "i", "name": "n", "first_name": "f", "headline": "h", "industry": "i",
                "function": "f", "region": "r", "company": "c", "has_photo": True,
                "connection_count": 1, "connection_limit": 2, "last_active_at": at,
            },
            "recipient": {"name": "n", "has_photo": False},
            "relationship": {
                "met_in_person": True, "worked_together": True, "shared_employers": ["e"],
                "mutual_connections": 1, "last_interaction_at": at, "known_via": "friend",
                "connected_elsewhere": ["signal"], "declined_at": at,
            },
            "previous": {"decision": "defer", "decided_at": at},
            "attributes": {"a": 1},
        },
        ConnectionRequest,
    )  # fmt: skip
    captured = pseudonymous(everything, KEY.encode(), frozenset({"a"}))
    default_only = {"platform"}  # left at its default above
    assert set(captured) | default_only == set(ConnectionRequest.__struct_fields__)
    assert set(captured["requester"]) == set(Person.__struct_fields__)
    assert set(captured["relationship"]) == set(Relationship.__struct_fields__)
    assert set(captured["previous"]) | {"rule"} == set(Previous.__struct_fields__)


def test_capture_needs_a_real_key(tmp_path: Path, log: Log) -> None:
    path = str(tmp_path / "c.jsonl")
    for key in (None, "short", "REPLACE-WITH-a-long-random-key"):
        with pytest.raises(SettingsError, match=r"^HANDSHAKE_CAPTURE_KEY: capture needs a secret"):
            app_for(Settings(policies=str(POLICIES), capture_path=path, capture_key=key))
    with pytest.raises(SettingsError, match=r"^HANDSHAKE_CAPTURE_PATH: cannot open"):
        app_for(Settings(policies=str(POLICIES), capture_path=str(tmp_path), capture_key=KEY))


def test_captured_lines_replay_through_diff_to_the_same_changes(tmp_path: Path) -> None:
    captured = tmp_path / "captured.jsonl"
    env = {
        "HANDSHAKE_CAPTURE_PATH": str(captured),
        "HANDSHAKE_CAPTURE_SAMPLE": "1",
        "HANDSHAKE_CAPTURE_KEY": KEY,
        "HANDSHAKE_CAPTURE_ATTRIBUTES": "crm_stage",
    }
    bodies = pending_bodies()
    with running_server(env=env) as (url, _):
        live = [httpx.post(f"{url}/evaluate", json=b, timeout=10).json() for b in bodies]
        planted = httpx.post(f"{url}/evaluate", json={"request": PLANTED}, timeout=10)
        assert planted.status_code == 200
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
    assert f'handshake_captured_requests_total{{result="written"}} {len(bodies) + 1}.0' in metrics
    text = captured.read_text()
    assert [s for s in SECRETS if s in text] == []
    lines = text.splitlines()
    assert len(lines) == len(bodies) + 1
    assert json.loads(lines[-1])["request"]["attributes"] == {"crm_stage": "lead"}
    recorded = tmp_path / "recorded.jsonl"
    recorded.write_text("".join(json.dumps(b) + "\n" for b in bodies))
    (tmp_path / "captured-pending.jsonl").write_text("\n".join(lines[:-1]) + "\n")

    # A change of policy, judged on the recorded requests and on their captured copies.
    repo = tmp_path / "repo"
    repo.mkdir()
    git_repo(repo)
    shutil.copytree(POLICIES, repo / "policies")
    commit(repo, "policies")
    default = repo / "policies" / "default.yaml"
    default.write_text(
        default.read_text().replace(
            "industries: [software, data]", "industries: [software, data, insurance]"
        )
    )

    def changes(corpus: Path) -> list[tuple[int, str, str]]:
        argv = ["diff", "--policies", str(repo / "policies"), "main", "--requests", str(corpus)]
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("sys.stdout", out := _Out())
            assert main([*argv, "--format", "json"]) == 1
        return sorted(
            (int(c["source"].rsplit(":", 1)[1]), c["before"]["decision"], c["after"]["decision"])
            for c in json.loads(out.text)["changes"]
            if c["source"].startswith(corpus.name)
        )

    original = changes(recorded)
    assert original  # the change moves some of them
    assert changes(tmp_path / "captured-pending.jsonl") == original
    # Each captured request is decided as it was live.
    replayed = read_requests(tmp_path / "captured-pending.jsonl", "default", datetime.now(UTC))
    again = [evaluate(bundled_policies(), r.policy, r.request, now=r.now) for r in replayed]
    assert [(d.decision, d.rule) for d in again] == [(d["decision"], d["rule"]) for d in live]


class _Out:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        pass
