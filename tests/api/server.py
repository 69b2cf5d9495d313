"""A real `handshake serve` process on a free loopback port, for tests that need the HTTP stack."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import httpx

from bench.servers import free_port

ROOT = Path(__file__).resolve().parents[2]


_OUTPUTS: dict[int, IO[bytes]] = {}  # pid -> what the server has written so far


def stacks_of(process: subprocess.Popen[bytes]) -> str:
    """The log of a server started by `running_server`, ending with every thread's stack
    (SIGUSR1: faulthandler), for a test to show when the server does not do what it should."""
    process.send_signal(signal.SIGUSR1)
    time.sleep(1)
    return output_of(process)[-20_000:]


def output_of(process: subprocess.Popen[bytes]) -> str:
    """What a server started by `running_server` has written so far."""
    output = _OUTPUTS[process.pid]
    output.seek(0)
    text = output.read().decode(errors="replace")
    output.seek(0, os.SEEK_END)  # the server goes on appending
    return text


def events_of(process: subprocess.Popen[bytes]) -> list[dict[str, Any]]:
    """The JSON log events a server started by `running_server` has written so far."""
    lines = output_of(process).splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


@contextmanager
def running_server(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Start the server, wait (bounded) until it is ready, yield its URL, stop it.

    Its output goes to a file, not a pipe: a pipe nobody reads fills up and blocks the server.
    """
    port = free_port()
    output = tempfile.TemporaryFile()  # noqa: SIM115 - closed in `finally`
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "serve", "--port", str(port), *args],
        cwd=ROOT,
        env={**os.environ, "HANDSHAKE_LOG_FORMAT": "json", **(env or {})},
        stdout=output,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    try:
        while True:
            if process.poll() is not None:
                output.seek(0)
                text = output.read().decode()
                raise RuntimeError(f"server exited with {process.returncode}:\n{text}")
            try:
                if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"server not ready within {timeout} s")
            time.sleep(0.1)
        _OUTPUTS[process.pid] = output
        yield url, process
    finally:
        _OUTPUTS.pop(process.pid, None)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        output.close()
