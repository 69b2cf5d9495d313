"""`handshake playground` without a browser: the scratch copy, a new policy in a new folder,
and the command's one-line refusals."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from service.cli import main
from service.playground import _STARTER, Attempt, Playground
from tests.conftest import POLICIES

REQUEST = (POLICIES.parent / "examples" / "requests" / "old-colleague.json").read_text()


def test_a_new_policy_in_a_new_folder_is_decided_and_the_directory_untouched() -> None:
    playground = Playground(POLICIES, "newteam/sales")
    try:
        answer = playground.attempt(Attempt(policy=_STARTER, request=REQUEST))
        assert answer.problems == []
        assert answer.decision is not None
        assert (answer.decision.decision, answer.decision.rule) == ("accept", "worked-together")
        assert not (POLICIES / "newteam").exists()
        broken = playground.attempt(Attempt(policy=_STARTER + "  - id: [", request=REQUEST))
        assert broken.decision is None
        assert broken.problems[0].line == 11
    finally:
        playground.close()


def test_the_command_refuses_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = ["playground", "default", "--policies", str(tmp_path / "none")]
    assert main(missing) == 2
    assert capsys.readouterr().err.endswith(
        "no such policy directory; name yours with --policies DIR\n"
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        taken.listen()
        assert (
            main(["playground", "default", "--policies", str(POLICIES), "--port", str(port)]) == 2
        )
    assert capsys.readouterr().err == (
        f"handshake: error: port {port} is in use: choose another with --port\n"
    )
    assert main(["playground", "../etc", "--policies", str(POLICIES)]) == 2
    assert "is not a policy name" in capsys.readouterr().err
