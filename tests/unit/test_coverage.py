"""`handshake test --coverage` (service/policy/coverage.py): numbers pinned on a small policy
whose suite leaves a rule, the default and one branch unreached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from junitparser import Failure, JUnitXml

from service.cli import main
from service.policy import load_policies
from service.policy.coverage import measure
from service.policy.suite import load_suites

POLICY = """\
apiVersion: handshake/v1
kind: ConnectionPolicy
variables:
  busy: request.relationship.mutual_connections > 100 || request.message == ""
rules:
  - id: known
    when: request.relationship.met_in_person && request.relationship.mutual_connections > 3
    decision: accept
    rationale: met
  - id: faceless
    when: '!request.requester.has_photo'
    decision: ignore
    rationale: no photo
  - id: never
    when: request.relationship.worked_together && variables.busy
    decision: accept
    rationale: worked
default: {decision: ignore, rationale: nothing}
"""
SUITE = """\
policy: p
now: 2026-11-22T09:00:00Z
cases:
  - name: met, with mutual connections
    request:
      requester: {name: A, has_photo: true}
      recipient: {name: B, has_photo: true}
      relationship: {met_in_person: true, mutual_connections: 5}
    expect: {rule: known}
  - name: no photo
    request:
      requester: {name: A, has_photo: false}
      recipient: {name: B, has_photo: true}
    expect: {rule: faceless}
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "p.yaml").write_text(POLICY)
    (tmp_path / "p_test.yaml").write_text(SUITE)
    return tmp_path


def test_what_the_cases_reached(tree: Path) -> None:
    policy_set = load_policies(tree)
    (coverage,) = measure(policy_set, tree, load_suites(tree, policy_set.policies))
    assert coverage.cases == 2
    assert coverage.matched == {"known", "faceless"}
    assert set(coverage.rules) == {"known", "faceless", "never", "default"}
    seen = {branch.text: branch.seen for branch in coverage.branches}
    assert seen == {
        "request.relationship.met_in_person": {True, False},
        "request.relationship.mutual_connections > 3": {True, False},
        "request.requester.has_photo": {False},  # the first case decided before this rule
        "request.relationship.worked_together": set(),  # `never` was never tried
        "variables.busy": set(),
        "request.relationship.mutual_connections > 100": set(),  # `busy` never computed
        'request.message == ""': set(),
    }
    assert coverage.branch_percent == pytest.approx(100 * 5 / 14)
    assert coverage.variables == {"busy": "p.yaml:4:3"}
    assert not coverage.evaluated
    assert list(coverage.uncovered()) == [
        "p.yaml:14:5: rule `never` never matched",
        "p.yaml:18:10: the default never reached",
        "p.yaml:11:13: `request.requester.has_photo` never true",
        "p.yaml:15:11: `request.relationship.worked_together` never true",
        "p.yaml:15:11: `request.relationship.worked_together` never false",
        "p.yaml:15:51: `variables.busy` never true",
        "p.yaml:15:51: `variables.busy` never false",
        "p.yaml:4:9: `request.relationship.mutual_connections > 100` never true",
        "p.yaml:4:9: `request.relationship.mutual_connections > 100` never false",
        'p.yaml:4:58: `request.message == ""` never true',
        'p.yaml:4:58: `request.message == ""` never false',
        "p.yaml:4:3: variable `busy` never evaluated",
    ]


def test_the_command_reports_and_enforces_a_minimum(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["test", "--coverage", str(tree)]) == 0
    out = capsys.readouterr().out
    assert "  p: 2 cases; rules 2/4, branches 36%, variables 0/1, locales 0/0" in out
    assert "    p.yaml:11:13: `request.requester.has_photo` never true" in out
    assert out.rstrip().endswith("branches: 5/14 (35.7%)")
    assert main(["test", "--coverage", "--min-coverage", "35", str(tree)]) == 0
    capsys.readouterr()
    assert main(["test", "--coverage", "--min-coverage", "40", str(tree)]) == 1
    err = capsys.readouterr().err
    assert "branch coverage 35.7% is below --min-coverage 40" in err


def test_junit_output_is_what_ci_systems_read(
    tree: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    cases_file = tree / "p_test.yaml"
    text = cases_file.read_text()
    cases_file.write_text(text.replace("expect: {rule: faceless}", "expect: {rule: known}"))
    assert main(["test", "--format", "junit", "--coverage", str(tree)]) == 1
    out, err = capsys.readouterr()
    assert "coverage (cel-expr-python):" in err  # the XML on stdout stays whole
    report = tmp_path / "junit.xml"
    report.write_text(out)
    xml = JUnitXml.fromfile(str(report))
    suites = {suite.name: suite for suite in xml}
    assert set(suites) == {"cel-expr-python", "cel-python"}
    for suite in suites.values():
        assert (suite.tests, suite.failures) == (2, 1)
        cases = {case.name: case for case in suite}
        assert cases["p > met, with mutual connections"].is_passed
        failed = cases["p > no photo"]
        assert failed.classname == "p"
        (failure,) = failed.result
        assert isinstance(failure, Failure)
        assert failure.message == "rule: expected `known`, got `faceless`"


def test_json_output(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["test", "--format", "json", "--coverage", "--engine", "cel-python", str(tree)]
    assert main(argv) == 0
    body = json.loads(capsys.readouterr().out)
    assert (body["passed"], body["failed"], body["engines"]) == (2, 0, ["cel-python"])
    assert body["cases"][1] == {
        "engine": "cel-python",
        "policy": "p",
        "title": "p > no photo",
        "file": f"{tree}/p_test.yaml",
        "line": 10,
        "failures": [],
    }
    (coverage,) = body["coverage"]
    assert coverage["branches"] == {"covered": 5, "total": 14}
    assert coverage["rules"] == {"matched": 2, "total": 4}


def test_check_strict_names_a_policy_without_a_suite(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tree / "lonely.yaml").write_text(POLICY)
    assert main(["check", str(tree)]) == 0
    assert "lonely" not in capsys.readouterr().out
    assert main(["check", "--strict", str(tree)]) == 1
    out = capsys.readouterr().out
    assert f"{tree}/lonely.yaml: warning: no test suite names this policy" in out
    assert "p.yaml: warning" not in out
