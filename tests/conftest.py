"""Turns the YAML tables under tests/cases/ into pytest parameters.

- `cases/evaluator/*.yaml`: an inline `policy` plus suite-style `cases`; each case runs through
  the real pipeline (files on disk -> loader -> compiler -> evaluator -> suite comparison).
- `cases/compiler/*.yaml`: a list of broken policy trees (`files`) and the exact `problems`
  the loader must report (file, line, column, JSON path, message, severity).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.policy import PolicySet, load_policies
from service.policy.engines import DEFAULT_ENGINE

CASES = Path(__file__).parent / "cases"
MINIMAL_POLICY = (
    "apiVersion: handshake/v1\nkind: ConnectionPolicy\ndefault: {decision: ignore, rationale: x}\n"
)
POLICIES = Path(__file__).parent.parent / "policies"


@functools.cache
def bundled_policies(engine: str = DEFAULT_ENGINE, *, compare_engines: bool = True) -> PolicySet:
    """The bundled policies, compiled once per engine for the whole run and shared: a policy
    set is frozen. (Loaded by each test, they were a quarter of the run's time.)"""
    return load_policies(POLICIES, engine=engine, compare_engines=compare_engines)


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def evaluator_bundles() -> list[Any]:
    return [
        pytest.param(path, id=path.stem) for path in sorted((CASES / "evaluator").glob("*.yaml"))
    ]


def compiler_cases() -> list[Any]:
    params = []
    for path in sorted((CASES / "compiler").glob("*.yaml")):
        for case in _yaml(path):
            params.append(pytest.param(case, id=f"{path.stem}: {case['name']}"))
    return params


@pytest.fixture
def write_tree(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Write {relative path: text} under a fresh directory and return it."""

    def write(files: dict[str, str]) -> Path:
        root = tmp_path / "policies"
        for name, text in files.items():
            target = root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        root.mkdir(exist_ok=True)
        return root

    return write
