"""What would change a decision: for each other decision a policy can reach from a request,
the smallest change found that reaches it, and the rule that would then decide.

The changes tried are of one field the policy reads, the smaller kinds first: a bool
flipped; how we know each other set to each value the policy names; a note added or taken
away; an integer moved to each side of the integers the policy holds; a list or a text set
to each string the policy's expressions and params hold (its `literals`); an optional field
left out. Timestamps and free-form
`attributes` are not changed. At most MAX_TRIES requests are decided, so an explained
decision stays cheap (bench/README.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import msgspec

from service.policy.cel import REQUEST
from service.policy.cel.schema import Field, Message
from service.policy.compiled import CompiledPolicy
from service.policy.deciding import first_match, rule_by_rule
from service.policy.decision import Alternative, RuleError
from service.policy.model import DECISIONS
from service.policy.request import KNOWN_VIA, ConnectionRequest
from service.policy.wording import choose_locale

__all__ = [
    "MAX_TRIES",
    "alternatives",
    "decide",
    "field_value",
    "fields_read",
    "with_field",
]

MAX_TRIES = 24
_NOTE = "Hello — I'd like to connect."  # a note, where there was none


def alternatives(
    policy: CompiledPolicy,
    request: ConnectionRequest,
    now: datetime,
    decision: str,
    locale: str | None = None,
) -> list[Alternative]:
    """One alternative for each other decision reached, in the order of DECISIONS; with the
    deciding rule's hint in `locale` (as a reply's locale is chosen), where it has one."""
    wanted = {o.decision for o in (*(r.outcome for r in policy.rules), policy.default)}
    wanted.discard(decision)
    found: dict[str, Alternative] = {}
    for tries, (path, value) in enumerate(_changes(policy, request)):
        if tries >= MAX_TRIES or wanted <= found.keys():
            break
        changed = with_field(request, path, value)
        rule, reached, _ = decide(policy, changed, now)
        if reached in wanted and reached not in found and _valid(changed):
            hints = next((r.hint for r in policy.rules if r.id == rule), {})
            chosen = choose_locale(hints, locale, policy.default_locale)
            found[reached] = Alternative(
                decision=reached,  # type: ignore[arg-type]
                rule=rule,
                field=".".join(path),
                value=value,
                hint=hints[chosen] if chosen is not None else None,
            )
    return [found[d] for d in DECISIONS if d in found]


def decide(
    policy: CompiledPolicy, request: ConnectionRequest, now: datetime
) -> tuple[str | None, str, list[RuleError]]:
    """The rule that decides `request` (None: the default), its decision, and the failures
    on the way (deciding.py): a decision without its texts, for searching."""
    scope = policy.scope(request, now)
    match = first_match(policy, scope)
    if match is not None:
        if match.position < 0:
            return None, policy.default.decision, []
        rule = policy.rules[match.position]
        return rule.id, rule.outcome.decision, []
    errors: list[RuleError] = []
    rule_id, outcome = rule_by_rule(policy, scope, errors)
    return rule_id, outcome.decision, errors


Change = tuple[tuple[str, ...], Any]  # a field's path, and its new value

# Fields whose strings are one of a few values.
_ENUMS: dict[tuple[str, ...], tuple[str, ...]] = {("relationship", "known_via"): KNOWN_VIA}


def _changes(policy: CompiledPolicy, request: ConnectionRequest) -> Iterator[Change]:
    """(field path, new value) for each change to try: the smaller kinds of change first (a
    flag flipped, then how we know each other, the note, a number, a list, a text, a field
    left out), the fields in the schema's order within a kind, the nearer values first."""
    strings = [v for v in policy.literals if isinstance(v, str) and v]
    numbers = sorted({v for v in policy.literals if isinstance(v, int)})
    fields = [
        (path, field, field_value(request, path))
        for path, field in fields_read(policy)
        if len(path) == 1 or field_value(request, path[:-1]) is not None  # its part is there
    ]
    for kind in range(7):
        for path, field, current in fields:
            for value in _values(kind, path, field, current, strings, numbers):
                if value != current:
                    yield path, value


def fields_read(policy: CompiledPolicy) -> Iterator[tuple[tuple[str, ...], Field]]:
    reads = policy.request_fields
    for name, field in REQUEST.fields.items():
        if name == "attributes" or (reads is not None and name not in reads):
            continue
        if field.kind == "message" and field.message is not None:
            wanted = None if reads is None else reads[name]
            yield from _subfields((name,), field.message, wanted)
        else:
            yield (name,), field


def _subfields(
    prefix: tuple[str, ...], message: Message, wanted: tuple[str, ...] | None
) -> Iterator[tuple[tuple[str, ...], Field]]:
    for name, field in message.fields.items():
        if wanted is None or name in wanted:
            if field.kind == "message" and field.message is not None:
                yield from _subfields((*prefix, name), field.message, None)
            else:
                yield (*prefix, name), field


def _values(
    kind: int,
    path: tuple[str, ...],
    field: Field,
    current: Any,
    strings: list[str],
    numbers: list[int],
) -> Iterator[Any]:
    enum = _ENUMS.get(path)
    if kind == 0 and field.kind == "bool":
        yield not current
    elif kind == 1 and enum is not None:
        yield from (s for s in strings if s in enum)
    elif kind == 2 and path == ("message",):
        yield "" if current else _NOTE
    elif kind == 3 and field.kind == "int":
        near = {n + d for n in numbers for d in (-1, 0, 1) if n + d >= 0} | {0}
        yield from sorted(near, key=lambda n: (abs(n - (current or 0)), n))[:4]
    elif kind == 4 and field.kind == "list" and field.item == "string":
        yield from ([s] for s in strings)
        if current:
            yield []
    elif kind == 5 and field.kind == "string" and enum is None and path != ("message",):
        yield from strings
    elif kind == 6 and not field.required and current is not None and field.kind != "list":
        yield None


def field_value(request: ConnectionRequest, path: tuple[str, ...]) -> Any:
    """The value at `path` (None where it, or a part it is in, is absent)."""
    value: Any = request
    for name in path:
        value = getattr(value, name, None)
    return value


def with_field(value: Any, path: tuple[str, ...], new: Any) -> Any:
    """`value` with the field at `path` set to `new` (not validated: see `_valid`)."""
    head, *rest = path
    inner = with_field(getattr(value, head), tuple(rest), new) if rest else new
    return msgspec.structs.replace(value, **{head: inner})


def _valid(request: ConnectionRequest) -> bool:
    """Whether a caller could send this request (a literal may not fit the field)."""
    try:
        msgspec.convert(msgspec.to_builtins(request), ConnectionRequest)
    except (msgspec.ValidationError, ValueError):
        return False
    return True
