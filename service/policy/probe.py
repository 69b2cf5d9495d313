"""Checks that need evaluation, on two representative requests.

What the static type checker cannot see (`params` and `variables` are dyn to it) shows when
each compiled expression runs on a request with every optional field set (a `when` that is not
a bool, type errors) and on one with none set (a `when` that fails without a `has()` guard: a
warning). A `when` that is constant and true makes the rules after it unreachable (a
warning). Each run is repeated under the other engine: where they disagree, a warning.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec

from service.policy.cel import EvalError, Reference, Value, to_json, type_name
from service.policy.cel.memo import per_load_table
from service.policy.compiled import CompiledOutcome, CompiledPolicy
from service.policy.engines import ENGINES, Engine, Program, Scope, get_engine
from service.policy.errors import with_article
from service.policy.parts import PolicyParts, Site
from service.policy.request import ConnectionRequest, Person, Previous, Relationship

__all__ = ["MINIMAL", "REPRESENTATIVE", "probe"]

_T = datetime(2026, 1, 15, 9, 30, tzinfo=UTC)
_FULL_PERSON = Person(
    id="p-1",
    name="Sample Person",
    first_name="Sample",
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
        declined_at=_T,
    ),
    previous=Previous(decision="defer", decided_at=_T, rule="ask-for-context", followed_up=True),
)
# No optional field present: a condition that fails here lacks a `has()` guard.
MINIMAL = ConnectionRequest(
    requester=Person(name="Sample Person", has_photo=False),
    recipient=Person(name="Sample Person", has_photo=False),
)

Report = Callable[..., None]


def probe(
    policy: CompiledPolicy, parts: PolicyParts, report: Report, *, compare_engines: bool = True
) -> None:
    """`compare_engines`: also run everything under the other engine and warn where they
    disagree (`check`, `test`); without it (serving), the other engine only confirms a type
    error, so that whether a policy loads is the same either way."""
    _Probe(policy, parts, report, compare_engines).run()


class _Probe:
    def __init__(
        self, policy: CompiledPolicy, parts: PolicyParts, report: Report, compare_engines: bool
    ) -> None:
        self.policy, self.report, self.compare_engines = policy, report, compare_engines
        self.full = policy.scope(REPRESENTATIVE, _T)
        self.bare = policy.scope(MINIMAL, _T)
        self.twins: dict[int, Program] = {}
        self.variable_sites = {name: site for name, (_, site) in parts.variables.items()}
        self.rule_sites = {rule.id: site for (rule, site) in parts.rules}
        self.default_site = parts.default[1]
        self.disagreements: set[tuple[Any, str]] = set()
        self._encoded: dict[str | None, object] = {}

    def run(self) -> None:
        for name, program in self.policy.variables.items():
            self.attempt(self.variable_sites[name], program, self.full)
        always: str | None = None
        for rule in self.policy.rules:
            site = self.rule_sites[rule.id]
            if always is not None:
                self.report(
                    site.at("id"),
                    f"rule `{rule.id}` can never match: rule `{always}` before it always matches",
                    severity="warning",
                )
            result, failure = self.attempt(site.at("when"), rule.when, self.full)
            if failure:
                continue
            if type_name(result) != "bool":
                self.report(
                    site.at("when"),
                    f"a condition must be a bool, not {with_article(type_name(result))}",
                )
                continue
            _, failure = self.attempt(site.at("when"), rule.when, self.bare, quiet=True)
            if failure and failure.kind == "missing":
                self.report(
                    site.at("when"),
                    f"fails when optional fields are absent ({failure}); guard them with `has()`",
                    severity="warning",
                )
            if always is None and result and self.constant(rule.when):
                always = rule.id
        for rule in self.policy.rules:
            self.templates(self.rule_sites[rule.id], rule.outcome)
        self.templates(self.default_site, self.policy.default)

    def templates(self, site: Site, outcome: CompiledOutcome) -> None:
        templates = [(site.at("rationale"), outcome.rationale)]
        templates += [(site.at("reply", k), t) for k, t in outcome.reply.items()]
        templates += [(site.at("outputs", k), t) for k, t in outcome.outputs.items()]
        for where, template in templates:
            for placeholder in template.placeholders:
                self.attempt(where, placeholder.program, self.full)

    def attempt(
        self, site: Site, program: Program, scope: Scope, *, quiet: bool = False
    ) -> tuple[Any, EvalError | None]:
        """(value, None) or (None, the failure). A type error is reported unless quiet, and
        only when the other engine fails with one too: whether a policy loads must not depend
        on the engine (where only one fails, `compare` warns)."""
        full = scope is self.full
        result = self.outcome(program, full, self.policy.engine.name)
        other = None
        if self.compare_engines or (not quiet and _type_error(result)):
            other = self.outcome(program, full, self.other.name)
        if self.compare_engines and other is not None:
            self.compare(site, program, result, other)
        if not quiet and _type_error(result) and other is not None and _type_error(other):
            self.report(site, f"type error on a representative request: {result[1]}")
        return result

    def outcome(self, program: Program, full: bool, engine: str) -> tuple[Value, EvalError | None]:
        """What `program` gives on the full (or bare) request under `engine`: the same for its
        text in the same context in any policy, so worked out once a load (cel/memo.py)."""
        key = (engine, full, program.expression.text, self.context(program))
        if key not in _OUTCOMES:
            if engine == self.policy.engine.name:
                _OUTCOMES[key] = _value(self.full if full else self.bare, program)
            else:
                other_full, other_bare = self._other_scopes
                _OUTCOMES[key] = _value(other_full if full else other_bare, self.twin(program))
        return _OUTCOMES[key]

    def context(self, program: Program) -> tuple[object, ...]:
        """What besides its text and the request a program's value depends on: the params it
        reads, directly or through variables, and the text of those variables."""
        params: set[str] = set()
        variables: dict[str, str | None] = {}
        pending = [program]
        while pending:
            for found in pending.pop().expression.references:
                if not isinstance(found, Reference) or found.path[0] not in ("params", "variables"):
                    continue
                if len(found.path) == 1:  # the whole map
                    return self._params(None), self._variables
                name = found.path[1]
                if found.path[0] == "params":
                    params.add(name)
                elif name not in variables:
                    variable = self.policy.variables.get(name)
                    variables[name] = None if variable is None else variable.expression.text
                    pending += [variable] if variable is not None else []
        return tuple((n, self._params(n)) for n in sorted(params)), tuple(sorted(variables.items()))

    def _params(self, name: str | None) -> object:
        """The value of param `name` (None: all of them), as bytes to compare."""
        if name is not None and name not in self.policy.params:
            return "missing"  # not bytes: unlike any value's
        if name not in self._encoded:
            value = self.policy.params if name is None else self.policy.params[name]
            try:
                self._encoded[name] = msgspec.json.encode(value)
            except (TypeError, msgspec.EncodeError):
                self._encoded[name] = object()  # shared with no other policy
        return self._encoded[name]

    @functools.cached_property
    def _variables(self) -> object:
        return tuple((n, p.expression.text) for n, p in self.policy.variables.items())

    @functools.cached_property
    def _other_scopes(self) -> tuple[Scope, Scope]:
        """The same two requests under the other engine, built when first needed."""
        variables = {name: self.twin(p) for name, p in self.policy.variables.items()}
        params = self.other.prepare(self.policy.params)
        return (
            self.other.scope(REPRESENTATIVE, _T, params, variables),
            self.other.scope(MINIMAL, _T, params, variables),
        )

    @functools.cached_property
    def other(self) -> Engine:
        """The other engine: imported only when a probe needs it (never when serving a policy
        without type errors: docs/adr/0015-layers.md)."""
        return get_engine(next(e for e in ENGINES if e != self.policy.engine.name))

    def twin(self, program: Program) -> Program:
        if id(program) not in self.twins:
            self.twins[id(program)] = self.other.compile(program.expression)
        return self.twins[id(program)]

    def compare(
        self,
        site: Site,
        program: Program,
        result: tuple[Any, EvalError | None],
        other: tuple[Any, EvalError | None],
    ) -> None:
        """Warn when the other engine gives another value (or fails where this one did not)."""
        if (result[0], result[1] is None) == (other[0], other[1] is None):
            return
        if (site.path, program.expression.text) in self.disagreements:
            return
        self.disagreements.add((site.path, program.expression.text))
        mine, theirs = (_outcome(*result), _outcome(*other))
        errors = [e for e in (result[1], other[1]) if e is not None]
        if any(e.kind == "missing" for e in errors):
            hint = " (guard every optional level with has(): `has(a.b) && has(a.b.c)`)"
        elif any(e.kind == "type" for e in errors):
            hint = " (compare like types: convert with double() or int())"
        else:
            hint = ""
        self.report(
            site,
            f"the CEL engines disagree here on a sample request: {self.policy.engine.name} "
            f"gives {mine}, {self.other.name} gives {theirs}{hint}",
            severity="warning",
        )

    def constant(self, program: Program) -> bool:
        """True when a program reads no request data or time, directly or through variables."""
        pending = [program]
        seen: set[str] = set()
        while pending:
            for found in pending.pop().expression.references:
                if isinstance(found, Reference):
                    if found.path[0] in ("request", "now"):
                        return False
                    if found.path[0] == "variables" and found.path[1] not in seen:
                        seen.add(found.path[1])
                        pending.append(self.policy.variables[found.path[1]])
        return True


# (engine, full request?, text, context) -> what it gave, for the policies of one load.
_OUTCOMES: dict[tuple[str, bool, str, tuple[object, ...]], tuple[Value, EvalError | None]] = (
    per_load_table()
)


def _value(scope: Scope, program: Program) -> tuple[Value, EvalError | None]:
    """(value, None) or (None, the failure). The failure is kept (_OUTCOMES) without its
    traceback or cause: their frames would hold the whole load, the set it replaces
    included, in a cycle that only the garbage collector could free."""
    try:
        return scope.run(program), None
    except EvalError as exc:
        exc.__cause__ = exc.__context__ = None
        return None, exc.with_traceback(None)


def _type_error(result: tuple[Any, EvalError | None]) -> bool:
    return result[1] is not None and result[1].kind == "type"


def _outcome(value: Any, error: EvalError | None) -> str:
    """As CEL writes it: `true`, `"text"`, `[1, 2]`."""
    if error is not None:
        return f"an error ({error})"
    return f"`{json.dumps(to_json(value), ensure_ascii=False)}`"
