"""`handshake map` (service/policy/decision_map.py): it finds a planted dead rule and a
planted region where a condition fails, names what each rule's regions share, and says when
it was capped."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from service.cli import main
from service.policy import load_policies
from service.policy.decision_map import explore
from tests.conftest import POLICIES, bundled_policies

NOW = datetime(2026, 11, 22, 9, tzinfo=UTC)
PLANTED = """\
apiVersion: handshake/v1
kind: ConnectionPolicy
params: {employers: [Acme]}
rules:
  - id: dead
    when: >-
      request.relationship.mutual_connections > 10 &&
      request.relationship.mutual_connections < 5
    decision: accept
    rationale: never
  - id: fragile
    description: fails where the list is empty
    when: request.relationship.shared_employers[0] == "Globex"
    decision: defer
    rationale: shared
  - id: acme
    when: request.relationship.shared_employers.exists(e, e in params.employers)
    decision: accept
    rationale: acme
  - id: friend
    when: has(request.relationship.known_via) && request.relationship.known_via == "friend"
    decision: decline
    rationale: friend
    reply: {en: "Hi!"}
default: {decision: ignore, rationale: none}
"""


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    (tmp_path / "p.yaml").write_text(PLANTED)
    return tmp_path


def test_a_dead_rule_and_a_failing_region_are_found(planted: Path) -> None:
    found = explore(load_policies(planted), "p", NOW)
    assert not found.capped
    assert found.unreached == ["dead"]
    assert found.dimensions["relationship.mutual_connections"] == [0, 4, 5, 6, 9, 10, 11]
    assert found.dimensions["relationship.shared_employers"] == [
        [],
        ["Globex"],
        ["Acme"],
        ["other"],
    ]
    regions = {rule.rule: rule for rule in found.rules}
    assert regions["fragile"].same["relationship.shared_employers"] == ["Globex"]
    assert regions["acme"].same["relationship.shared_employers"] == ["Acme"]
    assert regions["friend"].same["relationship.known_via"] == "friend"
    assert sum(rule.regions for rule in found.rules) == found.regions
    failing = {(rule, message) for _, rule, message in found.failures}
    assert failing == {("fragile", "index error: index=0 size=0")}
    assert all(region["relationship.shared_employers"] == [] for region, _, _ in found.failures)


def test_a_cap_spreads_the_regions_over_the_space() -> None:
    found = explore(bundled_policies(), "default", NOW, max_regions=500)
    assert (found.capped, found.regions) == (True, 500)
    assert found.space > 500
    for values in found.dimensions.values():  # every value of every field still occurs
        assert len(values) <= 500


def test_every_bundled_rule_is_reached(capsys: pytest.CaptureFixture[str]) -> None:
    policy_set = bundled_policies()
    for name in policy_set.policies:
        found = explore(policy_set, name, NOW)
        assert found.unreached == [], name
    assert explore(policy_set, "examples/team-sales", NOW).unexplored == ["referred-by-colleague"]


def test_the_command(planted: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["map", "p", "--policies", str(planted), "--now", "2026-11-22T09:00:00Z"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("p: 56 kinds of request, varying:")  # 4 lists x 7 counts x 2
    assert "\nno request explored reaches: dead\n" in out
    assert "`fragile` fails (index error: index=0 size=0) for:" in out
    argv = ["map", "p", "--policies", str(planted), "--format", "json", "--max-regions", "10"]
    assert main(argv) == 0
    body = json.loads(capsys.readouterr().out)
    assert (body["regions"], body["capped"]) == (10, True)
    assert main(["map", "nope", "--policies", str(POLICIES)]) == 2
