"""The documented bounds on what is read: JSON nesting, YAML shape and size, CEL syntax depth.
Each is refused with its position before anything recursive runs, in one line on the CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from service.cli import main
from service.policy import PolicyError, load_policies
from service.policy.cel import MAX_SYNTAX_DEPTH, CelSyntaxError, parse
from service.policy.engines import get_engine
from service.policy.request import (
    JSON_MAX_DEPTH,
    InputError,
    check_depth,
    decode_json,
    decode_request,
)
from service.policy.source import YAML_MAX_BYTES, parse_source
from tests.conftest import MINIMAL_POLICY, POLICIES

REQUEST = (POLICIES.parent / "examples" / "requests" / "stranger.json").read_bytes()


class TestJsonDepth:
    """JSON past 64 levels is refused with the path of the first container too deep."""

    def test_the_limit_itself_passes(self) -> None:
        check_depth(b"[" * JSON_MAX_DEPTH + b"]" * JSON_MAX_DEPTH)

    @pytest.mark.parametrize(
        ("document", "path"),
        [
            (b"[" * 65 + b"]" * 65, "$" + "[0]" * 64),
            (b'{"a": [1, {"b\\"c": ' + b"[" * 70 + b"]" * 70 + b"}]}", '$.a[1].b\\"c' + "[0]" * 61),
            (b"[" * 100_000, "$" + "[0]" * 64),  # malformed and deep: deep is said first
        ],
    )
    def test_past_the_limit_names_the_path(self, document: bytes, path: str) -> None:
        with pytest.raises(InputError) as refused:
            check_depth(document)
        assert refused.value.path == path
        assert refused.value.message == "nested deeper than 64 levels"

    def test_brackets_in_strings_do_not_count(self) -> None:
        check_depth(json.dumps({"s": "[" * 1000, "t": ["{" * 1000]}).encode())

    def test_malformed_but_shallow_is_left_to_the_decoder(self) -> None:
        with pytest.raises(InputError, match="invalid JSON"):
            decode_json(b"[}" * 70, Any)  # no innermost pair: looks deep to the passes

    def test_every_request_decoder_checks_it(self) -> None:
        deep = REQUEST.replace(
            b'"requester"',
            b'"attributes": {"x": ' + b"[" * 3000 + b"]" * 3000 + b'}, "requester"',
            1,
        )
        with pytest.raises(InputError, match="nested deeper"):
            decode_request(deep)


def yaml_problem(text: str) -> str:
    with pytest.raises(PolicyError) as refused:
        parse_source(text.encode(), "p.yaml")
    (problem,) = refused.value.problems
    return str(problem)


class TestYamlShape:
    """YAML files are read as events first: depth, expanded size and alias cycles are bounded."""

    def test_32_levels_pass_and_33_do_not(self) -> None:
        parse_source(("a: " + "[" * 31 + "]" * 31).encode(), "p.yaml")
        assert (
            yaml_problem("a: " + "[" * 32 + "]" * 32) == "p.yaml:1:35: nested deeper than 32 levels"
        )

    def test_aliases_count_as_what_they_expand_to(self) -> None:
        laughs = "l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
            f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]\n" for i in range(1, 6)
        )
        assert "more than 100,000 values" in yaml_problem(laughs)
        deep = "a: &a " + "[" * 20 + "]" * 20 + "\nb: " + "[" * 20 + "*a" + "]" * 20 + "\n"
        assert "nested deeper than 32 levels" in yaml_problem(deep)

    def test_an_alias_inside_its_own_node_is_refused(self) -> None:
        assert yaml_problem("a: &a [1, *a]\n") == "p.yaml:1:11: an alias inside the node it names"

    def test_suites_share_values_with_aliases(self) -> None:
        source = parse_source((POLICIES / "examples" / "near-limit_test.yaml").read_bytes(), "s")
        assert source.data["cases"]

    def test_a_file_past_the_size_limit_is_refused(self) -> None:
        text = MINIMAL_POLICY + "#" * YAML_MAX_BYTES
        assert (
            yaml_problem(text)
            == "p.yaml:1:1: larger than 1024 KiB: split it, or move data out of it"
        )


class TestCelSyntaxDepth:
    """An expression whose parse tree is too tall is a syntax error, not a RecursionError."""

    @pytest.mark.parametrize(
        "text",
        ["(" * 300 + "true" + ")" * 300, "+".join(["1"] * 2000) + " > 0", "[" * 200 + "]" * 200],
    )
    def test_too_deep_is_a_syntax_error(self, text: str) -> None:
        with pytest.raises(CelSyntaxError, match="nests too deeply"):
            parse(text)

    @pytest.mark.parametrize("engine", ["cel-python", "cel-expr-python"])
    def test_the_longest_allowed_chain_evaluates_under_both_engines(self, engine: str) -> None:
        operands = 385  # `&&` chains are the tallest trees Google's CEL accepts
        expression = parse(" && ".join(["request.requester.has_photo"] * operands))
        runtime = get_engine(engine)
        scope = runtime.scope(decode_request(REQUEST), datetime.now(UTC), runtime.prepare({}), {})
        assert scope.run(runtime.compile(expression)) is True
        with pytest.raises(CelSyntaxError):
            parse(" && ".join(["true"] * MAX_SYNTAX_DEPTH))


def test_the_cli_says_each_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    header = "apiVersion: handshake/v1\nkind: ConnectionPolicy\n"
    (tmp_path / "deep.yaml").write_text(
        header
        + "rules:\n  - id: r\n    when: '"
        + "(" * 300
        + "true"
        + ")" * 300
        + "'\n"
        + "    decision: accept\n    rationale: x\ndefault: {decision: ignore, rationale: x}\n"
    )
    (tmp_path / "params.yaml").write_text(
        header
        + "params:\n  p: "
        + "[" * 2000
        + "]" * 2000
        + "\ndefault: {decision: ignore, rationale: x}\n"
    )
    assert main(["check", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    lines = sorted(line for line in out.splitlines() if ": " in line and "error(s)" not in line)
    assert lines[0].startswith(
        f"{tmp_path}/deep.yaml:5:12: $.rules[0].when: expression nests too deeply"
    )
    assert lines[1] == f"{tmp_path}/params.yaml:4:36: nested deeper than 32 levels"
    deep_request = tmp_path / "deep.json"
    deep_request.write_bytes(b'{"x": ' + b"[" * 3000 + b"]" * 3000 + b"}")
    assert main(["eval", "default", "--policies", str(POLICIES), "--input", str(deep_request)]) == 2
    out, err = capsys.readouterr()
    (line,) = err.splitlines()
    assert line.startswith(f"handshake: error: {deep_request}: $.x[0]")
    assert line.endswith("nested deeper than 64 levels")


class TestPolicySize:
    """The CEL one policy may hold is bounded, so that loading it is (about 2 s at most)."""

    def test_past_1000_expressions_it_does_not_load(self, tmp_path: Path) -> None:
        variables = "".join(f"  v{i}: 'true'\n" for i in range(1_001))
        (tmp_path / "p.yaml").write_text(
            "apiVersion: handshake/v1\nkind: ConnectionPolicy\nvariables:\n"
            + variables
            + "default: {decision: ignore, rationale: x}\n"
        )
        with pytest.raises(PolicyError) as refused:
            load_policies(tmp_path)
        (problem,) = refused.value.problems
        assert str(problem) == (
            f"{tmp_path}/p.yaml:1:1: 1,001 CEL expressions in 4,005 bytes (conditions, variables"
            " and templates, its bases' included); a policy may have 1,000 in 65,536 bytes:"
            " split it into policies"
        )

    def test_past_64_kib_of_cel_it_does_not_load(self, tmp_path: Path) -> None:
        long = " || ".join(["request.message == 'x'"] * 100)  # 2.6 KB, 26 of them
        rules = "".join(
            f'  - {{id: r{i}, when: "{long}", decision: accept, rationale: x}}\n' for i in range(26)
        )
        (tmp_path / "p.yaml").write_text(
            "apiVersion: handshake/v1\nkind: ConnectionPolicy\nrules:\n"
            + rules
            + "default: {decision: ignore, rationale: x}\n"
        )
        with pytest.raises(PolicyError, match="26 CEL expressions in 67,523 bytes"):
            load_policies(tmp_path)
