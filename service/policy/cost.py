"""The memory budget of a policy's expressions, checked at load (docs/policy-language.md,
"Limits").

Google's C++ runtime has no limit on the size of a string or list, so this is the bound: an
expression whose worst case (service/policy/cel/cost.py) exceeds EXPRESSION_BUDGET, or a
policy whose expressions together exceed POLICY_BUDGET, does not load, with file:line. What
the names can hold comes from the request's schema (its strings' and lists' maximum lengths;
the free-form `attributes`, only the body limit), the params' actual values and the
variables' own bounds. (`s + s` inside `all` over 70 x 70 items held 560 MiB before this.)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

from service.policy.cel import REQUEST
from service.policy.cel.cost import ELEMENT, INPUT_BYTES, Bound, Estimate, Size, opaque, scalar
from service.policy.cel.memo import per_load_table
from service.policy.cel.schema import Field, Kind
from service.policy.compiled import CompiledOutcome, CompiledPolicy
from service.policy.engines import Program
from service.policy.parts import PolicyParts, Site

__all__ = ["EXPRESSION_BUDGET", "POLICY_BUDGET", "check_cost", "estimate"]

EXPRESSION_BUDGET = 16 * 2**20
POLICY_BUDGET = 64 * 2**20


def _kind_size(kind: Kind | None, max_length: int | None, field: Field) -> Size:
    """The largest value of one kind (UTF-8: 4 bytes a character)."""
    if kind == "string":
        return Size(Bound(4.0 * (max_length or INPUT_BYTES)))
    if kind == "message" and field.message is not None:
        sizes = [_field_size(f).total.constant + ELEMENT for f in field.message.fields.values()]
        return Size(Bound(sum(sizes)), float(len(sizes)), sum(sizes))
    if kind == "any":  # free-form data: only the body limit bounds it
        return Size(Bound(INPUT_BYTES), float(max_length or INPUT_BYTES / 2), INPUT_BYTES)
    return scalar()


def _field_size(field: Field) -> Size:
    if field.kind == "list":
        item = _kind_size(field.item, field.item_max_length, field).total.constant
        count = float(field.max_length or INPUT_BYTES / 2)
        return Size(Bound(count * (item + ELEMENT)), count, item)
    return _kind_size(field.kind, field.max_length, field)


@functools.cache
def _request_size(path: tuple[str, ...]) -> Size:
    if not path:
        sizes = [_field_size(f).total.constant + ELEMENT for f in REQUEST.fields.values()]
        return Size(Bound(sum(sizes)), float(len(sizes)), sum(sizes))
    fields, found = REQUEST.fields, None
    for segment in path:
        if segment not in fields:  # inside free-form attributes: anything within the body
            return opaque(INPUT_BYTES)
        found = fields[segment]
        fields = found.message.fields if found.kind == "message" and found.message else {}
    assert found is not None
    return _field_size(found)


def _data_size(value: Any) -> Size:
    """The exact size of known data (params)."""
    if isinstance(value, Mapping):
        values = [_data_size(v) for v in value.values()]
        keys = sum(len(str(k).encode()) for k in value)
        total = keys + sum(v.total.constant + ELEMENT for v in values)
        return Size(
            Bound(total), float(len(values)), max((v.total.constant for v in values), default=0.0)
        )
    if isinstance(value, list | tuple):
        values = [_data_size(v) for v in value]
        total = sum(v.total.constant + ELEMENT for v in values)
        return Size(
            Bound(total), float(len(values)), max((v.total.constant for v in values), default=0.0)
        )
    if isinstance(value, str | bytes):
        return Size(Bound(float(len(value if isinstance(value, bytes) else value.encode()))))
    return scalar()


def _params_size(params: Mapping[str, Any], path: tuple[str, ...]) -> Size:
    value: Any = params
    for segment in path:
        if not isinstance(value, Mapping) or segment not in value:
            return scalar()  # the static checks refuse unknown params
        value = value[segment]
    return _data_size(value)


# --- a policy -------------------------------------------------------------------------------


def estimate(
    program: Program, params: Mapping[str, Any], variables: Mapping[str, Size]
) -> tuple[Size, float]:
    """The bound on `program`'s value, and the bytes it may allocate for one request."""

    def sources(path: tuple[str, ...]) -> Size | None:
        root = path[0]
        if root == "request":
            return _request_size(path[1:])
        if root == "params":
            return _params_size(params, path[1:])
        if root == "variables" and len(path) > 1 and path[1] in variables:
            found = variables[path[1]]
            return found if len(path) == 2 else opaque(found.total.constant)
        if root == "now":
            return scalar()
        return None

    text = program.expression.text
    walks = _WALKS.setdefault(text, [])
    for sizes, result in walks:  # the same text reading the same sizes: the same walk
        if all(sources(path) == size for path, size in sizes):
            return result
    read: list[tuple[tuple[str, ...], Size | None]] = []

    def recorded(path: tuple[str, ...]) -> Size | None:
        read.append((path, sources(path)))
        return read[-1][1]

    walk = Estimate(recorded)
    value, allocated = walk.node(program.expression.tree)
    result = value, walk.value(allocated)
    walks.append((read, result))
    return result


# Per text, the walks over it this load made: the sizes each read, and its result.
_WALKS: dict[str, list[tuple[list[tuple[tuple[str, ...], Size | None]], tuple[Size, float]]]] = (
    per_load_table()
)


Report = Callable[..., None]


def check_cost(policy: CompiledPolicy, parts: PolicyParts, report: Report) -> bool:
    """Report every expression past EXPRESSION_BUDGET, and the policy past POLICY_BUDGET;
    True when within both."""
    sites = {name: site for name, (_, site) in parts.variables.items()}
    rule_sites = {rule.id: site for rule, site in parts.rules}
    programs = [(sites[name], p) for name, p in policy.variables.items()]
    for rule in policy.rules:
        programs.append((rule_sites[rule.id].at("when"), rule.when))
        programs += _placeholders(rule_sites[rule.id], rule.outcome)
    programs += _placeholders(parts.default[1], policy.default)
    variables: dict[str, Size] = {}
    for name in _in_dependency_order(policy.variables):
        variables[name] = estimate(policy.variables[name], policy.params, variables)[0]
    within, whole = True, 0.0
    for site, program in programs:
        _, allocated = estimate(program, policy.params, variables)
        whole += allocated
        if allocated > EXPRESSION_BUDGET:
            within = False
            report(
                site,
                f"this expression may build {_mib(allocated)} for one request (the budget is "
                f"{_mib(EXPRESSION_BUDGET)}): a comprehension repeats what it builds once a step, "
                "up to the iteration budget, and free-form attributes may be as large as the "
                "body; build less inside comprehensions, range over params or typed fields, and "
                "add numbers from attributes as `int(x) + int(y)` (else `+` may join strings)",
            )
    if within and whole > POLICY_BUDGET:
        within = False
        report(
            Site(parts.source, ()),
            f"this policy's expressions together may build {_mib(whole)} for one request (the "
            f"budget is {_mib(POLICY_BUDGET)})",
        )
    return within


def _placeholders(site: Site, outcome: CompiledOutcome) -> list[tuple[Site, Program]]:
    templates = [(site.at("rationale"), outcome.rationale)]
    templates += [(site.at("reply", k), t) for k, t in outcome.reply.items()]
    templates += [(site.at("outputs", k), t) for k, t in outcome.outputs.items()]
    return [(where, p.program) for where, t in templates for p in t.placeholders]


def _in_dependency_order(variables: Mapping[str, Program]) -> list[str]:
    order: list[str] = []
    pending = dict(variables)
    while pending:  # the compiler has refused cycles
        ready = [n for n, p in pending.items() if not (p.expression.variables & pending.keys())]
        for name in ready or list(pending):
            order.append(name)
            del pending[name]
    return order


def _mib(value: float) -> str:
    if math.isinf(value) or value >= 2**40:
        return "more than 1 TiB"
    return f"{value / 2**20:,.1f} MiB"
