"""`handshake diff` on a throw-away git repository whose commits the test makes."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from service.cli import main
from tests.conftest import MINIMAL_POLICY, POLICIES

POLICY = """\
apiVersion: handshake/v1
kind: ConnectionPolicy
rules:
  - id: met
    when: request.relationship.met_in_person
    decision: accept
    rationale: met
  - id: no-note
    when: request.message == ""
    decision: defer
    rationale: no note
    reply: {en: "Hi {{ request.requester.name }}, what is it about?"}
default: {decision: ignore, rationale: nothing}
"""
SUITE = """\
policy: team
now: 2026-01-01T00:00:00Z
fixtures:
  base: &base {requester: {name: Ada, has_photo: true}, recipient: {name: Sam, has_photo: true}}
cases:
  - name: met
    request: {<<: *base, message: hi, relationship: {met_in_person: true}}
    expect: {rule: met}
  - name: no note
    request: *base
    expect: {rule: no-note}
  - name: a note
    request: {<<: *base, message: hello}
    expect: {rule: default}
"""


def sh(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, timeout=60)


def git_repo(path: Path) -> Path:
    """A new git work tree at `path`, on `main`, that can commit."""
    sh(path, "init", "-q", "-b", "main")
    sh(path, "config", "user.email", "test@example.com")
    sh(path, "config", "user.name", "Test")
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    git_repo(tmp_path)
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "team.yaml").write_text(POLICY)
    (policies / "team_test.yaml").write_text(SUITE)
    (policies / "old.yaml").write_text(MINIMAL_POLICY)
    commit(tmp_path, "first")
    return tmp_path


def commit(repo: Path, message: str) -> None:
    sh(repo, "add", "-A")
    sh(repo, "commit", "-q", "-m", message)


Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], repo: Path) -> Run:
    def run(*args: str) -> tuple[int, str, str]:
        code = main(["diff", "--policies", str(repo / "policies"), *args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def change(repo: Path, old: str, new: str) -> None:
    path = repo / "policies" / "team.yaml"
    path.write_text(path.read_text().replace(old, new))


def report(run: Run, *args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    code, out, err = run(*args, "--format", "json")
    assert err == ""
    return code, json.loads(out)


def test_no_change_exits_0(run: Run) -> None:
    code, out, _ = run("main")
    assert code == 0
    assert out.splitlines()[-1] == "no changes"


def test_changed_decision_rule_and_reply(run: Run, repo: Path) -> None:
    change(repo, "decision: defer", "decision: decline")  # no-note: decision
    change(repo, "what is it about?", "what brings you here?")  # no-note: reply
    change(repo, "when: request.relationship.met_in_person", "when: false")  # met: rule
    code, body = report(run, "main")
    assert code == 1
    by_case = {c["source"].split(" ", 1)[1]: c for c in body["changes"]}
    assert by_case["no note"]["fields"] == ["decision", "reply"]
    assert by_case["no note"]["before"]["decision"] == "defer"
    assert by_case["no note"]["after"] == {
        "decision": "decline",
        "rule": "no-note",
        "reply": "Hi Ada, what brings you here?",
    }
    assert by_case["met"]["fields"] == ["decision", "rule"]
    assert (by_case["met"]["before"]["rule"], by_case["met"]["after"]["rule"]) == ("met", None)
    assert "a note" not in by_case
    assert body["summary"]["team"] == {
        "requests": 3, "changed": 2, "decision": 2, "rule": 1, "reply": 1,
    }  # fmt: skip
    assert body["transitions"] == {"accept -> ignore": 1, "defer -> decline": 1}
    assert body["b"]["label"] == "work tree"
    assert body["b"]["revision"].endswith("-dirty")


def test_two_commits_and_the_text_report(run: Run, repo: Path) -> None:
    change(repo, "decision: defer", "decision: decline")
    commit(repo, "decline instead")
    code, out, _ = run("main~1", "main")
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == "main:policies/team_test.yaml:9 no note  [team] changed"
    assert lines[1].split() == ["decision:", '"defer"', "->", '"decline"']
    assert "  defer -> decline: 1" in lines
    assert lines[-1] == "changed"


def test_added_and_removed_policies(run: Run, repo: Path) -> None:
    (repo / "policies" / "old.yaml").unlink()
    (repo / "policies" / "new.yaml").write_text(POLICY)
    (repo / "policies" / "new_test.yaml").write_text(SUITE.replace("policy: team", "policy: new"))
    code, body = report(run, "main")
    assert code == 1
    assert body["policies"] == {"added": ["new"], "removed": ["old"]}
    added = [c for c in body["changes"] if c["status"] == "added"]
    assert {c["policy"] for c in added} == {"new"}
    assert all(c["before"] is None and c["after"] for c in added)


def test_recorded_requests(run: Run, repo: Path, tmp_path: Path) -> None:
    recorded = tmp_path / "recorded.jsonl"
    base = {
        "requester": {"name": "Bo", "has_photo": True},
        "recipient": {"name": "S", "has_photo": True},
    }
    recorded.write_text(
        json.dumps(base)
        + "\n\n"
        + json.dumps({"policy": "team", "request": {**base, "message": "x"}})
        + "\n"
    )
    change(repo, "decision: defer", "decision: decline")
    code, body = report(run, "main", "--requests", str(recorded), "--policy", "team")
    assert code == 1
    sources = {c["source"] for c in body["changes"]}
    assert "recorded.jsonl:1" in sources  # no note: defer -> decline
    assert "recorded.jsonl:3" not in sources  # a note: unchanged


def test_the_work_tree_is_not_touched(run: Run, repo: Path) -> None:
    change(repo, "decision: defer", "decision: decline")
    before = {p: p.read_bytes() for p in (repo / "policies").iterdir()}
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=repo, capture_output=True, check=True
    )
    run("main")
    assert {p: p.read_bytes() for p in (repo / "policies").iterdir()} == before
    after = subprocess.run(
        ["git", "status", "--porcelain"], cwd=repo, capture_output=True, check=True
    )
    assert after.stdout == status.stdout


def test_unknown_revision_exits_2(run: Run) -> None:
    code, out, err = run("no-such-branch")
    assert (code, out) == (2, "")
    assert err == "handshake: error: unknown revision `no-such-branch`\n"


def test_a_revision_without_the_policy_directory_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    git_repo(tmp_path)
    (tmp_path / "README").write_text("policies come later\n")
    commit(tmp_path, "before the policies")
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "team.yaml").write_text(POLICY)
    commit(tmp_path, "the policies")
    code = main(["diff", "--policies", str(tmp_path / "policies"), "HEAD~1"])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert err.startswith("HEAD~1:policies: no policy directory at this revision\n")


def test_a_broken_policy_at_one_revision_exits_2_naming_it(run: Run, repo: Path) -> None:
    change(repo, "decision: accept", "decision: acept")
    commit(repo, "broken")
    change(repo, "decision: acept", "decision: accept")  # the work tree is fine again
    code, _, err = run("main")
    assert code == 2
    assert "main:policies/team.yaml:6:15: $.rules[0].decision: invalid value `acept`" in err


def test_bad_recorded_requests_exit_2(run: Run, tmp_path: Path) -> None:
    recorded = tmp_path / "bad.jsonl"
    recorded.write_text('{"requester": {"name": "A"}}\n')
    code, _, err = run("main", "--requests", str(recorded))
    assert code == 2
    assert err.startswith(f"handshake: error: {recorded}:1: ")


def test_pending_requests_after_a_change_of_mind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/policy-workflow.md, "Changing your mind": the requests left pending that a
    widened field would now accept, from examples/pending-requests.jsonl."""
    git_repo(tmp_path)
    shutil.copytree(POLICIES, tmp_path / "policies")
    commit(tmp_path, "policies")
    default = tmp_path / "policies" / "default.yaml"
    text = default.read_text()
    assert "industries: [software, data]" in text
    default.write_text(
        text.replace("industries: [software, data]", "industries: [software, data, insurance]")
    )
    pending = POLICIES.parent / "examples" / "pending-requests.jsonl"
    code = main(
        [
            "diff",
            "--policies",
            str(tmp_path / "policies"),
            "main",
            "--requests",
            str(pending),
            "--format",
            "json",
        ]
    )
    body = json.loads(capsys.readouterr().out)
    assert code == 1
    now_accepted = sorted(
        c["source"]
        for c in body["changes"]
        if c["source"].startswith("pending-requests.jsonl")  # not the suites' cases
        and c["before"]["decision"] == "ignore"
        and c["after"]["decision"] == "accept"
    )
    assert now_accepted == ["pending-requests.jsonl:1", "pending-requests.jsonl:2"]
