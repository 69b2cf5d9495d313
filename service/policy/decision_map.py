"""A policy's decision map: `handshake map POLICY`.

The input space a policy can tell apart is derived from the policy itself. For each request
field its conditions read (directly or through variables) the values that can tip them:
- a bool both ways;
- a string as each literal or param it is compared with (`==`, `!=`, `in`), one value none
  of them, and absent;
- a number on each side of each literal or param it is compared with (`<`, `<=`, `>`, `>=`,
  `==`), and absent;
- a list empty, or holding each value it is compared with (also inside `exists`, `all`,
  `filter` and `map`), or another;
- a timestamp absent, a day ago, or twenty years ago;
- the note empty or not.

`attributes` keep the base request's values. Every combination is decided, up
to a cap (`max_regions`): past it, that many combinations spread over the whole space are
decided instead, and the map says it was capped (a rule that decides only a few regions may
then be missed). The map tells which rule decides how many regions, what is the same in
all of them, which rules decide none, and where a condition fails.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import lark
import msgspec

from service.policy.alternatives import decide, field_value, fields_read, with_field
from service.policy.cel import COMPREHENSIONS, REQUEST, Reference, Tree, references
from service.policy.cel.references import arguments, bare_name, literals, scalars
from service.policy.cel.schema import Field
from service.policy.compiled import CompiledPolicy, PolicySet
from service.policy.request import KNOWN_VIA, ConnectionRequest, Person, Previous

__all__ = ["MAX_REGIONS", "DecisionMap", "RuleRegions", "explore"]

MAX_REGIONS = 20_000
MAX_FAILURES = 20
_BASE = ConnectionRequest(
    requester=Person(name="Requester", has_photo=True),
    recipient=Person(name="Recipient", has_photo=True),
)
_OTHER = "other"  # a string none of the policy's values
_NOTE = "Hello — I'd like to connect."
_COMPARISONS = frozenset(("relation_eq", "relation_ne", "relation_in", "relation_lt")) | frozenset(
    ("relation_le", "relation_gt", "relation_ge")
)


@dataclass
class RuleRegions:
    """The regions one rule (or the default) decides."""

    rule: str  # `default` for the default
    decision: str
    regions: int = 0
    same: dict[str, Any] = field(default_factory=dict)  # field -> the value all regions share


class DecisionMap(msgspec.Struct, omit_defaults=True):
    policy: str
    revision: str | None  # of the policy set
    now: datetime  # the evaluation time
    dimensions: dict[str, list[Any]]  # field -> the values explored
    regions: int
    space: int  # how many regions the dimensions make
    capped: bool  # `regions` of them, spread over the space, were decided
    rules: list[RuleRegions]  # in the policy's order, the default last
    unreached: list[str]  # rules (or `default`) that decide no region explored
    unexplored: list[str]  # rules that read `attributes`, which the map does not vary
    failures: list[tuple[dict[str, Any], str, str]]  # (region, rule, message), the first ones
    # With `table=True`: per region, the index of each field's value, then of its rule.
    table: list[list[int]] | None = None


def explore(
    policy_set: PolicySet,
    name: str,
    now: datetime,
    max_regions: int = MAX_REGIONS,
    *,
    table: bool = False,
) -> DecisionMap:
    policy = policy_set.get(name)
    dimensions = _dimensions(policy, now)
    total = math.prod(len(v) for v in dimensions.values())
    capped = total > max_regions
    unexplored = [  # what the map cannot reach: it leaves `attributes` as they are
        rule.id
        for rule in policy.rules
        if any(
            isinstance(f, Reference) and f.path[:2] == ("request", "attributes")
            for f in rule.when.expression.references
        )
    ]
    summaries = {rule.id: RuleRegions(rule.id, rule.outcome.decision) for rule in policy.rules}
    summaries["default"] = RuleRegions("default", policy.default.decision)
    failures: list[tuple[dict[str, Any], str, str]] = []
    paths = list(dimensions)
    order = {rule: index for index, rule in enumerate(summaries)}
    rows: list[list[int]] | None = [] if table else None
    regions = 0
    for indices in _combinations([len(dimensions[path]) for path in paths], total, max_regions):
        values = [dimensions[path][i] for path, i in zip(paths, indices, strict=True)]
        request = _BASE
        for path, value in zip(paths, values, strict=True):
            request = with_field(request, path, value)
        rule, _, failed = decide(policy, request, now)
        regions += 1
        region = {".".join(path): value for path, value in zip(paths, values, strict=True)}
        summary = summaries[rule or "default"]
        if summary.regions:
            summary.same = {k: v for k, v in summary.same.items() if region[k] == v}
        else:
            summary.same = region
        summary.regions += 1
        if rows is not None:
            rows.append([*indices, order[summary.rule]])
        for error in failed:
            if len(failures) < MAX_FAILURES:
                failures.append((region, error.rule or "default", error.message))
    return DecisionMap(
        policy=name,
        revision=policy_set.revision,
        now=now,
        dimensions={".".join(path): values for path, values in dimensions.items()},
        regions=regions,
        space=total,
        capped=capped,
        rules=list(summaries.values()),
        unreached=[s.rule for s in summaries.values() if not (s.regions or s.rule in unexplored)],
        unexplored=unexplored,
        failures=failures,
        table=rows,
    )


def _combinations(sizes: list[int], total: int, cap: int) -> Iterator[tuple[int, ...]]:
    """The index of each dimension's value in every combination, or, past `cap`, in `cap` of
    them spread over the whole space: the k-th is combination k x step (mod total), with a
    step coprime to the total, so no two repeat and every value of every dimension occurs."""
    if total <= cap:
        yield from itertools.product(*(range(size) for size in sizes))
        return
    step = max(1, round(total * 0.6180339887))
    while math.gcd(step, total) != 1:
        step += 1
    for k in range(cap):
        index, digits = k * step % total, []
        for size in reversed(sizes):
            index, digit = divmod(index, size)
            digits.append(digit)
        yield tuple(reversed(digits))


def _dimensions(policy: CompiledPolicy, now: datetime) -> dict[tuple[str, ...], list[Any]]:
    """Per field the conditions read, the values to explore (the base request's first)."""
    compared = _compared(policy)
    dimensions: dict[tuple[str, ...], list[Any]] = {}
    for path, spec in fields_read(policy):
        if path[0] == "previous":
            continue  # explored whole, below
        if spec.kind in ("any", "message"):
            continue
        if path not in compared and spec.kind not in ("bool", "timestamp") and path != ("message",):
            continue  # read for a reply's text, not compared: it tells no region apart
        base = field_value(_BASE, path)
        values = [base, *_values(path, spec, compared.get(path, []), now)]
        unique = [v for i, v in enumerate(values) if v not in values[:i]]  # lists: no hash
        dimensions[path] = [v for v in unique if v == base or _accepted(path, v)]
    if policy.request_fields is None or "previous" in policy.request_fields:
        at = now - timedelta(days=30)
        dimensions[("previous",)] = [
            None,
            Previous(decision="defer", decided_at=at, followed_up=False),
            Previous(decision="defer", decided_at=at, followed_up=True),
            Previous(decision="ignore", decided_at=at),
        ]
    return dimensions


def _accepted(path: tuple[str, ...], value: Any) -> bool:
    """Whether a request with this value is one a caller could send."""
    try:
        request = with_field(_BASE, path, value)
        msgspec.convert(msgspec.to_builtins(request), ConnectionRequest)
    except (msgspec.ValidationError, ValueError, TypeError):
        return False
    return True


def _values(path: tuple[str, ...], spec: Field, found: list[Any], now: datetime) -> Iterator[Any]:
    strings = [v for v in found if isinstance(v, str)]
    numbers = sorted({v for v in found if isinstance(v, int) and not isinstance(v, bool)})
    if spec.kind == "bool":
        yield from (False, True)
    elif path == ("message",):
        yield from ("", _NOTE)
    elif spec.kind == "string":
        allowed = KNOWN_VIA if path == ("relationship", "known_via") else None
        yield from (s for s in strings if allowed is None or s in allowed)
        if allowed is None:
            yield _OTHER
    elif spec.kind == "int":
        yield from sorted({n + d for n in numbers for d in (-1, 0, 1) if n + d >= 0} | {0})
    elif spec.kind == "list":
        yield []
        yield from ([s] for s in strings)
        yield [_OTHER]
    elif spec.kind == "timestamp":
        yield from (now - timedelta(days=1), now - timedelta(days=20 * 365))
    if path != ("message",):
        yield None  # absent, where the schema allows it (`_accepted`)


def _compared(policy: CompiledPolicy) -> dict[tuple[str, ...], list[Any]]:
    """Per request field, the literals and params values the conditions compare it with."""
    definitions = {name: p.expression.tree for name, p in policy.variables.items()}
    compared: dict[tuple[str, ...], list[Any]] = {}
    trees = [*definitions.values(), *(rule.when.expression.tree for rule in policy.rules)]
    for tree in trees:
        ranges = _ranges(tree, definitions)  # a comprehension's variable -> the list field
        for node in tree.iter_subtrees():
            if node.data != "relation" or len(node.children) != 2:
                continue
            operator, right = node.children
            if not isinstance(operator, lark.Tree) or operator.data not in _COMPARISONS:
                continue
            left = operator.children[0]
            for side, other in ((left, right), (right, left)):
                name = bare_name(side) if isinstance(side, lark.Tree) else None
                path = ranges.get(name) if name else _field(side, definitions)
                if path is not None:
                    found = _constants(other, policy.params, definitions)
                    compared.setdefault(path, []).extend(found)
    return compared


def _ranges(tree: Tree, definitions: dict[str, Tree]) -> dict[str, tuple[str, ...]]:
    """`xs.exists(x, …)` over a request list: `x` -> the list's field."""
    found = {}
    for node in tree.iter_subtrees():
        if node.data != "member_dot_arg" or str(node.children[1]) not in COMPREHENSIONS:
            continue
        args = arguments(node.children[2] if len(node.children) > 2 else None)
        variable = bare_name(args[0]) if args else None
        path = _field(node.children[0], definitions)
        if variable is not None and path is not None:
            found[variable] = path
    return found


def _field(node: Any, definitions: dict[str, Tree], depth: int = 0) -> tuple[str, ...] | None:
    """The one request field `node` reads (through variables too), else None."""
    if not isinstance(node, lark.Tree) or depth > 4:
        return None
    paths: set[tuple[str, ...]] = set()
    for found in references(node):
        if not isinstance(found, Reference):
            continue
        if found.path[0] == "request" and len(found.path) > 1:
            paths.add(_leaf(found.path[1:]))
        elif found.path[0] == "variables" and len(found.path) > 1:
            inner = definitions.get(found.path[1])
            path = _field(inner, definitions, depth + 1) if inner is not None else None
            if path is None:
                return None
            paths.add(path)
    return paths.pop() if len(paths) == 1 else None


def _leaf(path: tuple[str, ...]) -> tuple[str, ...]:
    """The schema field a path selects (a path into `attributes` stays whole)."""
    fields, out = REQUEST.fields, []
    for segment in path:
        found = fields.get(segment)
        if found is None:
            break
        out.append(segment)
        if found.kind != "message" or found.message is None:
            break
        fields = found.message.fields
    return tuple(out) or path


def _constants(
    node: Any, params: Any, definitions: dict[str, Tree], depth: int = 0
) -> Iterator[Any]:
    """The string and integer literals in `node`, and the values of the params it reads,
    directly or through variables."""
    if not isinstance(node, lark.Tree) or depth > 4:
        return
    yield from literals(node)
    for found in references(node):
        if isinstance(found, Reference) and found.path[0] == "params":
            value = params
            for segment in found.path[1:]:
                value = value.get(segment) if isinstance(value, Mapping) else None
            yield from scalars(value)
        elif isinstance(found, Reference) and found.path[0] == "variables" and found.path[1:]:
            inner = definitions.get(found.path[1])
            yield from _constants(inner, params, definitions, depth + 1)
