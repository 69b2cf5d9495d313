"""The servers a benchmark drives, as child processes on free loopback ports: started with only
the settings chosen here, waited for until every worker is up, read from /proc, stopped by
their own process id."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from bench.bare import PATH as BARE_PATH

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 60  # seconds for a server to become ready


class StartError(Exception):
    """A server did not come up; the message says why (with the end of its log)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------------------
# Processes and memory


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` so far (/proc/<pid>/stat, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1)) / 1024  # type: ignore[union-attr]


def workers_of(pid: int, workers: int) -> list[int]:
    """The processes that serve requests: the server itself with one worker, else uvicorn's
    spawned children (not multiprocessing's resource tracker, which serves nothing)."""
    if workers == 1:
        return [pid]
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if parent == pid and b"spawn_main" in cmdline:
            children.append(int(stat.parent.name))
    return sorted(children)


def wait_ready(
    process: subprocess.Popen[bytes], url: str, log: Path, name: str, status: int = 200
) -> None:
    """Until GET `url` answers `status`."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StartError(f"{name} exited with {process.returncode}: {_tail(log)}")
        try:
            if httpx.get(url, timeout=1).status_code == status:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise StartError(f"{name} not ready within {START_TIMEOUT} s: {_tail(log)}")


def _tail(log: Path, lines: int = 3) -> str:
    text = log.read_text(errors="replace").strip().splitlines()
    return " / ".join(text[-lines:]) or "(no output)"


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ---------------------------------------------------------------------------------------
# Handshake and the bare POST app


@contextmanager
def handshake(engine: str, workers: int, tmp: Path) -> Iterator[tuple[str, list[int]]]:
    """A fresh `handshake serve`; yields its URL and the pids of its workers."""
    port = free_port()
    # Only the settings chosen here: an inherited HANDSHAKE_* (tokens, a policy dir) would
    # change what is measured.
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDSHAKE_")}
    env |= {
        "HANDSHAKE_POLICIES": str(ROOT / "policies"),
        "HANDSHAKE_LOG_LEVEL": "warning",  # the request log would measure the log sink
        "HANDSHAKE_PORT": str(port),
        "HANDSHAKE_WORKERS": str(workers),
    }
    if engine != "default":
        env["HANDSHAKE_CEL_ENGINE"] = engine
    command = [sys.executable, "-m", "service", "serve"]
    with serving(command, env, port, workers, tmp, f"handshake ({engine})", "/health/ready") as up:
        yield up


@contextmanager
def bare_post(workers: int, tmp: Path) -> Iterator[tuple[str, list[int]]]:
    """bench/bare.py under uvicorn with `handshake serve`'s options; its URL and workers."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "--factory", "bench.bare:app"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    command += ["--no-access-log", "--no-server-header", "--no-proxy-headers"]
    command += ["--log-level", "warning"]
    # A POST route only: GET answers 405 once it is up.
    with serving(command, dict(os.environ), port, workers, tmp, "bare POST", BARE_PATH, 405) as up:
        yield up


@contextmanager
def serving(
    command: list[str],
    env: dict[str, str],
    port: int,
    workers: int,
    tmp: Path,
    name: str,
    ready_path: str,
    ready_status: int = 200,
) -> Iterator[tuple[str, list[int]]]:
    """Run `command` (a server on `port`) until the block ends; yields its URL and the pids of
    its workers once GET `ready_path` answers `ready_status`."""
    log = tmp / f"{name.split()[0]}-{port}.log"
    with log.open("wb") as out:  # a file, not a pipe: a full pipe would block the server
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(process, f"{url}{ready_path}", log, name, ready_status)
        yield url, _wait_for_workers(process, workers)
    finally:
        stop(process)


def _wait_for_workers(process: subprocess.Popen[bytes], workers: int) -> list[int]:
    deadline = time.monotonic() + START_TIMEOUT
    while len(pids := workers_of(process.pid, workers)) < workers:
        if time.monotonic() > deadline:
            raise StartError(f"only {len(pids)} of {workers} workers started")
        time.sleep(0.2)
    # Ready means one worker answers; give the others time to finish importing the app.
    time.sleep(1)
    return pids
