"""Policy parts -> a frozen `PolicySet`: every CEL program built once, every mistake found.

Checks, in order: CEL syntax; names, `request.*` fields, `params.*`, `variables.*` and functions
against the schema; duplicate and reserved rule ids; cyclic variables; template placeholders;
then the checks that evaluate (service/policy/probe.py). See docs/policy-language.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from service.policy.cel import (
    FUNCTIONS,
    MACROS,
    CelSyntaxError,
    Expression,
    parse,
    request_fields,
)
from service.policy.cel.checker import TypeCheckError, type_check
from service.policy.cel.references import Call, Misuse, literals, scalars
from service.policy.cel.schema import REQUEST_SHAPE, check_path, shape_of_value
from service.policy.compiled import CompiledOutcome, CompiledPolicy, CompiledRule
from service.policy.cost import check_cost
from service.policy.engines import Engine, Program, Rules
from service.policy.errors import Problem, did_you_mean
from service.policy.model import RESERVED_RULE_ID, Outcome, Rule
from service.policy.parts import PolicyParts, Site
from service.policy.probe import probe
from service.policy.wording import Template, TemplateError, compile_template

__all__ = ["compile_policy"]

ROOTS = ("request", "now", "params", "variables")


def _portable(value: Any) -> None:
    """Params mean the same under every engine, so two things are refused under both: U+0000,
    at which the C++ runtime cuts a string or a key (refused in requests too), and map keys
    other than strings, which the engines look up differently."""
    if (isinstance(value, str) and "\x00" in value) or (
        isinstance(value, bytes) and b"\x00" in value
    ):
        raise ValueError("a string holds U+0000")
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"map keys must be strings, not `{json.dumps(key, default=str)}`")
            _portable(key)
            _portable(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _portable(item)


# The CEL a policy may hold, its bases' included, so that what one policy costs `check`,
# start-up and every reload is bounded: about 2 s on a 2-core VM at most (bench/README.md).
MAX_EXPRESSIONS = 1_000
MAX_EXPRESSION_BYTES = 64 * 1024


def _expressions(parts: PolicyParts) -> tuple[int, int]:
    """How many CEL expressions, and the bytes of their text (templates whole)."""
    outcomes = [*(rule for rule, _ in parts.rules), parts.default[0]]
    templates = [t for o in outcomes for t in (o.rationale, *o.reply.values(), *o.outputs.values())]
    conditions = [str(text) for text, _ in parts.variables.values()]
    conditions += [str(rule.when) for rule, _ in parts.rules]
    count = len(conditions) + sum(t.count("{{") for t in templates)
    return count, sum(len(t.encode()) for t in (*conditions, *templates))


def compile_policy(
    parts: PolicyParts, engine: Engine, *, compare_engines: bool = True
) -> tuple[CompiledPolicy | None, list[Problem]]:
    """Compile one policy; None when any problem is an error (or the parts were broken)."""
    compiler = _Compiler(parts, engine)
    policy = compiler.run()
    if policy is not None and check_cost(policy, parts, compiler.report):
        # It runs the expressions: only bounded ones.
        probe(policy, parts, compiler.report, compare_engines=compare_engines)
    failed = parts.broken or any(p.severity == "error" for p in compiler.problems)
    return (None if failed else policy), compiler.problems


class _Compiler:
    def __init__(self, parts: PolicyParts, engine: Engine) -> None:
        self.parts = parts
        self.engine = engine
        self.problems: list[Problem] = []
        self.params_shape = shape_of_value(parts.params)
        self.variable_deps: dict[str, set[str]] = {}

    def report(
        self,
        site: Site,
        message: str,
        *,
        severity: Literal["error", "warning"] = "error",
        position: tuple[int, int] | None = None,
    ) -> None:
        """A problem at `site`; one in a base's file says which policy it was compiled for."""
        if site.source is not self.parts.source:
            message += f" (in `{self.parts.name}`, which extends it)"
        self.problems.append(
            site.source.problem(site.path, message, severity=severity, position=position)
        )

    def run(self) -> CompiledPolicy | None:
        parts = self.parts
        count, size = _expressions(parts)
        if count > MAX_EXPRESSIONS or size > MAX_EXPRESSION_BYTES:  # bounds what loading costs
            self.report(
                Site(parts.source, ()),
                f"{count:,} CEL expressions in {size:,} bytes (conditions, variables and "
                f"templates, its bases' included); a policy may have {MAX_EXPRESSIONS:,} in "
                f"{MAX_EXPRESSION_BYTES:,} bytes: split it into policies",
            )
            return None
        try:
            _portable(parts.params)
            params = self.engine.prepare(parts.params)
        except (TypeError, ValueError) as exc:
            self.report(Site(parts.source, ("params",)), f"unsupported value: {exc}")
            params = self.engine.prepare({})
        variables = {
            name: program
            for name, (text, site) in parts.variables.items()
            if (program := self.expression(site, text, deps=name)) is not None
        }
        self.check_cycles()
        rules = []
        seen: dict[str, Site] = {}
        for rule, site in parts.rules:
            if rule.id == RESERVED_RULE_ID:
                self.report(site.at("id"), f"rule id `{RESERVED_RULE_ID}` is reserved")
            elif rule.id in seen:
                first = seen[rule.id]
                where = "" if first.source is site.source else f"{first.source.file}:"
                self.report(
                    site.at("id"),
                    f"duplicate rule id `{rule.id}` (first at {where}line {first.line})",
                )
            seen.setdefault(rule.id, site)
            when = self.expression(site.at("when"), rule.when, condition=True)
            outcome = self.outcome(site, rule)
            self.check_hint(site, rule)
            if when is not None and outcome is not None:
                origin = f"{site.source.name}:{site.line}"
                rules.append(
                    CompiledRule(rule.id, rule.description, when, outcome, origin, rule.hint)
                )
        default = self.outcome(parts.default[1], parts.default[0])
        self.check_locales([*((rule, site) for rule, site in parts.rules), parts.default])
        if any(p.severity == "error" for p in self.problems) or default is None:
            return None
        outcomes = (*(rule.outcome for rule in rules), default)
        programs = [
            *variables.values(),
            *(rule.when for rule in rules),
            *(p for outcome in outcomes for p in outcome.placeholder_programs()),
        ]
        rules_program = self.engine.rules_program(
            Rules(
                variables,
                [rule.when for rule in rules],
                [outcome.placeholder_programs() for outcome in outcomes],
            )
        )
        if rules_program is None and self.engine.one_call:
            self.report(
                Site(parts.source, ()),
                f"{self.engine.name} cannot run these rules as one program (a rule nests too "
                "deeply with the variables it reads, or a name starts with `hs_var_`): they "
                "are decided one by one, which costs more",
                severity="warning",
            )
        return CompiledPolicy(
            name=parts.name,
            file=parts.source.name,
            description=parts.description,
            extends=parts.extends,
            default_locale=parts.default_locale,
            on_error=parts.on_error,
            params=parts.params,
            params_data=params,
            variables=variables,
            rules=tuple(rules),
            default=default,
            engine=self.engine,
            rules_program=rules_program,
            request_fields=request_fields(p.expression for p in programs),
            literals=_literals([*variables.values(), *(r.when for r in rules)], parts.params),
        )

    def outcome(self, site: Site, outcome: Outcome) -> CompiledOutcome | None:
        rationale = self.template(site.at("rationale"), outcome.rationale)
        reply = {k: self.template(site.at("reply", k), v) for k, v in outcome.reply.items()}
        outputs = {k: self.template(site.at("outputs", k), v) for k, v in outcome.outputs.items()}
        if outcome.decision == "ignore" and outcome.reply:
            self.report(
                site.at("reply"),
                "`ignore` leaves the request pending and tells nobody: this reply would never "
                "be sent; remove it, or decide `decline` or `defer`",
            )
        elif outcome.decision == "decline" and not outcome.reply:
            self.report(
                site.at("decision"),
                "a `decline` without a reply says no in silence to someone who will notice: "
                "add a kind, honest reason (`reply`)",
                severity="warning",
            )
        locale = self.parts.default_locale
        if reply and locale.lower() not in {k.lower() for k in reply}:
            self.report(
                site.at("reply"),
                f"no reply in the default locale `{locale}`: requests in other locales get none",
                severity="warning",
            )
        if rationale is None or None in reply.values() or None in outputs.values():
            return None
        return CompiledOutcome(
            outcome.decision,
            rationale,
            {k: v for k, v in reply.items() if v is not None},
            {k: v for k, v in outputs.items() if v is not None},
        )

    def check_hint(self, site: Site, rule: Rule) -> None:
        """A hint is plain text, in the default locale at least (like a reply)."""
        for locale, text in rule.hint.items():
            if "{{" in text or "}}" in text:
                self.report(
                    site.at("hint", locale), "a hint is plain text: no `{{ }}` placeholders"
                )
        locale = self.parts.default_locale
        if rule.hint and locale.lower() not in {k.lower() for k in rule.hint}:
            self.report(
                site.at("hint"),
                f"no hint in the default locale `{locale}`: requesters in other locales get none",
                severity="warning",
            )

    def check_locales(self, outcomes: list[tuple[Outcome, Site]]) -> None:
        """Warn where a reply lacks a locale that other replies of the policy have: those
        requesters get a reply in the default locale there, and in theirs elsewhere."""
        covered = {k.lower() for outcome, _ in outcomes for k in outcome.reply}
        for outcome, site in outcomes:
            missing = sorted(covered - {k.lower() for k in outcome.reply})
            if outcome.reply and missing:
                self.report(
                    site.at("reply"),
                    f"no reply in {', '.join(f'`{m}`' for m in missing)}, which other replies of "
                    "this policy have: those requesters get the default locale here",
                    severity="warning",
                )

    def template(self, site: Site, text: str) -> Template | None:
        try:
            template = compile_template(text, self.engine)
        except TemplateError as exc:
            self.report(site, exc.message, position=_position(site, text, exc.offset, 1, 1))
            return None
        ok = True
        for placeholder in template.placeholders:
            problems = list(self.check(placeholder.program.expression, deps=None))
            if not problems:
                try:
                    type_check(placeholder.program.expression.text)
                except TypeCheckError as exc:
                    problems.append((exc.message, (exc.line, exc.column)))
                self.check_order(site, text, placeholder.program.expression, placeholder.offset)
            for message, (line, column) in problems:
                self.report(
                    site, message, position=_position(site, text, placeholder.offset, line, column)
                )
                ok = False
        return template if ok else None

    def expression(
        self, site: Site, text: str | bool, *, deps: str | None = None, condition: bool = False
    ) -> Program | None:
        if isinstance(text, bool):  # `when: true` in YAML
            text = "true" if text else "false"
        try:
            expression = parse(text)
            problems = list(self.check(expression, deps=deps))
            for message, (line, column) in problems:
                self.report(site, message, position=_position(site, text, 0, line, column))
            if problems:
                return None
            program = self.engine.compile(expression)
            type_check(text, condition=condition)
            self.check_order(site, text, expression)
            return program
        except (CelSyntaxError, TypeCheckError) as exc:
            self.report(site, exc.message, position=_position(site, text, 0, exc.line, exc.column))
            return None

    def check(
        self, expression: Expression, *, deps: str | None
    ) -> Iterable[tuple[str, tuple[int, int]]]:
        """Static checks of one expression: (message, position inside the expression)."""
        for found in expression.references:
            if isinstance(found, Misuse):
                yield found.message, found.position
            elif isinstance(found, Call):
                if found.name not in FUNCTIONS and found.name not in MACROS:
                    kind = "method" if found.method else "function"
                    hint = did_you_mean(found.name, FUNCTIONS)
                    yield f"unknown {kind} `{found.name}`{hint}", found.position
            else:
                problem = self.check_reference(found.path, deps)
                if problem is not None:
                    index, message = problem
                    yield message, found.positions[index]

    def check_order(self, site: Site, text: str, expression: Expression, offset: int = 0) -> None:
        """Warn where a `map` or `filter` may range over a map: CEL leaves the order of a
        map's keys unspecified, and the C++ runtime changes it from process to process."""
        for found in expression.iterations:
            if found.over == "list" or self.is_list(found.over):
                continue
            self.report(
                site,
                f"`{found.macro}` over what may be a map: the order of a map's keys is "
                "unspecified in CEL (cel-expr-python changes it from process to process), so "
                "the result's order can differ between replicas; range over a list, or use "
                "the result in an order-free way (`size()`, `in`, `exists`)",
                severity="warning",
                position=_position(site, text, offset, *found.position),
            )

    def is_list(self, over: tuple[str, ...] | str) -> bool:
        if isinstance(over, str):
            return False
        shape = {"request": REQUEST_SHAPE, "params": self.params_shape}.get(over[0])
        for segment in over[1:]:
            if not isinstance(shape, Mapping) or segment not in shape:
                return False
            shape = shape[segment]
        return shape == "list"

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
            if path[1] not in self.parts.variables:
                hint = did_you_mean(path[1], self.parts.variables)
                return 1, f"unknown variable `{path[1]}`{hint}"
            if deps is not None:
                self.variable_deps.setdefault(deps, set()).add(path[1])
            return None
        return 0, f"unknown name `{root}`{did_you_mean(root, ROOTS)}"

    def check_cycles(self) -> None:
        reported: set[str] = set()
        for start in self.parts.variables:
            trail = _find_cycle(start, self.variable_deps)
            if trail and not reported & set(trail):
                reported.update(trail)
                chain = " -> ".join(f"`{v}`" for v in [*trail, trail[0]])
                self.report(self.parts.variables[trail[0]][1], f"cyclic variables: {chain}")


def _position(site: Site, text: str, offset: int, line: int, column: int) -> tuple[int, int]:
    """A (line, column) inside an expression that starts at `offset` in a scalar's text."""
    before = text[:offset]
    base_line = before.count("\n") + 1
    base_column = offset - (before.rfind("\n") + 1) + 1
    if line == 1:
        line, column = base_line, base_column + column - 1
    else:
        line = base_line + line - 1
    return site.source.locate_in_scalar(site.path, line, column)


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


def _literals(programs: Iterable[Program], params: Mapping[str, Any]) -> tuple[str | int, ...]:
    """The string and integer literals of the expressions and the params, in first-seen
    order, at most MAX_LITERALS."""
    found = [value for program in programs for value in literals(program.expression.tree)]
    return tuple(dict.fromkeys([*found, *scalars(params)]))[:MAX_LITERALS]


MAX_LITERALS = 64
