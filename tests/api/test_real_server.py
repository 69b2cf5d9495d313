"""The real HTTP stack: `handshake serve` in a subprocess on a free loopback port."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import TOKEN, sample
from tests.api.server import ROOT, events_of, output_of, running_server, stacks_of


def test_serve_answers_and_stops_on_sigterm() -> None:
    with running_server() as (url, process):
        response = httpx.post(f"{url}/evaluate", json={"request": sample()}, timeout=10)
        assert response.status_code == 200
        assert response.json()["decision"] == "defer"
        # A header value that is not ASCII is not echoed; a fresh id is made instead.
        odd = httpx.get(f"{url}/health/live", headers=[(b"x-request-id", "é".encode())], timeout=10)
        assert odd.status_code == 200
        assert len(odd.headers["x-request-id"]) == 32
        (starting,) = [e for e in events_of(process) if e["event"] == "starting"]
        assert (starting["url"], starting["docs"]) == (url, f"{url}/docs")  # where to go
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status says why.
    assert process.returncode in (0, -signal.SIGTERM)


def test_sigusr1_prints_every_threads_stack_and_the_server_goes_on() -> None:
    with running_server() as (url, process):
        dump = stacks_of(process)
        assert "Current thread" in dump  # faulthandler's dump, main thread first
        assert "service/server.py" in dump or "uvicorn" in dump  # a real stack, not a banner
        assert httpx.get(f"{url}/health/ready", timeout=10).status_code == 200


def test_serve_refuses_broken_policies_listing_every_problem(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("rules: [\n")
    (tmp_path / "b.yaml").write_text("- 1\n")
    result = subprocess.run(
        [sys.executable, "-m", "service", "serve", "--policies", str(tmp_path), "--port", "9"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"HANDSHAKE_LOG_FORMAT": "json", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == 2
    assert "a.yaml:2:1: invalid YAML" in result.stdout
    assert "b.yaml:1:1: expected `object`, got `array`" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_a_bad_setting_stops_with_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "serve"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"HANDSHAKE_PORT": "eighty", "HANDSHAKE_POLICYS": "x", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "handshake: error: unknown setting `HANDSHAKE_POLICYS`; did you mean `HANDSHAKE_POLICIES`?"
    ]


@pytest.mark.parametrize("tokens", [True, False], ids=["tokens", "defaults"])
def test_schemathesis_against_the_real_server(tmp_path: Path, tokens: bool) -> None:
    """Every operation, every check, valid and invalid data, over real HTTP (bounded); the
    server answers no 5xx and logs no traceback. On its defaults (no tokens), the document it
    serves asks for none, so no check expects a refusal without one."""
    env = {"HANDSHAKE_API_TOKENS": f"tests:{TOKEN}"} if tokens else {}
    header = ["--header", f"Authorization: Bearer {TOKEN}"] if tokens else []
    with running_server(env=env) as (url, process):
        result = subprocess.run(
            [
                str(Path(sys.executable).with_name("schemathesis")),
                "run",
                f"{url}/openapi.json",
                *header,
                "--checks",
                "all",
                "--max-examples",
                "15",
                "--report",
                "junit",
                "--report-dir",
                str(tmp_path),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        log = output_of(process)
        statuses = [e["status"] for e in events_of(process) if e["event"] == "request"]
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert len(statuses) > 100
    assert not [s for s in statuses if s >= 500], log[-5000:]
    assert "Traceback" not in log, log[-5000:]
    assert "No issues found" in result.stdout or "passed" in result.stdout


def test_several_workers_share_the_settings() -> None:
    """`--workers 2`: uvicorn's supervisor; each worker reads the settings from the environment."""
    env = {"HANDSHAKE_API_TOKENS": f"tests:{TOKEN}"}
    with running_server("--workers", "2", env=env) as (url, _):
        assert httpx.get(f"{url}/policies", timeout=10).status_code == 401
        headers = {"Authorization": f"Bearer {TOKEN}"}
        for _ in range(6):  # reach both workers
            response = httpx.post(
                f"{url}/evaluate", json={"request": sample()}, headers=headers, timeout=10
            )
            assert response.status_code == 200
