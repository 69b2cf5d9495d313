"""The `handshake` command: outputs, exit codes, and one-line errors (never a traceback)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from service.cli import main
from service.policy.loader import MIN_SHARE
from service.settings import Settings
from tests.conftest import MINIMAL_POLICY, POLICIES

REQUESTS = POLICIES.parent / "examples" / "requests"
NOW = "2026-11-22T09:00:00Z"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    (tmp_path / "team").mkdir()
    (tmp_path / "team" / "a.yaml").write_text(
        "apiVersion: handshake/v1\nkind: ConnectionPolicy\nrules:\n"
        "  - {id: r, when: request.relationship.met_in_persn, decision: accept, rationale: x}\n"
        "default: {decision: ignore, rationale: x}\n"
    )
    (tmp_path / "b.yaml").write_bytes(b"apiVersion: handshake/v1\nkind: \xff\n")
    (tmp_path / "c.yaml").write_text("rules: [\n")
    return tmp_path


def test_check_bundled_policies(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = run(capsys, "check", str(POLICIES))
    assert code == 0
    assert "10 policies, 2 webhook sources and 111 test cases" in out
    assert "source `inbox-tool` has none of its secrets set" in out
    for name in ("EXAMPLE_CRM", "INBOX_TOOL"):
        monkeypatch.setenv(f"{name}_WEBHOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    code, out, _ = run(capsys, "check", "--strict", str(POLICIES))
    assert code == 0
    assert out.splitlines()[-1].endswith("no errors, 0 warning(s)")


def test_check_lists_every_problem_one_per_line(
    capsys: pytest.CaptureFixture[str], broken: Path
) -> None:
    code, out, _ = run(capsys, "check", str(broken))
    assert code == 1
    assert out.splitlines() == [
        f"{broken}/b.yaml:2: invalid UTF-8 at byte 31",
        f"{broken}/c.yaml:2:1: invalid YAML: did not find expected node content",
        f"{broken}/team/a.yaml:4:40: $.rules[0].when: unknown field "
        "`request.relationship.met_in_persn`; did you mean `met_in_person`?",
        "3 error(s), 0 warning(s)",
    ]


def test_check_strict_fails_on_warnings(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "apiVersion: handshake/v1\nkind: ConnectionPolicy\n"
        "default: {decision: decline, rationale: x, reply: {de: Nein}}\n"
    )
    assert run(capsys, "check", str(tmp_path))[0] == 0
    code, out, _ = run(capsys, "check", "--strict", str(tmp_path))
    assert code == 1
    assert "warning: $.default.reply: no reply in the default locale `en`" in out


def test_check_missing_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(capsys, "check", str(tmp_path / "nope"))
    assert code == 1
    assert f"{tmp_path}/nope: no such policy directory" in out


def test_policies_directory_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HANDSHAKE_POLICIES", str(POLICIES))
    code, out, _ = run(capsys, "check")
    assert code == 0
    assert str(POLICIES) in out


def test_test_command_runs_every_suite(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "test", str(POLICIES))
    assert code == 0
    assert out.splitlines()[-1] == "222 passed, 0 failed (cel-expr-python, cel-python)"


def test_test_command_under_one_engine(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "test", str(POLICIES), "--engine", "cel-python")
    assert code == 0
    assert out.splitlines()[-1] == "111 passed, 0 failed (cel-python)"


def test_test_command_filter_and_verbose(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "test", str(POLICIES), "--filter", "near-limit", "-v")
    assert code == 0
    lines = out.splitlines()
    assert lines[-1] == "16 passed, 0 failed (cel-expr-python, cel-python)"
    assert all("examples/near-limit" in line for line in lines[:-1])
    assert sum(line.endswith("[cel-python]") for line in lines) == 8


def test_test_command_reports_expected_and_actual(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "p.yaml").write_text(
        "apiVersion: handshake/v1\nkind: ConnectionPolicy\n"
        "default: {decision: ignore, rationale: nothing}\n"
    )
    (tmp_path / "p_test.yaml").write_text(
        "policy: p\ncases:\n"
        "  - name: wrong\n"
        "    request:\n"
        "      requester: {name: A, has_photo: true}\n"
        "      recipient: {name: B, has_photo: true}\n"
        "    expect: {decision: accept, rule: r, rationale: {contains: something}}\n"
    )
    code, out, _ = run(capsys, "test", str(tmp_path), "--engine", "cel-expr-python")
    assert code == 1
    assert out.splitlines() == [
        f"FAIL {tmp_path}/p_test.yaml:3 p > wrong",
        "     decision: expected `accept`, got `ignore`",
        "     rule: expected `r`, got `default`",
        '     rationale: expected to contain "something", got "nothing"',
        "0 passed, 1 failed (cel-expr-python)",
    ]


def test_test_command_with_broken_policies(
    capsys: pytest.CaptureFixture[str], broken: Path
) -> None:
    code, _, err = run(capsys, "test", str(broken))
    assert code == 2
    assert (
        err.splitlines()[-1] == f"handshake: error: {broken}: 3 problem(s); nothing was evaluated"
    )


def test_eval_prints_the_decision(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "eval", "default", "--policies", str(POLICIES),
        "--input", str(REQUESTS / "old-colleague.json"), "--now", NOW, "--locale", "de",
    )  # fmt: skip
    assert code == 0
    decision = json.loads(out)
    assert decision["decision"] == "defer"
    assert decision["rule"] == "reconnect-first"
    assert decision["reply"] == {
        "locale": "de",
        "text": "Hallo Ada Byron, schön, nach so langer Zeit von Ihnen zu hören! "
        "Wollen wir vorher kurz telefonieren?",
    }
    assert decision["policy"]["name"] == "default"
    assert decision["policy"]["digest"].startswith("sha256:")
    assert decision["evaluated_at"] == NOW
    assert "trace" not in decision


@pytest.mark.parametrize("engine", ["cel-python", "cel-expr-python"])
def test_eval_under_either_engine_gives_the_same_decision(
    capsys: pytest.CaptureFixture[str], engine: str
) -> None:
    code, out, _ = run(
        capsys,
        "eval", "default", "--policies", str(POLICIES), "--engine", engine,
        "--input", str(REQUESTS / "old-colleague.json"), "--now", NOW,
    )  # fmt: skip
    assert code == 0
    decision = json.loads(out)
    assert (decision["decision"], decision["rule"]) == ("defer", "reconnect-first")
    assert decision["rationale"] == "Known well, but the last contact was 2021-06-30T12:00:00Z"


def test_an_unknown_engine_in_the_environment_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HANDSHAKE_CEL_ENGINE", "cel-go")
    code, _, err = run(
        capsys, "eval", "default", "--policies", str(POLICIES),
        "--input", str(REQUESTS / "old-colleague.json"),
    )  # fmt: skip
    assert code == 2
    assert one_line(err) == (
        "handshake: error: HANDSHAKE_CEL_ENGINE: unknown value `cel-go` "
        "(one of: cel-expr-python, cel-python)"
    )


@pytest.mark.parametrize("engine", ["cel-python", "cel-expr-python"])
def test_serve_flags_reach_the_server_settings(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, engine: str
) -> None:
    import service.server

    started: list[Settings] = []

    def serve(settings: Settings) -> int:
        started.append(settings)
        return 0

    monkeypatch.setattr(service.server, "serve", serve)
    monkeypatch.delenv("HANDSHAKE_CEL_ENGINE", raising=False)
    code, _, _ = run(
        capsys, "serve", "--engine", engine, "--policies", str(POLICIES),
        "--port", "9999", "--workers", "2",
    )  # fmt: skip
    assert code == 0
    [settings] = started
    assert (settings.cel_engine, settings.policies, settings.port, settings.workers) == (
        engine, str(POLICIES), 9999, 2,
    )  # fmt: skip


def test_eval_explain_shows_rules_and_variables(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(
        (REQUESTS / "stranger.json").read_bytes()
    )))  # fmt: skip
    code, out, _ = run(capsys, "eval", "default", "--policies", str(POLICIES), "--explain")
    assert code == 0
    trace = json.loads(out)["trace"]
    assert [step["rule"] for step in trace["rules"]][:2] == ["anonymous", "friends-and-family"]
    assert trace["rules"][-1] == {
        "rule": "ask-for-context",
        "source": "default.yaml:123",
        "matched": True,
    }
    assert trace["variables"]["has_note"] == {"value": False}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"requester": {"name": "A"', "<stdin>:1:27: invalid JSON: input data was truncated"),
        (b"\n\n  nope", "<stdin>:3:7: invalid JSON: invalid character"),
        (
            b'{"requester": {"name": "A", "has_photo": 1},'
            b' "recipient": {"name": "B", "has_photo": true}}',
            "<stdin>: $.requester.has_photo: expected `bool`, got `int`",
        ),
        (
            b'{"requester": {"name": "A", "has_photo": true}}',
            "<stdin>: object missing required field `recipient`",
        ),
        (b'{"requester": {"name": "\xff"', "<stdin>:1:25: invalid UTF-8"),
    ],
)
def test_eval_rejects_bad_input_in_one_line(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    content: bytes,
    expected: str,
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(content)))
    code, out, err = run(capsys, "eval", "default", "--policies", str(POLICIES))
    assert code == 2
    assert out == ""
    assert one_line(err).startswith(f"handshake: error: {expected}")


def test_eval_unknown_policy(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        capsys, "eval", "examples/near-limits", "--policies", str(POLICIES),
        "--input", str(REQUESTS / "friend.json"),
    )  # fmt: skip
    assert code == 2
    assert one_line(err) == (
        "handshake: error: unknown policy `examples/near-limits`; "
        "did you mean `examples/near-limit`?"
    )


def test_eval_with_a_missing_policy_directory(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(capsys, "eval", "default", "--policies", str(tmp_path / "nope"))
    assert code == 2
    assert one_line(err) == f"handshake: error: {tmp_path}/nope: no such policy directory"


def test_eval_bad_now_and_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    args = ["eval", "default", "--policies", str(POLICIES)]
    code, _, err = run(capsys, *args, "--input", str(REQUESTS / "friend.json"), "--now", "noon")
    assert (code, one_line(err)) == (
        2,
        "handshake: error: --now: `noon` is not an RFC 3339 timestamp with a time zone",
    )
    code, _, err = run(capsys, *args, "--input", str(tmp_path / "missing.json"))
    assert code == 2
    assert one_line(err) == f"handshake: error: {tmp_path}/missing.json: cannot read: " + (
        "No such file or directory"
    )


def test_schema_command_prints_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "schema", "policy")
    assert code == 0
    schema = json.loads(out)
    assert schema["$ref"] == "#/$defs/PolicyDocument"
    rule = schema["$defs"]["Rule"]
    assert set(rule["required"]) == {"id", "when", "decision", "rationale"}


def test_python_dash_m_service_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("- [")
    result = subprocess.run(
        [sys.executable, "-m", "service", "test", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"handshake: error: {tmp_path}/a.yaml:2:1: invalid YAML: did not find expected node content"
    ]


def test_init_scaffolds_a_policy_whose_suite_passes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = run(capsys, "init", str(tmp_path), "--name", "sales/emea")
    assert code == 0
    assert (tmp_path / "sales" / "emea.yaml").exists()
    assert run(capsys, "check", "--strict", str(tmp_path))[0] == 0
    code, out, _ = run(capsys, "test", str(tmp_path))
    assert (code, out.splitlines()[-1]) == (0, "8 passed, 0 failed (cel-expr-python, cel-python)")
    code, _, err = run(capsys, "init", str(tmp_path), "--name", "sales/emea")
    assert code == 2
    assert one_line(err).endswith("already exists; nothing was written")


def test_the_pre_commit_hooks_run_real_commands() -> None:
    hooks = yaml.safe_load((POLICIES.parent / ".pre-commit-hooks.yaml").read_text())
    assert {hook["id"]: hook["entry"] for hook in hooks} == {
        "handshake-check": "handshake check",
        "handshake-test": "handshake test",
    }
    for hook in hooks:
        command = hook["entry"].split()[1]
        assert main([command, str(POLICIES)]) == 0


def test_test_with_nothing_to_run_says_why(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "p.yaml").write_text(MINIMAL_POLICY)
    code, _, err = run(capsys, "test", str(tmp_path))
    assert code == 1
    assert (
        one_line(err)
        == f"handshake: error: no test cases in {tmp_path} (suites are `*_test.yaml` files)"
    )
    code, _, err = run(capsys, "test", "--filter", "nobody", str(POLICIES))
    assert code == 1
    assert "no test case matches `nobody`" in one_line(err)


def test_check_counts_in_words(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(MINIMAL_POLICY)
    code, out, _ = run(capsys, "check", str(tmp_path))
    assert code == 0
    assert one_line(out) == f"1 policy and 0 test cases in {tmp_path}: no errors, 0 warning(s)"


def test_eval_on_a_terminal_says_where_it_reads_from(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    class Terminal(io.TextIOWrapper):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(
        sys, "stdin", Terminal(io.BytesIO((REQUESTS / "stranger.json").read_bytes()))
    )
    code, out, err = run(capsys, "eval", "default", "--policies", str(POLICIES))
    assert code == 0
    assert json.loads(out)["decision"]
    assert one_line(err).startswith(
        "reading the request JSON from standard input (end with Ctrl-D)"
    )


@pytest.mark.parametrize("command", ["check", "test", "eval"])
def test_every_command_reads_the_services_settings(
    command: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One source of HANDSHAKE_* for the command line and the server: a misspelt setting is
    the same one-line error everywhere."""
    monkeypatch.setenv("HANDSHAKE_POLICY", str(POLICIES))
    arguments = (
        ["default", "--input", str(REQUESTS / "old-colleague.json")] if command == "eval" else []
    )
    code, _, err = run(capsys, command, *arguments)
    assert code == 2
    assert one_line(err) == (
        "handshake: error: unknown setting `HANDSHAKE_POLICY`; did you mean `HANDSHAKE_POLICIES`?"
    )


@pytest.fixture
def large(tmp_path: Path) -> Path:
    """The bundled policies and enough copies of one for `check` and `test` to share the
    work out between processes (loader.MIN_SHARE each); one suite case fails."""
    tree = tmp_path / "policies"
    shutil.copytree(POLICIES, tree)
    template = (POLICIES / "examples" / "who-is-this.yaml").read_text()
    for index in range(2 * MIN_SHARE + 6):
        (tree / "copies").mkdir(exist_ok=True)
        (tree / "copies" / f"p{index:03d}.yaml").write_text(template)
    base = tree / "examples" / "recommendable.yaml"
    base.write_text(base.read_text().replace("decision: defer", "decision: accept"))
    return tree


@pytest.mark.parametrize("command", ["check", "test"])
def test_many_cores_say_what_one_says(
    capsys: pytest.CaptureFixture[str], large: Path, command: str
) -> None:
    one = run(capsys, command, "--jobs", "1", "-v" if command == "test" else "--strict", str(large))
    two = run(capsys, command, "--jobs", "2", "-v" if command == "test" else "--strict", str(large))
    assert one == two
    if command == "check":  # the bundled 10 and the copies
        assert f"{10 + 2 * MIN_SHARE + 6} policies, 2 webhook sources and 111 test cases" in one[1]
    else:  # the cases of `recommendable` that expect `defer`, under each engine
        assert one[0] == 1
        assert "218 passed, 4 failed" in one[1]
        assert one[1].count("FAIL ") == 4


def test_many_cores_report_a_broken_policy_once(
    capsys: pytest.CaptureFixture[str], large: Path
) -> None:
    broken = large / "copies" / "p001.yaml"
    broken.write_text(broken.read_text().replace("decision: ignore", "decision: ignor"))
    shutil.copy(broken, large / "copies" / "bad name.yaml")  # every process reads the names
    for command in ("check", "test"):
        one = run(capsys, command, "--jobs", "1", str(large))
        two = run(capsys, command, "--jobs", "2", str(large))
        assert one == two
        assert (one[1] + one[2]).count("copies/p001.yaml") == 1
        assert (one[1] + one[2]).count("copies/bad name.yaml") == 1
