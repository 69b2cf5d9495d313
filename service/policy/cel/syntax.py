"""CEL text -> `Expression`: the one parser every check, and both runtimes, start from.

The grammar is cel-python's (cel.lark, vendored), parsed by lark with cel-python's options, so
the tree is the one cel-python's evaluator walks; the C++ runtime compiles the text itself.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from importlib import resources
from typing import TypeVar

import lark

from service.policy.cel.memo import per_load
from service.policy.cel.references import (
    Found,
    Iteration,
    Reference,
    Tree,
    iterations,
    references,
)

T = TypeVar("T")

__all__ = [
    "MAX_SYNTAX_DEPTH",
    "OPERATORS",
    "CelSyntaxError",
    "Expression",
    "parse",
]

# The grammar's rule for each operator, and the operator as written.
OPERATORS = {
    "conditionalor": "||",
    "conditionaland": "&&",
    "relation_lt": "<",
    "relation_le": "<=",
    "relation_gt": ">",
    "relation_ge": ">=",
    "relation_eq": "==",
    "relation_ne": "!=",
    "relation_in": "in",
    "addition_add": "+",
    "addition_sub": "-",
    "multiplication_mul": "*",
    "multiplication_div": "/",
    "multiplication_mod": "%",
    "unary_not": "!",
    "unary_neg": "-",
}

# The parse tree's height, past which the walks over it (static checks, both engines'
# conversions, cel-python's evaluator: ~460 from a deep stack) could exhaust Python's stack.
# Google's CEL refuses more than 32 levels of nesting anyway (about 350 here); chains of `&&`
# or `||`, which it balances, reach this at about 390 operands (docs/policy-language.md).
MAX_SYNTAX_DEPTH = 400


class CelSyntaxError(Exception):
    """An expression does not compile; line and column are 1-based within the expression."""

    def __init__(self, message: str, line: int = 1, column: int = 1) -> None:
        super().__init__(message)
        self.message, self.line, self.column = message, line, column


class Expression:
    """One expression as the front end sees it, whatever engine runs it: its text, its parse
    tree, what it refers to, and the `variables.<name>` it reads directly.

    The tree serves the checks at load; a compiled program needs only the text (Google's CEL)
    or holds its own reference (cel-python). `release()` lets the tree go once a load is
    done (trees were most of a compiled set's memory); asked for again, it is parsed again,
    the same. A load shares one per text between its policies (memo.py)."""

    __slots__ = ("_found", "_iterations", "_tree", "text", "variables")

    def __init__(self, text: str, tree: Tree) -> None:
        self.text = text
        self._tree: Tree | None = tree
        self._found: list[Found] | None = None
        self._iterations: list[Iteration] | None = None
        self.variables = frozenset(
            found.path[1]
            for found in self.references
            if isinstance(found, Reference) and found.path[0] == "variables" and len(found.path) > 1
        )

    @property
    def tree(self) -> Tree:
        return self._kept("_tree", lambda: _tree(self.text))

    @property
    def references(self) -> list[Found]:
        """What it refers to (references.py), read off the tree once."""
        return self._kept("_found", lambda: references(self.tree))

    @property
    def iterations(self) -> list[Iteration]:
        """Its `map`s and `filter`s, with what each ranges over (references.py)."""
        return self._kept("_iterations", lambda: iterations(self.tree))

    def _kept(self, slot: str, compute: Callable[[], T]) -> T:
        """The value in `slot`, computed and kept if there is none. Through a local: another
        load may release() the expression meanwhile."""
        value: T | None = getattr(self, slot)
        if value is None:
            value = compute()
            setattr(self, slot, value)
        return value

    def release(self) -> None:
        self._tree = self._found = self._iterations = None

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"


@per_load
def parse(text: str) -> Expression:
    """Text -> `Expression`, one per text in a load (memo.py); raises `CelSyntaxError` with a
    position."""
    return Expression(text, _tree(text))


@per_load
def _tree(text: str) -> Tree:
    """The parse tree of `text`, checked for height (nothing changes a tree)."""
    try:
        tree = _parser().parse(text)
    except (lark.UnexpectedToken, lark.UnexpectedCharacters) as exc:
        raise CelSyntaxError(_message(exc), exc.line or 1, exc.column or 1) from None
    except lark.LarkError:
        raise CelSyntaxError("syntax error") from None
    except RecursionError:
        raise CelSyntaxError("expression nests too deeply") from None
    if _height(tree) > MAX_SYNTAX_DEPTH:  # before anything walks the tree recursively
        raise CelSyntaxError(
            f"expression nests too deeply (more than {MAX_SYNTAX_DEPTH} levels of syntax): "
            "split it into variables"
        )
    for node in tree.iter_subtrees():  # rule names as plain strings: lark's tokens compare
        node.data = str(node.data)  # with `==` in Python, and the walks compare them a lot
    return tree


@functools.cache
def _parser() -> lark.Lark:
    grammar = resources.files(__package__).joinpath("cel.lark").read_text(encoding="utf-8")
    return lark.Lark(  # cel-python's options (celpy/celparser.py), so the trees are the same
        grammar,
        parser="lalr",
        start="expr",
        g_regex_flags=re.M,
        lexer_callbacks={"IDENT": _literal_words},
        propagate_positions=True,
        maybe_placeholders=False,
        priority="invert",
    )


def _literal_words(token: lark.Token) -> lark.Token:
    """`true` and `false` lex as names; they are literals (as cel-python resolves them)."""
    if token.value in ("true", "false"):
        return lark.Token("BOOL_LIT", token.value)
    return token


def _height(tree: Tree) -> int:
    tallest, pending = 0, [(tree, 1)]
    while pending:
        node, height = pending.pop()
        tallest = max(tallest, height)
        pending.extend((c, height + 1) for c in node.children if isinstance(c, lark.Tree))
    return tallest


def _message(cause: lark.UnexpectedInput) -> str:
    if isinstance(cause, lark.UnexpectedToken):
        if cause.token.type == "$END":
            return "syntax error: unexpected end of expression"
        return f"syntax error: unexpected `{cause.token}`"
    if isinstance(cause, lark.UnexpectedCharacters):
        return f"syntax error: unexpected character `{cause.char}`"
    return "syntax error"
