"""What a CEL expression refers to, read from its parse tree without evaluating it.

The compiler uses this to check names, fields and functions against the request schema before
anything is deployed, with messages that name the schema (`did you mean …`); types are checked
afterwards (checker.py). Nothing here recurses deeper than the parse tree's height, which
`parse` bounds.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import lark

from service.policy.cel.functions import COMPREHENSIONS

__all__ = [
    "Call",
    "Found",
    "Iteration",
    "Misuse",
    "Reference",
    "Selection",
    "Tree",
    "arguments",
    "bare_name",
    "iterations",
    "literals",
    "references",
    "scalars",
    "selection",
]


@dataclass(frozen=True, slots=True)
class Reference:
    """A dotted name such as `request.relationship.met_in_person`; a position per segment."""

    path: tuple[str, ...]
    positions: tuple[tuple[int, int], ...]  # 1-based (line, column) inside the expression


@dataclass(frozen=True, slots=True)
class Call:
    name: str
    method: bool
    position: tuple[int, int]


@dataclass(frozen=True, slots=True)
class Misuse:
    message: str
    position: tuple[int, int]


Found = Reference | Call | Misuse
Tree = lark.Tree[lark.Token]
Node = Tree | lark.Token


def references(tree: Tree) -> list[Found]:
    return list(_visit(tree, frozenset()))


def _visit(node: Node, scope: frozenset[str]) -> Iterator[Found]:
    if isinstance(node, lark.Token):
        return
    kind = node.data
    if kind in ("member_dot", "ident", "dot_ident"):
        yield from _dotted(node, scope)
    elif kind == "member_dot_arg":
        yield from _method(node, scope)
    elif kind in ("ident_arg", "dot_ident_arg"):
        yield from _function(node, scope)
    elif kind == "member_object":
        yield Misuse("message construction is not supported", _at(node))
    elif kind == "literal" and _holds_nul(node.children[0]):
        yield Misuse("a literal holds U+0000, at which Google's CEL cuts strings", _at(node))
    else:
        for child in node.children:
            if child is not None:
                yield from _visit(child, scope)


@dataclass(frozen=True, slots=True)
class Selection:
    """A chain of field selections `a.b.c`: its names in order, and where it starts: at a
    name (`start` None; `rooted` for `.a.b`, the root scope's name), or at another node (a
    call, index or literal, on which `names` are selected)."""

    names: tuple[lark.Token, ...]
    start: Tree | None
    rooted: bool = False


def selection(node: Tree) -> Selection:
    names: list[lark.Token] = []
    current: Node = node
    while isinstance(current, lark.Tree):
        if current.data == "member_dot":
            names.append(_token(current.children[1]))
            current = current.children[0]
        elif current.data in ("member", "primary") and len(current.children) == 1:
            current = current.children[0]
        elif current.data in ("ident", "dot_ident"):
            names.append(_token(current.children[0]))
            return Selection(tuple(reversed(names)), None, current.data == "dot_ident")
        else:
            return Selection(tuple(reversed(names)), current)
    raise TypeError(f"not a selection: {node!r}")  # the grammar ends every chain in a tree


def _dotted(node: Tree, scope: frozenset[str]) -> Iterator[Found]:
    """A chain of field selections; checked only when it starts at a name."""
    found = selection(node)
    if found.start is not None:  # check inside it, but not the fields selected on it
        yield from _visit(found.start, scope)
        return
    names = found.names
    if found.rooted or names[0].value not in scope:
        yield Reference(
            tuple(token.value for token in names),
            tuple((token.line or 1, token.column or 1) for token in names),
        )


def _method(node: Tree, scope: frozenset[str]) -> Iterator[Found]:
    target, name = node.children[0], _token(node.children[1])
    args = arguments(node.children[2] if len(node.children) > 2 else None)
    yield from _visit(target, scope)
    if name.value in COMPREHENSIONS:
        variable = bare_name(args[0]) if args else None
        if variable is None or len(args) != 2:
            yield Misuse(f"`{name.value}` takes a variable name and an expression", _at(node))
            return
        yield from _visit(args[1], scope | {variable})
        return
    yield Call(name.value, True, (name.line or 1, name.column or 1))
    for arg in args:
        yield from _visit(arg, scope)


def _function(node: Tree, scope: frozenset[str]) -> Iterator[Found]:
    name = _token(node.children[0])
    args = arguments(node.children[1] if len(node.children) > 1 else None)
    if name.value == "has":
        if len(args) != 1 or not _is_selection(args[0]):
            yield Misuse("`has` takes one field selection, e.g. `has(request.message)`", _at(node))
        elif _is_variable(args[0], scope):
            yield Misuse(
                "`has()` on a variable: every variable exists; test what it reads instead",
                _at(node),
            )
    else:
        yield Call(name.value, False, (name.line or 1, name.column or 1))
    for arg in args:
        yield from _visit(arg, scope)


@dataclass(frozen=True, slots=True)
class Iteration:
    """A `map` or `filter`: its result's order is the order of what it ranges over."""

    macro: str
    over: tuple[str, ...] | str  # a dotted path, or `list`/`map` for a literal, `?` otherwise
    position: tuple[int, int]


def iterations(tree: Tree) -> list[Iteration]:
    """Every `map` and `filter` in the expression, with what each ranges over."""
    found = []
    pending: list[Node] = [tree]
    while pending:
        node = pending.pop()
        if not isinstance(node, lark.Tree):
            continue
        pending.extend(reversed(node.children))
        if node.data != "member_dot_arg" or len(node.children) < 2:
            continue
        name = node.children[1]
        if isinstance(name, lark.Token) and name.value in ("map", "filter"):
            found.append(Iteration(name.value, _range(node.children[0]), _at_token(name)))
    return found


def _range(node: Node) -> tuple[str, ...] | str:
    inner = node
    while isinstance(inner, lark.Tree) and len(inner.children) == 1 and inner.data[-4:] != "_lit":
        inner = inner.children[0]
    if isinstance(inner, lark.Token) and inner.type == "IDENT":
        return (str(inner.value),)
    if isinstance(inner, lark.Tree):
        if inner.data in ("list_lit", "map_lit"):
            return inner.data.removesuffix("_lit")
        if inner.data == "member_dot":
            found = next(_dotted(inner, frozenset()), None)
            if isinstance(found, Reference):
                return found.path
    return "?"


def _at_token(token: lark.Token) -> tuple[int, int]:
    return (token.line or 1, token.column or 1)


def arguments(exprlist: Node | None) -> list[Tree]:
    """The argument expressions under an `exprlist` (none for a missing one)."""
    if not isinstance(exprlist, lark.Tree):
        return []
    return [c for c in exprlist.children if isinstance(c, lark.Tree)]


def _token(node: Node) -> lark.Token:
    if not isinstance(node, lark.Token):  # the grammar puts a token here
        raise TypeError(f"expected a token, got {node!r}")
    return node


def _unwrap(node: Node) -> Node:
    """Descend through single-child wrappers (expr -> conditionalor -> ... -> member)."""
    while isinstance(node, lark.Tree) and len(node.children) == 1:
        node = node.children[0]
    return node


def bare_name(node: Tree) -> str | None:
    """The name an expression is, when it is only a name (a comprehension's variable)."""
    inner = _unwrap(node)
    if isinstance(inner, lark.Token) and inner.type == "IDENT":
        return str(inner.value)
    return None


def _is_selection(node: Tree) -> bool:
    inner = _unwrap(node)
    return isinstance(inner, lark.Tree) and inner.data == "member_dot"


def _is_variable(node: Tree, scope: frozenset[str]) -> bool:
    """`variables.<name>`, where `variables` is not a comprehension's own name."""
    found = selection(_unwrap(node))  # type: ignore[arg-type]
    named = found.start is None and len(found.names) == 2
    unshadowed = found.rooted or "variables" not in scope
    return named and found.names[0].value == "variables" and unshadowed


def _holds_nul(token: Node | None) -> bool:
    """A string or bytes literal that means U+0000 (raw literals keep escapes as text)."""
    if not isinstance(token, lark.Token) or token.type not in ("STRING_LIT", "BYTES_LIT"):
        return False
    raw = token.value.lstrip("bB")[:1] in "rR"
    return "\x00" in token.value or (not raw and _NUL_ESCAPE.search(token.value) is not None)


# `\000`, `\x00`, `\u0000` or `\U00000000`, after an even number of backslashes.
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\(?:000|[xX]00|u0000|U00000000)")


def _at(node: Tree) -> tuple[int, int]:
    meta = node.meta
    return (getattr(meta, "line", 1), getattr(meta, "column", 1))


def literals(tree: Tree) -> Iterator[str | int]:
    """The string and integer literals written in an expression, in order (a quoted string
    without its quotes; raw and triple-quoted strings are left out)."""
    for token in tree.scan_values(lambda v: isinstance(v, lark.Token)):
        if token.type == "STRING_LIT" and token.value[:1] in "'\"" and len(token.value) >= 2:
            yield token.value[1:-1]
        elif token.type == "INT_LIT":
            try:
                yield int(token.value, 0)
            except ValueError:
                continue


def scalars(value: object) -> Iterator[str | int]:
    """The strings and integers in data (params), in order, at any depth."""
    if isinstance(value, Mapping):
        for item in value.values():
            yield from scalars(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from scalars(item)
    elif isinstance(value, str | int) and not isinstance(value, bool):
        yield value
