"""The compiler's error reporting, pinned by the YAML tables in tests/cases/compiler/."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from service.policy import PolicyError, load_policies
from service.policy.engines import DEFAULT_ENGINE, ENGINES
from service.policy.errors import Problem
from service.policy.suite import load_suites
from tests.conftest import compiler_cases


@pytest.mark.parametrize("case", compiler_cases())
def test_compiler_table(case: dict[str, Any], write_tree: Callable[..., Path]) -> None:
    root = write_tree(case["files"])
    problems = _problems(root)
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


@pytest.mark.parametrize("case", compiler_cases())
def test_whether_a_policy_loads_does_not_depend_on_the_engine(
    case: dict[str, Any], write_tree: Callable[..., Path]
) -> None:
    """The same errors at the same places, and warnings at the same places, under either
    engine (a disagreement's warning names the engines in another order)."""
    root = write_tree(case["files"])
    found = {
        engine: sorted(
            (p.severity, p.file, p.line, p.column, p.path) for p in _problems(root, engine)
        )
        for engine in ENGINES
    }
    assert found["cel-expr-python"] == found["cel-python"]


@pytest.mark.parametrize("case", compiler_cases())
def test_a_server_loads_what_check_loads(
    case: dict[str, Any], write_tree: Callable[..., Path]
) -> None:
    """A server compares no engines (that is `check`'s work): the same errors at the same
    places, under either engine; only warnings may be fewer."""
    root = write_tree(case["files"])
    for engine in ENGINES:
        checked = _problems(root, engine)
        served = _problems(root, engine, compare_engines=False)
        errors = [sorted(str(p) for p in ps if p.severity == "error") for ps in (checked, served)]
        assert errors[0] == errors[1], engine
        assert {str(p) for p in served} <= {str(p) for p in checked}, engine


def _problems(
    root: Path, engine: str = DEFAULT_ENGINE, *, compare_engines: bool = True
) -> list[Problem]:
    try:
        policy_set = load_policies(root, engine=engine, compare_engines=compare_engines)
        load_suites(root, policy_set.policies)
        return list(policy_set.warnings)
    except PolicyError as exc:
        return list(exc.problems)
