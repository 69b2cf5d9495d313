"""What a CEL expression refers to, read from its parse tree without evaluating it.

The compiler uses this to check names, fields and functions against the request schema before
anything is deployed, with messages that name the schema (`did you mean …`). Types are checked
afterwards by the C++ CEL checker (service/policy/engines/typecheck.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import lark
import msgspec

from service.policy.engines.base import MACROS, RequestFields, type_name
from service.policy.errors import did_you_mean
from service.policy.request import ConnectionRequest

__all__ = [
    "REQUEST_SHAPE",
    "Call",
    "Misuse",
    "Reference",
    "Selection",
    "arguments",
    "bare_name",
    "check_path",
    "iterations",
    "references",
    "request_fields",
    "selection",
    "shape_of_value",
]

_COMPREHENSIONS = MACROS - {"has"}


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
    if name.value in _COMPREHENSIONS:
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


# --- checking dotted paths against the request schema and params ---------------------------

Shape = Mapping[str, "Shape"] | str  # a mapping of fields, a leaf type name, or ANY
ANY = "any"


def _shape_of_type(t: msgspec.inspect.Type) -> Shape:
    if isinstance(t, msgspec.inspect.Metadata):
        return _shape_of_type(t.type)
    if isinstance(t, msgspec.inspect.UnionType):
        kinds = [x for x in t.types if not isinstance(x, msgspec.inspect.NoneType)]
        return _shape_of_type(kinds[0]) if len(kinds) == 1 else ANY
    if isinstance(t, msgspec.inspect.StructType):
        return {f.encode_name: _shape_of_type(f.type) for f in t.fields}
    return {
        msgspec.inspect.StrType: "string",
        msgspec.inspect.LiteralType: "string",
        msgspec.inspect.IntType: "int",
        msgspec.inspect.FloatType: "double",
        msgspec.inspect.BoolType: "bool",
        msgspec.inspect.DateTimeType: "timestamp",
        msgspec.inspect.ListType: "list",
    }.get(type(t), ANY)


def shape_of_value(value: Any) -> Shape:
    if isinstance(value, dict):
        return {str(k): shape_of_value(v) for k, v in value.items()}
    return type_name(value)


REQUEST_SHAPE = _shape_of_type(msgspec.inspect.type_info(ConnectionRequest))


def check_path(path: tuple[str, ...], shape: Shape) -> tuple[int, str] | None:
    """(index of the bad segment, message) or None when the path exists."""
    for index, segment in enumerate(path[1:], start=1):
        if shape == ANY:
            return None
        dotted = ".".join(path[:index])
        if isinstance(shape, str):
            return index, f"`{dotted}` is a {shape} and has no field `{segment}`"
        if segment not in shape:
            return index, f"unknown field `{dotted}.{segment}`{did_you_mean(segment, shape)}"
        shape = shape[segment]
    return None


def request_fields(trees: Iterable[Tree]) -> RequestFields | None:
    """What these expressions read of the request: per top-level field, the sub-fields read
    (sorted), or None for all of it; None overall when `request` is used whole (or in a way
    this does not follow, such as an index). An engine may leave every other field out of the
    data it builds for an evaluation: nothing can read it."""
    top = REQUEST_SHAPE if isinstance(REQUEST_SHAPE, Mapping) else {}
    read: dict[str, set[str] | None] = {}
    for tree in trees:
        for found in references(tree):
            if not isinstance(found, Reference) or found.path[0] != "request":
                continue
            path = found.path
            if len(path) == 1 or path[1] not in top:
                return None
            shape, names = top[path[1]], read.setdefault(path[1], set())
            if len(path) > 2 and isinstance(shape, Mapping) and path[2] in shape:
                if names is not None:
                    names.add(path[2])
            else:  # a field read as a whole: `has(request.message)`, `request.attributes.x`
                read[path[1]] = None
    return {key: None if names is None else tuple(sorted(names)) for key, names in read.items()}
