"""A parse tree back to CEL text, with `variables.<name>` read from other names.

For runtimes that compile text (Google's CEL) when an expression is combined with others:
the rules program binds each variable once with `cel.bind` and reads it by the bound name.
The tree keeps every parenthesis as a node, so the text means what the original meant.
"""

from __future__ import annotations

from collections.abc import Mapping

import lark

from service.policy.cel.functions import COMPREHENSIONS
from service.policy.cel.references import Tree, arguments, bare_name, selection
from service.policy.cel.syntax import OPERATORS

__all__ = ["render"]


def render(tree: Tree, variables: Mapping[str, str]) -> str:
    """The expression as text, each `variables.<name>` in `variables` written as the name it
    maps to (one that is not a comprehension's own `variables`)."""
    return _Renderer(variables).node(tree, frozenset())


class _Renderer:
    def __init__(self, variables: Mapping[str, str]) -> None:
        self.variables = variables

    def node(self, node: Tree | lark.Token, scope: frozenset[str]) -> str:
        if isinstance(node, lark.Token):
            return str(node.value)
        kind, children = node.data, node.children
        if kind == "expr" and len(children) == 3:
            cond, yes, no = (self.node(c, scope) for c in children)
            return f"{cond} ? {yes} : {no}"
        if kind in ("conditionalor", "conditionaland") and len(children) == 2:
            return (
                f"{self.node(children[0], scope)} {OPERATORS[kind]} {self.node(children[1], scope)}"
            )
        if kind in ("relation", "addition", "multiplication") and len(children) == 2:
            operator, right = children
            assert isinstance(operator, lark.Tree)
            left = self.node(operator.children[0], scope)
            return f"{left} {OPERATORS[operator.data]} {self.node(right, scope)}"
        if kind == "unary" and len(children) == 2:
            assert isinstance(children[0], lark.Tree)
            operand = self.node(children[1], scope)
            return f"{OPERATORS[children[0].data]} {operand}"
        if kind == "member_dot":
            bound = self.bound(node, scope)
            if bound is not None:
                return bound
            return f"{self.node(children[0], scope)}.{children[1]}"
        if kind == "member_dot_arg":
            return f"{self.node(children[0], scope)}.{children[1]}({self.call(node, scope)})"
        if kind in ("ident_arg", "dot_ident_arg"):
            dot = "." if kind == "dot_ident_arg" else ""
            return f"{dot}{children[0]}({self.arguments(children[1:], scope)})"
        if kind == "dot_ident":
            return f".{children[0]}"
        if kind == "member_index":
            return f"{self.node(children[0], scope)}[{self.node(children[1], scope)}]"
        if kind == "member_object":
            return f"{self.node(children[0], scope)}{{{self.arguments(children[1:], scope)}}}"
        if kind == "paren_expr":
            return f"({self.node(children[0], scope)})"
        if kind == "list_lit":
            return f"[{self.arguments(children, scope)}]"
        if kind == "map_lit":
            return f"{{{self.arguments(children, scope)}}}"
        if kind == "exprlist":
            return ", ".join(self.node(c, scope) for c in children)
        if kind in ("mapinits", "fieldinits"):
            items = [self.node(c, scope) for c in children]
            return ", ".join(f"{k}: {v}" for k, v in zip(items[::2], items[1::2], strict=True))
        if len(children) == 1:  # expr, member, primary, literal, ident: one child, as it is
            return self.node(children[0], scope)
        raise ValueError(f"cannot render `{kind}` with {len(children)} parts")

    def arguments(self, children: list[Tree | lark.Token], scope: frozenset[str]) -> str:
        return self.node(children[0], scope) if children else ""

    def call(self, node: Tree, scope: frozenset[str]) -> str:
        """A method's arguments; a comprehension's body sees its own variable."""
        name, args = (
            str(node.children[1]),
            arguments(node.children[2] if len(node.children) > 2 else None),
        )
        if name in COMPREHENSIONS and len(args) == 2:
            variable = bare_name(args[0])
            inner = scope | {variable} if variable else scope
            return f"{self.node(args[0], scope)}, {self.node(args[1], inner)}"
        return ", ".join(self.node(arg, scope) for arg in args)

    def bound(self, node: Tree, scope: frozenset[str]) -> str | None:
        """The bound name for `variables.<name>`, else None."""
        found = selection(node)
        if found.start is not None or len(found.names) != 2:
            return None
        root, name = (str(t.value) for t in found.names)
        if root != "variables" or (not found.rooted and root in scope):
            return None
        return self.variables.get(name)
