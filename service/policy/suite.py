"""Policy test suites: `*_test.yaml` files beside the policies, run by `handshake test` and pytest.

```yaml
policy: examples/met-or-worked
now: 2026-06-01T09:00:00Z          # optional; per case too (else the current time)
fixtures:                           # free-form, for YAML anchors and merge keys
  ada: &ada {name: Ada, has_photo: true}
cases:
  - name: a former colleague
    request: {requester: *ada, recipient: *ada, relationship: {worked_together: true}}
    expect: {decision: accept, rule: knows-well, rationale: {contains: Worked}}
```

`rule: default` expects the default to decide. An unexpected evaluation error fails a case
unless the case lists the `errors` it expects.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from service.policy.compiled import PolicySet
from service.policy.decision import Decision
from service.policy.errors import PolicyError, Problem, UnknownPolicyError
from service.policy.evaluator import evaluate
from service.policy.loader import display, policy_files, validate
from service.policy.model import RESERVED_RULE_ID
from service.policy.model import Decision as DecisionValue
from service.policy.request import Base, ConnectionRequest, Timestamp
from service.policy.source import Source, parse_source

__all__ = ["CaseResult", "LoadedCase", "load_suites", "run_case"]


class TextMatch(Base, frozen=True, kw_only=True):
    """Text that must contain this (or each of these)."""

    contains: str | list[str]


TextExpectation = str | TextMatch


class ErrorExpectation(Base, frozen=True, kw_only=True):
    """An evaluation error the case expects: in `rule` (any rule when left out), with a
    message containing `contains`."""

    rule: str | None = None  # None matches any rule
    contains: str = ""


class Expectation(Base, frozen=True, kw_only=True):
    """What the decision must be; each key is optional. `rule: default` expects the default
    to decide; `reply: null` expects no reply; `errors` lists every error expected."""

    decision: DecisionValue | UnsetType = UNSET
    rule: str | UnsetType = UNSET  # `default` when the default decides
    rationale: TextExpectation | UnsetType = UNSET
    reply: TextExpectation | UnsetType | None = UNSET  # null: no reply
    reply_locale: str | UnsetType = UNSET
    outputs: dict[str, Any] | UnsetType = UNSET  # these keys, with these values
    errors: list[ErrorExpectation] | UnsetType = UNSET  # exactly these; unset: none


class Case(Base, frozen=True, kw_only=True):
    """One request, and what the policy must decide for it."""

    name: str
    request: ConnectionRequest
    now: Timestamp | None = None
    locale: str | None = None
    expect: Expectation


class Suite(Base, frozen=True, kw_only=True):
    """A test suite (`*_test.yaml`): requests and what `policy` must decide for each, run by
    `handshake test` under every CEL engine. `fixtures` is free-form, a place for anchors."""

    policy: str
    description: str = ""
    now: Timestamp | None = None
    locale: str | None = None
    fixtures: Any = None
    cases: list[Case]


@dataclass(frozen=True)
class LoadedCase:
    file: str
    line: int
    policy: str
    case: Case
    now: datetime | None
    locale: str | None

    @property
    def title(self) -> str:
        return f"{self.policy} > {self.case.name}"


@dataclass(frozen=True)
class CaseResult:
    case: LoadedCase
    failures: list[str]
    decision: Decision | None


def load_suites(
    directory: Path, policies: Collection[str] | None = None, *, label: str | None = None
) -> list[LoadedCase]:
    """Every case of every suite below `directory`; raise `PolicyError` listing all problems.

    With the names of the policies loaded, a suite naming an unknown policy is a problem too.
    """
    if not directory.is_dir():
        raise PolicyError([Problem(file=str(directory), message="no such policy directory")])
    problems: list[Problem] = []
    cases: list[LoadedCase] = []
    for path in policy_files(directory, suites=True):
        try:
            source = parse_source(path.read_bytes(), display(directory, path, label))
        except PolicyError as exc:
            problems.extend(exc.problems)
            continue
        suite, found = validate(source, Suite)
        problems.extend(found)
        if suite is None:
            continue
        if policies is not None and suite.policy not in policies:
            error = UnknownPolicyError(suite.policy, policies)
            problems.append(source.problem(("policy",), str(error)))
            continue
        cases.extend(_cases(source, suite))
    if any(p.severity == "error" for p in problems):
        raise PolicyError(problems)
    return cases


def _cases(source: Source, suite: Suite) -> Iterator[LoadedCase]:
    for index, case in enumerate(suite.cases):
        yield LoadedCase(
            file=source.file,
            line=source.locate(("cases", index))[0],
            policy=suite.policy,
            case=case,
            now=case.now or suite.now,
            locale=case.locale or suite.locale,
        )


def run_case(policy_set: PolicySet, loaded: LoadedCase) -> CaseResult:
    try:
        decision = evaluate(
            policy_set,
            loaded.policy,
            loaded.case.request,
            now=loaded.now or datetime.now(UTC),
            locale=loaded.locale,
        )
    except UnknownPolicyError as exc:
        return CaseResult(loaded, [str(exc)], None)
    return CaseResult(loaded, list(_compare(loaded.case.expect, decision)), decision)


def _compare(expect: Expectation, got: Decision) -> Iterator[str]:
    if expect.decision is not UNSET and expect.decision != got.decision:
        yield f"decision: expected `{expect.decision}`, got `{got.decision}`"
    actual_rule = got.rule or RESERVED_RULE_ID
    if expect.rule is not UNSET and expect.rule != actual_rule:
        yield f"rule: expected `{expect.rule}`, got `{actual_rule}`"
    if expect.rationale is not UNSET:
        yield from _text("rationale", expect.rationale, got.rationale)
    if expect.reply is None and got.reply is not None:
        yield f"reply: expected none, got `{got.reply.text}`"
    elif expect.reply is not UNSET and expect.reply is not None:
        yield from _text("reply", expect.reply, got.reply.text if got.reply else None)
    if expect.reply_locale is not UNSET:
        locale = got.reply.locale if got.reply else None
        if locale != expect.reply_locale:
            yield f"reply locale: expected `{expect.reply_locale}`, got `{locale}`"
    if expect.outputs is not UNSET:
        for key, value in expect.outputs.items():
            if key not in got.outputs or got.outputs[key] != value:
                shown = _show(got.outputs[key]) if key in got.outputs else "nothing"
                yield f"outputs.{key}: expected {_show(value)}, got {shown}"
    yield from _errors(expect.errors if expect.errors is not UNSET else [], got)


def _errors(expected: list[ErrorExpectation], got: Decision) -> Iterator[str]:
    unmatched = list(got.errors)
    for want in expected:
        match = next(
            (
                e
                for e in unmatched
                if (want.rule is None or e.rule == want.rule) and want.contains in e.message
            ),
            None,
        )
        if match is None:
            yield f"errors: expected one in rule `{want.rule}` containing `{want.contains}`"
        else:
            unmatched.remove(match)
    for error in unmatched:
        yield f"unexpected error in rule `{error.rule or RESERVED_RULE_ID}`: {error.message}"


def _text(what: str, expected: TextExpectation, actual: str | None) -> Iterator[str]:
    if actual is None:
        yield f"{what}: expected text, got none"
    elif isinstance(expected, str):
        if expected != actual:
            yield f"{what}: expected {_show(expected)}, got {_show(actual)}"
    else:
        needles = [expected.contains] if isinstance(expected.contains, str) else expected.contains
        for needle in needles:
            if needle not in actual:
                yield f"{what}: expected to contain {_show(needle)}, got {_show(actual)}"


def _show(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def summary(results: Iterable[CaseResult]) -> tuple[int, int]:
    """(passed, failed)"""
    passed = failed = 0
    for result in results:
        if result.failures:
            failed += 1
        else:
            passed += 1
    return passed, failed
