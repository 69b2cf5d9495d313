"""The compiler's error reporting, pinned by the YAML tables in tests/cases/compiler/."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from service.policy import PolicyError, load_policies
from service.policy.suite import load_suites
from tests.conftest import compiler_cases


@pytest.mark.parametrize("case", compiler_cases())
def test_compiler_table(case: dict[str, Any], write_tree: Callable[..., Path]) -> None:
    root = write_tree(case["files"])
    try:
        policy_set = load_policies(root)
        load_suites(root, policy_set)
        problems = list(policy_set.warnings)
    except PolicyError as exc:
        problems = exc.problems
    actual = [
        {
            "file": str(Path(p.file).relative_to(root)),
            "line": p.line,
            "column": p.column,
            "path": p.path,
            "message": p.message,
            "severity": p.severity,
        }
        for p in problems
    ]
    expected = case["problems"]
    assert len(actual) == len(expected), "\n".join(map(str, problems))
    for want, got in zip(expected, actual, strict=True):
        assert want["message"] in got["message"], got
        for key in ("file", "line", "column", "path"):
            if key in want:
                assert got[key] == want[key], (key, got)
        assert got["severity"] == want.get("severity", "error"), got
