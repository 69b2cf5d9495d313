"""SIGTERM during a load loop: no accepted request fails.

The flow of a rolling update: SIGTERM -> /health/ready turns 503 while the server keeps
serving (the shutdown delay) -> the load balancer stops sending -> the server stops accepting,
finishes what is in flight, and exits. The load loop plays the load balancer: it keeps sending
until readiness says the server is draining.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import threading
import time
from typing import Any

import httpx
import pytest
import structlog
import uvicorn

import service.api.app
import service.server
from service.log import configure_logging
from service.server import DrainingServer
from service.settings import Settings
from tests.api.conftest import sample
from tests.api.server import running_server, stacks_of
from tests.conftest import POLICIES

BODY = {"request": sample("old-colleague")}


def test_sigterm_drains_and_no_accepted_request_fails() -> None:
    completed: list[float] = []
    failed: list[str] = []
    draining = threading.Event()

    def load(url: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not draining.is_set():
                try:
                    response = http.post("/evaluate", json=BODY)
                except httpx.HTTPError as exc:
                    failed.append(repr(exc))
                    return
                if response.status_code == 200:
                    completed.append(time.monotonic())
                else:
                    failed.append(f"{response.status_code} {response.text[:200]}")

    def balancer(url: str) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health/ready", timeout=5).status_code == 503:
                    break
            except httpx.HTTPError:
                break
            time.sleep(0.05)
        draining.set()

    env = {"HANDSHAKE_SHUTDOWN_DELAY_SECONDS": "1.5"}
    with running_server(env=env) as (url, process):
        threads = [threading.Thread(target=load, args=(url,)) for _ in range(6)]
        watcher = threading.Thread(target=balancer, args=(url,))
        for thread in [*threads, watcher]:
            thread.start()
        time.sleep(1.0)
        assert completed, "the load loop is running"
        terminated_at = time.monotonic()
        process.send_signal(signal.SIGTERM)
        for thread in [*threads, watcher]:
            thread.join(timeout=60)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the server did not exit within 30 s of draining:\n{stacks_of(process)}")
        exited_at = time.monotonic()
    assert failed == []
    served_while_draining = [t for t in completed if t >= terminated_at]
    assert served_while_draining, "requests kept being served after SIGTERM"
    assert exited_at - terminated_at >= 1.5  # the shutdown delay was honoured
    assert process.returncode == 0


def test_a_sigterm_that_lands_inside_a_log_write_does_not_hang_the_worker() -> None:
    """A signal handler runs in the main thread wherever it happens to be, also inside a log
    call holding structlog's output lock, which is not reentrant. A handler that logs there
    waits on itself forever (CI once hung this way). Here the handler runs from inside the
    stream's write, exactly where such a signal lands."""
    server = DrainingServer(uvicorn.Config("service.server:app_from_environment"), delay=1.0)

    class SignalMidWrite(io.StringIO):
        fired = False

        def write(self, text: str) -> int:
            if not self.fired:
                self.fired = True
                server.handle_exit(signal.SIGTERM, None)
            return super().write(text)

    stream = SignalMidWrite()
    configure_logging(Settings(log_format="json"), stream)
    # In a daemon thread, so that a regression fails this test instead of hanging the run.
    worker = threading.Thread(target=structlog.get_logger("t").info, args=("busy",), daemon=True)
    worker.start()
    worker.join(timeout=5)
    assert not worker.is_alive(), "the signal handler deadlocked on the log output lock"
    assert server.exit_at is not None
    assert not server.should_exit

    # The loop's next tick says so, once; the server exits when the delay has passed.
    asyncio.run(server.on_tick(1))
    asyncio.run(server.on_tick(2))
    events = [line for line in stream.getvalue().splitlines() if '"draining"' in line]
    assert len(events) == 1
    assert '"seconds":1.0' in events[0]
    server.exit_at = time.monotonic()
    assert asyncio.run(server.on_tick(3)) is True


def test_one_worker_compiles_the_policies_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """`serve` loads the policies to fail before binding; its one worker serves that set
    instead of compiling (and holding) a second."""
    loads: list[str] = []
    real = service.server.load_active

    def counted(settings: Settings, *args: Any, **kwargs: Any) -> Any:
        loads.append(settings.policies)
        return real(settings, *args, **kwargs)

    served: list[Any] = []
    monkeypatch.setattr(os, "environ", dict(os.environ))  # serve() exports its settings
    monkeypatch.setattr(service.server, "load_active", counted)
    monkeypatch.setattr(service.api.app, "load_active", counted)
    monkeypatch.setattr(service.server.gc, "freeze", lambda: None)
    monkeypatch.setattr(
        service.server.DrainingServer,
        "run",
        lambda self: served.append(service.server.app_from_environment()),
    )
    settings = Settings(policies=str(POLICIES), watch=False, authentication="none")
    assert service.server.serve(settings) == 0
    assert loads == [str(POLICIES)]
    assert served[0].state.handshake.policy_set.policies.keys() >= {"default"}
