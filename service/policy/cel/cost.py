"""A static bound on the memory one expression can build for one evaluation.

In the way of Kubernetes' CEL cost estimator: every node of an expression gets an upper bound
on the size of its value and on the bytes allocated to compute it, from what the names it
reads can hold (`sources`: the caller knows the request's schema, the params and the
variables), literals, and the iteration budget (at most ITERATION_BUDGET comprehension steps,
nested ones counted together). A comprehension sums its body over its steps; what the body
builds from its own variable (`x + "!"` in `xs.map(x, x + "!")`) is summed as at most the
whole list, what it builds from anything else as that many times over (`xs.map(x, s + s)`:
the step count times `s`). What is summed is everything built, not what is alive at once: the
C++ runtime keeps every value an evaluation builds until it ends. Without types for free-form
data, `+` on two of its values may join strings: `int(x) + int(y)` says they are numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import lark

from service.policy.cel.references import Tree, arguments, bare_name, selection
from service.policy.cel.values import ITERATION_BUDGET

__all__ = ["ELEMENT", "INPUT_BYTES", "Bound", "Estimate", "Size", "opaque", "scalar"]

INPUT_BYTES = 64 * 1024  # the default body limit: what free-form data can hold at most
SCALAR = 16.0  # a bool, number, timestamp or duration
ELEMENT = 32.0  # what one element of a built list costs beyond its value


@dataclass(frozen=True)
class Bound:
    """`constant` bytes, plus `per[x]` bytes for each byte of comprehension variable `x`."""

    constant: float = 0.0
    per: Mapping[str, float] = field(default_factory=dict)

    def __add__(self, other: Bound) -> Bound:
        per = dict(self.per)
        for name, k in other.per.items():
            per[name] = per.get(name, 0.0) + k
        return Bound(self.constant + other.constant, per)

    def times(self, k: float) -> Bound:
        return Bound(self.constant * k, {name: c * k for name, c in self.per.items()})

    def most(self, other: Bound) -> Bound:
        per = dict(self.per)
        for name, k in other.per.items():
            per[name] = max(per.get(name, 0.0), k)
        return Bound(max(self.constant, other.constant), per)

    def without(self, name: str) -> tuple[Bound, float]:
        per = dict(self.per)
        return Bound(self.constant, per), per.pop(name, 0.0)


NOTHING = Bound()


@dataclass(frozen=True)
class Size:
    """A value's bound: its bytes, and for a list or map its element count and the bytes of
    its largest element (value), both as numbers."""

    total: Bound
    count: float = 0.0
    item: float = 0.0


def scalar() -> Size:
    return Size(Bound(SCALAR))


def opaque(total: float) -> Size:
    """Data of unknown shape within `total` bytes (each element takes two at least)."""
    return Size(Bound(total), count=total / 2, item=total)


class Estimate:
    """One expression's walk. `allocated` is what it builds per evaluation."""

    def __init__(self, sources: Callable[[tuple[str, ...]], Size | None]) -> None:
        self.sources = sources
        self.variables: dict[str, float] = {}  # comprehension variable -> its largest size
        self.evaluations = 1.0  # how often the node at hand runs per evaluation, at most

    def value(self, bound: Bound) -> float:
        return bound.constant + sum(k * self.variables[n] for n, k in bound.per.items())

    def node(self, node: Any) -> tuple[Size, Bound]:
        """(the value's bound, the bytes allocated) for one parse-tree node."""
        if not isinstance(node, lark.Tree):
            return scalar(), NOTHING
        kind = node.data
        children = [c for c in node.children if c is not None]
        trees = [c for c in children if isinstance(c, lark.Tree)]
        if len(trees) == 1 and len(children) == 1 and kind not in _LEAVES:
            return self.node(trees[0])  # a wrapper: expr -> conditionalor -> … -> primary
        if kind == "expr" and len(trees) == 3:  # c ? a : b
            (_, cond), (a, a_alloc), (b, b_alloc) = (self.node(t) for t in trees)
            both = Size(a.total.most(b.total), max(a.count, b.count), max(a.item, b.item))
            return both, cond + a_alloc.most(b_alloc)
        if kind == "addition" and len(trees) == 2 and trees[0].data == "addition_add":
            return self.concatenation(trees)
        if kind == "literal":
            return self.literal(children[0])
        if kind in ("list_lit", "map_lit"):
            return self.collection(trees)
        if kind in ("member_dot", "ident", "dot_ident"):
            return self.dotted(node)
        if kind == "member_index":
            (target, alloc), (_, index_alloc) = self.node(trees[0]), self.node(trees[1])
            return opaque(target.item), alloc + index_alloc
        if kind == "member_dot_arg":
            return self.method(node)
        if kind in ("ident_arg", "dot_ident_arg"):
            return self.function(node)
        if kind == "paren_expr":
            return self.node(trees[0])
        # Operators whose value is a scalar: relations, arithmetic, logic, unary.
        alloc = NOTHING
        for tree in trees:
            alloc = alloc + self.node(tree)[1]
        return scalar(), alloc

    def concatenation(self, trees: list[Tree]) -> tuple[Size, Bound]:
        """`a + b`: numbers, or strings and lists joined (a new value of both sizes)."""
        parts = [self.node(t) for t in trees]
        total = NOTHING
        alloc = NOTHING
        for size, part_alloc in parts:
            total, alloc = total + size.total, alloc + part_alloc
        count = sum(size.count for size, _ in parts)
        item = max((size.item for size, _ in parts), default=0.0)
        return Size(total, count, item), alloc + total

    def literal(self, token: Any) -> tuple[Size, Bound]:
        text = str(token)
        if getattr(token, "type", "") in ("STRING_LIT", "BYTES_LIT"):
            return Size(Bound(float(len(text.encode())))), NOTHING
        return scalar(), NOTHING

    def collection(self, trees: list[Tree]) -> tuple[Size, Bound]:
        """A list or map literal: its elements (a map's keys and values alike)."""
        elements = [self.node(t) for t in _items(trees)]
        total, alloc = NOTHING, NOTHING
        for size, element_alloc in elements:
            total, alloc = total + size.total + Bound(ELEMENT), alloc + element_alloc
        item = max((self.value(size.total) for size, _ in elements), default=0.0)
        return Size(total, float(len(elements)), item), alloc + total

    def dotted(self, node: Tree) -> tuple[Size, Bound]:
        """A dotted name: a source, a comprehension variable, or a field of a value."""
        chain = selection(node)
        if chain.start is not None:  # fields of a computed value: at most that value
            target, alloc = self.node(node.children[0])
            return Size(target.total, target.count, target.item), alloc
        path = tuple(str(name) for name in chain.names)
        if path[0] in self.variables:  # it, or a field of it: at most its size
            size = self.variables[path[0]]
            return Size(Bound(0.0, {path[0]: 1.0}), size / 2, size), NOTHING
        found = self.sources(path)
        return (found if found is not None else opaque(INPUT_BYTES)), NOTHING

    def function(self, node: Tree) -> tuple[Size, Bound]:
        name = str(node.children[0])
        args = arguments(node.children[1] if len(node.children) > 1 else None)
        if name == "has":
            return scalar(), NOTHING
        return self.call(name, None, args)

    def method(self, node: Tree) -> tuple[Size, Bound]:
        target, name = node.children[0], str(node.children[1])
        args = arguments(node.children[2] if len(node.children) > 2 else None)
        variable = bare_name(args[0]) if len(args) == 2 else None
        if name in _COMPREHENSIONS and variable is not None:
            return self.comprehension(name, target, variable, args[1])
        return self.call(name, target, args)

    def call(self, name: str, target: Any, args: list[Tree]) -> tuple[Size, Bound]:
        operands = [self.node(t) for t in ([target] if target is not None else []) + args]
        alloc = NOTHING
        for _, operand_alloc in operands:
            alloc = alloc + operand_alloc
        if name in _SCALAR_FUNCTIONS:
            extra = NOTHING
            if name == "matches" and len(operands) > 1:  # RE2 compiles the pattern
                extra = operands[1][0].total.times(16)
            return scalar(), alloc + extra
        if name == "dyn" and operands:
            return operands[0][0], alloc
        total = NOTHING
        for size, _ in operands:
            total = total + size.total
        if name == "string":  # a list or map as text: its values and their separators
            total = total.times(2) + Bound(SCALAR * 2)
        return Size(total, operands[0][0].count if operands else 0.0), alloc + total

    def comprehension(
        self, macro: str, target: Any, variable: str, body: Tree
    ) -> tuple[Size, Bound]:
        over, alloc = self.node(target)
        # Nested steps share the budget: run n times, this one takes BUDGET / n steps a time
        # on average, and what the sums below add is summed over all n runs by the caller.
        steps = min(over.count, max(1.0, ITERATION_BUDGET / self.evaluations))
        outer, evaluations = self.variables.get(variable), self.evaluations
        self.variables[variable], self.evaluations = over.item, evaluations * steps
        try:
            value, body_alloc = self.node(body)
            item = self.value(value.total)  # one step's value, the variable at its largest
        finally:
            self.evaluations = evaluations
            if outer is None:
                del self.variables[variable]
            else:
                self.variables[variable] = outer
        alloc = alloc + self.summed(body_alloc, variable, steps, over.total)
        if macro == "map":
            total = self.summed(value.total, variable, steps, over.total)
            total = total + Bound(ELEMENT * steps)
            return Size(total, steps, item), alloc + total
        if macro == "filter":
            total = over.total + Bound(ELEMENT * steps)
            return Size(total, steps, over.item), alloc + total
        return scalar(), alloc

    def summed(self, bound: Bound, variable: str, steps: float, over: Bound) -> Bound:
        """`bound` (in terms of `variable`) over every step: what depends on the variable adds
        up to at most the whole of what it ranges over; the rest, once a step."""
        rest, per_byte = bound.without(variable)
        return rest.times(steps) + over.times(per_byte)


_LEAVES = frozenset({"literal", "ident", "dot_ident", "list_lit", "map_lit", "paren_expr"})
_COMPREHENSIONS = frozenset({"all", "exists", "exists_one", "map", "filter"})
_SCALAR_FUNCTIONS = frozenset(
    {
        "size",
        "contains",
        "startsWith",
        "endsWith",
        "matches",
        "int",
        "uint",
        "double",
        "bool",
        "timestamp",
        "duration",
        "type",
        *(f"get{unit}" for unit in ("Date", "DayOfMonth", "DayOfWeek", "DayOfYear")),
        *(f"get{unit}" for unit in ("FullYear", "Hours", "Milliseconds", "Minutes")),
        *(f"get{unit}" for unit in ("Month", "Seconds")),
    }
)


def _items(trees: list[Tree]) -> Iterable[Tree]:
    """The element expressions of a list or map literal (under `exprlist`/`mapinits`)."""
    for tree in trees:
        if tree.data in ("exprlist", "mapinits", "fieldinits"):
            yield from (c for c in tree.children if isinstance(c, lark.Tree))
        else:
            yield tree
