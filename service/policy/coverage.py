"""What a policy's test suite exercised: `handshake test --coverage`.

Per policy: each rule matched (and the default reached), each operand of `&&`, `||`, `!` and
`?:` in every `when` and variable seen both true and false by the cases (branch coverage of
CEL; an operand inside a comprehension's body reads the comprehension's own variable and is
left out), each variable evaluated, and each reply locale rendered. An operand counts where
the case evaluated its condition: a rule tried before the one that decided, or that one.
What is not covered is named with `file:line:column`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import lark

from service.policy.cel import COMPREHENSIONS, EvalError, Tree, Value, parse
from service.policy.cel.text import render
from service.policy.compiled import CompiledPolicy, PolicySet
from service.policy.engines import Program, Scope
from service.policy.errors import PolicyError
from service.policy.evaluator import evaluate
from service.policy.source import JsonPath, Source, read_source
from service.policy.suite import LoadedCase

__all__ = ["Branch", "PolicyCoverage", "measure"]


@dataclass
class Branch:
    """One operand of a logical operator, and the truth values the cases gave it."""

    where: str  # file:line:column
    text: str
    seen: set[bool] = field(default_factory=set)


@dataclass
class PolicyCoverage:
    name: str
    cases: int = 0
    rules: dict[str, str] = field(default_factory=dict)  # id (or `default`) -> file:line
    matched: set[str] = field(default_factory=set)
    branches: list[Branch] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)  # name -> file:line:column
    evaluated: set[str] = field(default_factory=set)
    locales: set[str] = field(default_factory=set)  # every reply locale the policy has
    rendered: set[str] = field(default_factory=set)

    @property
    def branches_seen(self) -> int:
        """Truth values seen, over all operands (each can be seen true and false)."""
        return sum(len(branch.seen) for branch in self.branches)

    @property
    def branches_total(self) -> int:
        return 2 * len(self.branches)

    @property
    def branch_percent(self) -> float:
        total = self.branches_total
        return 100.0 if not total else 100.0 * self.branches_seen / total

    @property
    def variables_evaluated(self) -> int:
        return len(self.evaluated & self.variables.keys())

    @property
    def locales_rendered(self) -> int:
        return len(self.rendered & self.locales)

    def uncovered(self) -> Iterator[str]:
        """One line for each thing no case covered, `file:line:column: what`."""
        for rule, where in self.rules.items():
            if rule not in self.matched:
                what = "the default never reached" if rule == "default" else f"rule `{rule}`"
                yield f"{where}: {what}{' never matched' if rule != 'default' else ''}"
        for branch in self.branches:
            for value in (True, False):
                if value not in branch.seen:
                    yield f"{branch.where}: `{branch.text}` never {str(value).lower()}"
        for name, where in self.variables.items():
            if name not in self.evaluated:
                yield f"{where}: variable `{name}` never evaluated"
        for locale in sorted(self.locales - self.rendered):
            yield f"{self.rules.get('default', self.name)}: no case renders a reply in `{locale}`"


@dataclass
class _Operand:
    branch: Branch
    program: Program


def measure(
    policy_set: PolicySet, directory: Path, cases: Sequence[LoadedCase]
) -> list[PolicyCoverage]:
    """The coverage of every policy by the cases (in the order of the set)."""
    sources = _Sources(directory)
    report = []
    for name, policy in policy_set.policies.items():
        coverage, conditions, variables = _shape(policy, policy_set, sources)
        for case in cases:
            if case.policy == name:
                _run(policy_set, policy, case, coverage, conditions, variables)
        report.append(coverage)
    return report


def _shape(
    policy: CompiledPolicy, policy_set: PolicySet, sources: _Sources
) -> tuple[PolicyCoverage, dict[str, list[_Operand]], dict[str, list[_Operand]]]:
    coverage = PolicyCoverage(policy.name)
    conditions: dict[str, list[_Operand]] = {}
    for rule in policy.rules:
        file, _, line = rule.origin.rpartition(":")
        path = sources.rule_path(file, int(line))
        where = sources.line_of(file, path[:2]) if path else f"{line}:1"
        coverage.rules[rule.id] = f"{file}:{where}"
        conditions[rule.id] = list(_operands(policy, rule.when, file, path, sources))
    coverage.rules["default"] = f"{policy.file}:{sources.line_of(policy.file, ('default',))}"
    variables: dict[str, list[_Operand]] = {}
    for name, program in policy.variables.items():
        file = sources.defining(policy, policy_set, name)
        coverage.variables[name] = f"{file}:{sources.line_of(file, ('variables',), name)}"
        variables[name] = list(_operands(policy, program, file, ("variables", name), sources))
    outcomes = [rule.outcome for rule in policy.rules] + [policy.default]
    coverage.locales = {locale for outcome in outcomes for locale in outcome.reply}
    every = (*conditions.values(), *variables.values())
    coverage.branches = [operand.branch for operands in every for operand in operands]
    return coverage, conditions, variables


def _run(
    policy_set: PolicySet,
    policy: CompiledPolicy,
    case: LoadedCase,
    coverage: PolicyCoverage,
    conditions: dict[str, list[_Operand]],
    variables: dict[str, list[_Operand]],
) -> None:
    coverage.cases += 1
    request, now = case.case.request, case.now or datetime.now(UTC)
    decision = evaluate(policy_set, policy.name, request, now=now, locale=case.locale)
    decided = decision.rule or "default"
    coverage.matched.add(decided)
    if decision.reply is not None:
        coverage.rendered.add(decision.reply.locale)
    scope = policy.scope(request, now)
    for rule in policy.rules:  # those tried: up to the one that decided
        _run_quietly(scope, rule.when)
        for operand in conditions.get(rule.id, []):
            _record(scope, operand)
        if rule.id == decided:
            break
    outcome = next((r.outcome for r in policy.rules if r.id == decided), policy.default)
    for program in outcome.placeholder_programs():
        _run_quietly(scope, program)
    computed = scope.variables()
    coverage.evaluated |= set(computed)
    for name in computed:
        for operand in variables.get(name, []):
            _record(scope, operand)


def _run_quietly(scope: Scope, program: Program) -> Value | EvalError:
    try:
        return scope.run(program)
    except EvalError as exc:
        return exc


def _record(scope: Scope, operand: _Operand) -> None:
    value = _run_quietly(scope, operand.program)
    if isinstance(value, bool):
        operand.branch.seen.add(value)


def _operands(
    policy: CompiledPolicy, program: Program, file: str, path: JsonPath | None, sources: _Sources
) -> Iterator[_Operand]:
    """The operands of the logical operators of `program`'s expression, outside comprehension
    bodies, each compiled on its own."""
    for node in _logical_operands(program.expression.tree):
        text = render(node, {})
        line, column = _start(node)
        where = sources.where(file, path, line, column)
        yield _Operand(Branch(where, text), policy.engine.compile(parse(text)))


def _logical_operands(tree: Tree) -> Iterator[Tree]:
    pending: list[Tree] = [tree]
    while pending:
        node = pending.pop()
        children = [c for c in node.children if isinstance(c, lark.Tree)]
        if node.data == "member_dot_arg" and str(node.children[1]) in COMPREHENSIONS:
            pending.append(children[0])  # what it ranges over; not its body
            continue
        if node.data in ("conditionalor", "conditionaland") and len(node.children) == 2:
            yield from children
        elif node.data == "unary" and len(node.children) == 2:
            yield children[1]
        elif node.data == "expr" and len(node.children) == 3:
            yield children[0]
        pending.extend(reversed(children))


def _start(node: Tree) -> tuple[int, int]:
    for token in node.scan_values(lambda v: isinstance(v, lark.Token)):
        return token.line or 1, token.column or 1
    return 1, 1


class _Sources:
    """The policy files, parsed again to name positions (coverage is not on any hot path)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.parsed: dict[str, Source | None] = {}

    def source(self, file: str) -> Source | None:
        if file not in self.parsed:
            try:
                self.parsed[file] = read_source(self.directory / file, file)
            except PolicyError:
                self.parsed[file] = None
        return self.parsed[file]

    def rule_path(self, file: str, line: int) -> JsonPath | None:
        source = self.source(file)
        if source is None or not isinstance(source.data, dict):
            return None
        for key in ("rules", "rules_before", "rules_after"):
            for index in range(len(source.data.get(key) or [])):
                if source.locate((key, index))[0] == line:
                    return (key, index, "when")
        return None

    def where(self, file: str, path: JsonPath | None, line: int, column: int) -> str:
        source = self.source(file)
        if source is None or path is None:
            return f"{file}:1:1"
        found_line, found_column = source.locate_in_scalar(path, line, column)
        return f"{file}:{found_line}:{found_column}"

    def line_of(self, file: str, path: JsonPath, key: str | None = None) -> str:
        source = self.source(file)
        if source is None:
            return "1:1"
        line, column = source.locate(path, key)
        return f"{line}:{column}"

    def defining(self, policy: CompiledPolicy, policy_set: PolicySet, name: str) -> str:
        """The file that defines variable `name`: the policy's own, else its nearest base's."""
        for candidate in (policy.name, *policy.extends):
            found = policy_set.policies.get(candidate)
            file = found.file if found is not None else None
            source = self.source(file) if file is not None else None
            if source is not None and name in (source.data or {}).get("variables", {}):
                return file  # type: ignore[return-value]
        return policy.file
