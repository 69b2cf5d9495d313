"""Policy documents -> a frozen `PolicySet`: every CEL program built once, every mistake found.

Checks, in order: CEL syntax; names, `request.*` fields, `params.*`, `variables.*` and functions
against the schema; cyclic variables; template placeholders; then, on two representative
requests (every optional field present / none present): conditions that are not bool, type
errors, conditions that fail when optional fields are absent (warning), and rules that can
never be reached after an unconditional one (warning). See docs/policy-language.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

from service.policy import references as refs
from service.policy.cel import (
    FUNCTIONS,
    MACROS,
    CelSyntaxError,
    EvalError,
    LazyMap,
    Program,
    Value,
    compile_expression,
    to_cel,
    type_name,
)
from service.policy.errors import Problem, UnknownPolicyError, did_you_mean
from service.policy.model import RESERVED_RULE_ID, Outcome, PolicyDocument
from service.policy.references import REQUEST_SHAPE, check_path, shape_of_value
from service.policy.request import ConnectionRequest, Person, Relationship
from service.policy.source import JsonPath, Source
from service.policy.wording import Template, TemplateError, compile_template

__all__ = [
    "MINIMAL",
    "REPRESENTATIVE",
    "CompiledOutcome",
    "CompiledPolicy",
    "CompiledRule",
    "PolicySet",
    "activation",
    "compile_policy",
    "request_to_cel",
]

ROOTS = ("request", "now", "params", "variables")


@dataclass(frozen=True, slots=True)
class CompiledOutcome:
    decision: str
    rationale: Template
    reply: Mapping[str, Template]
    outputs: Mapping[str, Template]


@dataclass(frozen=True, slots=True)
class CompiledRule:
    id: str
    when: Program
    outcome: CompiledOutcome


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    name: str
    file: str
    document: PolicyDocument
    params: Value  # a CEL map, converted once
    variables: Mapping[str, Program]
    rules: tuple[CompiledRule, ...]
    default: CompiledOutcome


@dataclass(frozen=True)
class PolicySet:
    """Everything one evaluation needs. Replaced whole on reload, never changed in place."""

    policies: Mapping[str, CompiledPolicy]
    digest: str
    revision: str | None = None
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    warnings: tuple[Problem, ...] = ()

    def get(self, name: str) -> CompiledPolicy:
        try:
            return self.policies[name]
        except KeyError:
            raise UnknownPolicyError(name, self.policies) from None


def request_to_cel(request: ConnectionRequest) -> Value:
    """The request as CEL sees it: absent (None) fields are left out, so `has()` works."""
    return to_cel(msgspec.to_builtins(request, builtin_types=(datetime,)))


def activation(
    policy: CompiledPolicy, request: Value, now: datetime
) -> tuple[dict[str, Value], LazyMap]:
    """The names CEL sees; `variables` are computed lazily, at most once each."""
    names: dict[str, Value] = {"request": request, "now": to_cel(now), "params": policy.params}

    def compute(name: str) -> Value:
        program = policy.variables.get(name)
        if program is None:
            raise EvalError(f"unknown variable `{name}`")
        return program.run(names)

    variables = LazyMap(compute)
    names["variables"] = variables
    return names, variables


# --- representative requests for checks that need evaluation -----------------------------

_T = datetime(2026, 1, 15, 9, 30, tzinfo=UTC)
_FULL_PERSON = Person(
    id="p-1",
    name="Sample Person",
    headline="Engineer",
    industry="software",
    function="engineering",
    region="Europe",
    company="Example",
    has_photo=True,
    connection_count=500,
    connection_limit=30000,
    last_active_at=_T,
)
# Every optional field present: type errors show; a `when` that is not bool shows.
REPRESENTATIVE = ConnectionRequest(
    id="r-1",
    platform="linkedin",
    received_at=_T,
    message="Hello, we met at the meetup",
    requester=_FULL_PERSON,
    recipient=_FULL_PERSON,
    relationship=Relationship(
        met_in_person=True,
        worked_together=True,
        shared_employers=["Example"],
        mutual_connections=3,
        last_interaction_at=_T,
        known_via="colleague",
        connected_elsewhere=["xing"],
    ),
)
# No optional field present: a condition that fails here lacks a `has()` guard.
MINIMAL = ConnectionRequest(
    requester=Person(name="Sample Person", has_photo=False),
    recipient=Person(name="Sample Person", has_photo=False),
)


# --- the compiler ---------------------------------------------------------------------------


def compile_policy(
    name: str,
    source: Source,
    document: PolicyDocument,
    *,
    rule_indices: Sequence[int] | None = None,
) -> tuple[CompiledPolicy | None, list[Problem]]:
    """Compile one validated document; the policy is None when any problem is an error.

    `rule_indices` maps each rule to its index in the file, when invalid ones were left out.
    """
    return _PolicyCompiler(name, source, document, rule_indices).run()


class _PolicyCompiler:
    def __init__(
        self,
        name: str,
        source: Source,
        document: PolicyDocument,
        rule_indices: Sequence[int] | None,
    ) -> None:
        self.name, self.source, self.doc = name, source, document
        self.rule_index = list(rule_indices or range(len(document.rules)))
        self.problems: list[Problem] = []
        self.params_shape = shape_of_value(document.params)
        self.variable_deps: dict[str, set[str]] = {}

    def error(self, path: JsonPath, message: str, **where: Any) -> None:
        self.problems.append(self.source.problem(path, message, **where))

    def warn(self, path: JsonPath, message: str, **where: Any) -> None:
        self.problems.append(self.source.problem(path, message, severity="warning", **where))

    def run(self) -> tuple[CompiledPolicy | None, list[Problem]]:
        doc = self.doc
        try:
            params = to_cel(doc.params)
        except (TypeError, ValueError) as exc:
            self.error(("params",), f"unsupported value: {exc}")
            params = to_cel({})
        variables = {
            name: program
            for name, text in doc.variables.items()
            if (program := self.expression(("variables", name), text, deps=name)) is not None
        }
        self.check_cycles()
        rules = []
        seen: dict[str, int] = {}
        for position, rule in enumerate(doc.rules):
            index = self.rule_index[position]
            path: JsonPath = ("rules", index)
            if rule.id == RESERVED_RULE_ID:
                self.error((*path, "id"), f"rule id `{RESERVED_RULE_ID}` is reserved")
            elif rule.id in seen:
                first = self.source.locate(("rules", seen[rule.id], "id"))[0]
                self.error((*path, "id"), f"duplicate rule id `{rule.id}` (first at line {first})")
            seen.setdefault(rule.id, index)
            when = self.expression((*path, "when"), rule.when)
            outcome = self.outcome(path, rule)
            if when is not None and outcome is not None:
                rules.append(CompiledRule(rule.id, when, outcome))
        default = self.outcome(("default",), doc.default)
        if any(p.severity == "error" for p in self.problems) or default is None:
            return None, self.problems
        policy = CompiledPolicy(
            self.name, self.source.file, doc, params, variables, tuple(rules), default
        )
        _Probe(self, policy).run()
        if any(p.severity == "error" for p in self.problems):
            return None, self.problems
        return policy, self.problems

    def outcome(self, path: JsonPath, outcome: Outcome) -> CompiledOutcome | None:
        rationale = self.template((*path, "rationale"), outcome.rationale)
        reply = {k: self.template((*path, "reply", k), v) for k, v in outcome.reply.items()}
        outputs = {k: self.template((*path, "outputs", k), v) for k, v in outcome.outputs.items()}
        if reply and self.doc.default_locale.lower() not in {k.lower() for k in reply}:
            self.warn(
                (*path, "reply"),
                f"no reply in the default locale `{self.doc.default_locale}`: "
                "requests in other locales get none",
            )
        if rationale is None or None in reply.values() or None in outputs.values():
            return None
        return CompiledOutcome(
            outcome.decision,
            rationale,
            {k: v for k, v in reply.items() if v is not None},
            {k: v for k, v in outputs.items() if v is not None},
        )

    def template(self, path: JsonPath, text: str) -> Template | None:
        try:
            template = compile_template(text)
        except TemplateError as exc:
            self.error(path, exc.message, position=self.position(path, text, exc.offset, 1, 1))
            return None
        ok = True
        for placeholder in template.placeholders:
            for message, (line, column) in self.check(placeholder.program, deps=None):
                where = self.position(path, text, placeholder.offset, line, column)
                self.error(path, message, position=where)
                ok = False
        return template if ok else None

    def expression(
        self, path: JsonPath, text: str | bool, *, deps: str | None = None
    ) -> Program | None:
        if isinstance(text, bool):  # `when: true` in YAML
            text = "true" if text else "false"
        try:
            program = compile_expression(text)
        except CelSyntaxError as exc:
            self.error(
                path, exc.message, position=self.position(path, text, 0, exc.line, exc.column)
            )
            return None
        problems = list(self.check(program, deps=deps))
        for message, (line, column) in problems:
            self.error(path, message, position=self.position(path, text, 0, line, column))
        return None if problems else program

    def position(
        self, path: JsonPath, text: str, offset: int, line: int, column: int
    ) -> tuple[int, int]:
        """A (line, column) inside an expression that starts at `offset` in a scalar's text."""
        before = text[:offset]
        base_line = before.count("\n") + 1
        base_column = offset - (before.rfind("\n") + 1) + 1
        if line == 1:
            line, column = base_line, base_column + column - 1
        else:
            line = base_line + line - 1
        return self.source.locate_in_scalar(path, line, column)

    def check(self, program: Program, *, deps: str | None) -> Iterable[tuple[str, tuple[int, int]]]:
        """Static checks of one program: (message, position inside the expression)."""
        for found in refs.references(program.tree):
            if isinstance(found, refs.Misuse):
                yield found.message, found.position
            elif isinstance(found, refs.Call):
                if found.name not in FUNCTIONS and found.name not in MACROS:
                    kind = "method" if found.method else "function"
                    hint = did_you_mean(found.name, FUNCTIONS)
                    yield f"unknown {kind} `{found.name}`{hint}", found.position
            else:
                problem = self.check_reference(found.path, deps)
                if problem is not None:
                    index, message = problem
                    yield message, found.positions[index]

    def check_reference(self, path: tuple[str, ...], deps: str | None) -> tuple[int, str] | None:
        root = path[0]
        if root == "request":
            return check_path(path, REQUEST_SHAPE)
        if root == "params":
            return check_path(path, self.params_shape)
        if root == "now":
            return check_path(path, "timestamp")
        if root == "variables":
            if len(path) == 1:
                return 0, "use `variables.<name>`, not `variables` alone"
            if path[1] not in self.doc.variables:
                hint = did_you_mean(path[1], self.doc.variables)
                return 1, f"unknown variable `{path[1]}`{hint}"
            if deps is not None:
                self.variable_deps.setdefault(deps, set()).add(path[1])
            return None
        return 0, f"unknown name `{root}`{did_you_mean(root, ROOTS)}"

    def check_cycles(self) -> None:
        reported: set[str] = set()
        for start in self.doc.variables:
            trail = _find_cycle(start, self.variable_deps)
            if trail and not reported & set(trail):
                reported.update(trail)
                chain = " -> ".join(f"`{v}`" for v in [*trail, trail[0]])
                self.error(("variables", trail[0]), f"cyclic variables: {chain}")


def _a(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"


def _find_cycle(start: str, deps: Mapping[str, set[str]]) -> list[str] | None:
    """The cycle through `start`, if any, as the list of variables on it."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    visited: set[str] = set()
    while stack:
        node, trail = stack.pop()
        for nxt in sorted(deps.get(node, ())):
            if nxt == start:
                return trail
            if nxt not in visited:
                visited.add(nxt)
                stack.append((nxt, [*trail, nxt]))
    return None


class _Probe:
    """Checks that need evaluation, on the two representative requests."""

    def __init__(self, compiler: _PolicyCompiler, policy: CompiledPolicy) -> None:
        self.compiler, self.policy = compiler, policy
        self.full, _ = activation(policy, request_to_cel(REPRESENTATIVE), _T)
        self.bare, _ = activation(policy, request_to_cel(MINIMAL), _T)

    def run(self) -> None:
        policy, compiler = self.policy, self.compiler
        for name, program in policy.variables.items():
            self.attempt(("variables", name), program, self.full)
        always: str | None = None
        for position, rule in enumerate(policy.rules):
            index = compiler.rule_index[position]
            path: JsonPath = ("rules", index, "when")
            if always is not None:
                compiler.warn(
                    ("rules", index, "id"),
                    f"rule `{rule.id}` can never match: rule `{always}` before it always matches",
                )
            result, failure = self.attempt(path, rule.when, self.full)
            if failure:
                continue
            if type_name(result) != "bool":
                compiler.error(path, f"a condition must be a bool, not {_a(type_name(result))}")
                continue
            _, failure = self.attempt(path, rule.when, self.bare, report=False)
            if failure and failure.kind == "missing":
                compiler.warn(
                    path,
                    f"fails when optional fields are absent ({failure}); guard them with `has()`",
                )
            if always is None and bool(result) and self.constant(rule.when):
                always = rule.id
        outcomes = [
            (("rules", compiler.rule_index[i]), r.outcome) for i, r in enumerate(policy.rules)
        ]
        for path, outcome in [*outcomes, (("default",), policy.default)]:
            templates: dict[JsonPath, Template] = {("rationale",): outcome.rationale}
            templates |= {("reply", k): t for k, t in outcome.reply.items()}
            templates |= {("outputs", k): t for k, t in outcome.outputs.items()}
            for sub, template in templates.items():
                for placeholder in template.placeholders:
                    self.attempt((*path, *sub), placeholder.program, self.full)

    def attempt(
        self, path: JsonPath, program: Program, names: dict[str, Value], *, report: bool = True
    ) -> tuple[Any, EvalError | None]:
        """(value, None) or (None, the failure)."""
        try:
            return program.run(names), None
        except EvalError as exc:
            if exc.kind == "type" and report:
                self.compiler.error(path, f"type error on a representative request: {exc}")
            return None, exc

    def constant(self, program: Program) -> bool:
        """True when a program reads no request data or time, directly or through variables."""
        pending = [program]
        seen: set[str] = set()
        while pending:
            for found in refs.references(pending.pop().tree):
                if isinstance(found, refs.Reference):
                    if found.path[0] in ("request", "now"):
                        return False
                    if found.path[0] == "variables" and found.path[1] not in seen:
                        seen.add(found.path[1])
                        pending.append(self.policy.variables[found.path[1]])
        return True
