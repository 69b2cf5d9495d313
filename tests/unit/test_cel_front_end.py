"""The CEL front end both runtimes share: its grammar, its function table, its text.

The front end parses with a vendored copy of cel-python's grammar and names the functions a
policy may call; these tests hold both to the runtimes that do the work, and check that
serving with Google's CEL never imports cel-python.
"""

from __future__ import annotations

import subprocess
import sys
from importlib import resources
from pathlib import Path

import celpy
import pytest
from celpy.evaluation import base_functions

from service.policy import load_policies
from service.policy.cel import FUNCTIONS, CelSyntaxError, parse
from service.policy.cel.checker import TypeCheckError, type_check
from service.policy.cel.text import render
from service.policy.engines import get_engine
from service.policy.engines.celpython.functions import EXTENSIONS
from tests.conftest import POLICIES

HOSTILE = POLICIES.parent / "tests" / "cases" / "hostile"


class TestGrammar:
    """The vendored grammar is cel-python's, so its evaluator walks the trees we parse."""

    def test_the_vendored_grammar_is_the_installed_cel_pythons(self) -> None:
        ours = resources.files("service.policy.cel").joinpath("cel.lark").read_text()
        theirs = (Path(celpy.__file__).parent / "cel.lark").read_text()
        assert ours.split("\n", 4)[4] == theirs

    def test_the_trees_are_cel_pythons(self) -> None:
        text = 'has(request.message) && [1, 2].map(x, x * 2)[0] == 2 ? "a" : b"b"'
        assert parse(text).tree == celpy.Environment().compile(text)


class TestFunctions:
    """Every function a policy may call is one both runtimes implement."""

    def test_cel_python_knows_every_name(self) -> None:
        known = {name for name in base_functions if name[0].isalpha()} | set(EXTENSIONS)
        assert known >= FUNCTIONS

    @pytest.mark.parametrize("name", sorted(FUNCTIONS))
    def test_googles_cel_knows_every_name(self, name: str) -> None:
        """As a function or a method of a string or a timestamp, with one argument or none:
        wrong types are another matter; an unknown name is `undeclared`."""
        forms = [f"{name}(1)", f"'a'.{name}()", f"'a'.{name}('b')", f"now.{name}()"]
        messages = []
        for form in forms:
            try:
                type_check(form)
                return
            except TypeCheckError as exc:
                messages.append(exc.message)
        assert not all("undeclared" in m for m in messages), messages


def corpus() -> list[str]:
    """Every expression of the bundled and hostile policies, and tricky syntax."""
    texts = [
        "- -1",
        "-(1)",
        "!!true",
        "1 - (2 - 3)",
        "(1 - 2) - 3",
        "a ? b : c ? d : e",
        "(a ? b : c) ? d : e",
        "(a || b) && c",
        "a || b && c",
        "x.y[z].w(1, 2)",
        '{"a": 1, "b": [1u, 2.5e3, -0x1F]}.a',
        ".request.message",
        "'''multi\nline''' + r\"\\d\" + b'\\x01'.string()",
        "-9223372036854775808",
        "[1].exists(variables, variables.a)",
        "variables.a.b + variables.c",
        "1 in [1] && 'a' in {'a': 1}",
        "size(x) % 2 / 3 * 4",
        "a // a comment\n + b",
    ]
    for directory in (POLICIES, HOSTILE):
        policy_set = load_policies(directory, engine="cel-python")
        for policy in policy_set.policies.values():
            programs = [*policy.variables.values(), *(rule.when for rule in policy.rules)]
            outcomes = [*(rule.outcome for rule in policy.rules), policy.default]
            programs += [p for outcome in outcomes for p in outcome.placeholder_programs()]
            texts += [p.expression.text for p in programs]
    return sorted(set(texts))


CORPUS = corpus()


class TestText:
    """A tree rendered as text parses back to the same tree, and Google's CEL reads it."""

    @pytest.mark.parametrize("text", CORPUS)
    def test_rendering_keeps_the_tree(self, text: str) -> None:
        tree = parse(text).tree
        assert parse(render(tree, {})).tree == tree

    def test_rendering_compiles_wherever_the_text_does(self) -> None:
        engine = get_engine("cel-expr-python")
        for text in CORPUS:
            try:
                engine.compile(parse(text))
            except CelSyntaxError:
                continue
            engine.compile(parse(render(parse(text).tree, {})))

    def test_variables_are_read_from_their_names(self) -> None:
        tree = parse("variables.a.b + variables.c + .variables.d + x.variables.a").tree
        rendered = render(tree, {"a": "A", "c": "C", "d": "D"})
        assert rendered == "A.b + C + D + x.variables.a"

    def test_a_comprehensions_own_variables_is_left_alone(self) -> None:
        tree = parse("[1].exists(variables, variables.a) || variables.a").tree
        assert render(tree, {"a": "A"}) == "[1].exists(variables, variables.a) || A"


def test_serving_with_googles_cel_never_imports_cel_python(tmp_path: Path) -> None:
    """The app, its policies loaded and a decision made, with only the C++ engine."""
    script = f"""
import sys
from litestar.testing import TestClient
from service.api import create_app
from service.settings import Settings

app = create_app(Settings(policies={str(POLICIES)!r}, cel_engine="cel-expr-python", watch=False))
with TestClient(app) as client:
    body = {{"policy": "default", "request": {{
        "requester": {{"name": "Ada", "has_photo": True}},
        "recipient": {{"name": "Bo", "has_photo": True}}}}}}
    response = client.post("/evaluate", json=body)
    assert response.status_code == 200, response.text
print(sorted(m for m in sys.modules if m == "celpy" or m.startswith("celpy.")))
"""
    env = {"PATH": "/usr/bin:/bin", "HANDSHAKE_AUTHENTICATION": "none", "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
