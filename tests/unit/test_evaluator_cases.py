"""The evaluator's behaviour, pinned by the YAML tables in tests/cases/evaluator/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.policy import load_policies
from service.policy.source import read_source
from service.policy.suite import load_suites, run_case
from tests.conftest import evaluator_bundles


@pytest.mark.parametrize("bundle", evaluator_bundles())
def test_evaluator_table(bundle: Path, tmp_path: Path) -> None:
    # Split the bundle into a policy file and its suite (JSON is YAML; anchors are resolved).
    data = read_source(bundle, bundle.name).data
    for name, text in data.pop("files", {}).items():  # other policies, e.g. a base
        (tmp_path / name).write_text(text, encoding="utf-8")
    (tmp_path / "policy.yaml").write_text(json.dumps(data.pop("policy")), encoding="utf-8")
    (tmp_path / "policy_test.yaml").write_text(json.dumps({**data, "policy": "policy"}))

    policy_set = load_policies(tmp_path)
    cases = load_suites(tmp_path, policy_set.policies)
    assert len(cases) == len(data["cases"])
    failures = {
        case.case.name: result.failures
        for case in cases
        if (result := run_case(policy_set, case)).failures
    }
    assert failures == {}
