"""One real `handshake serve` per module, on a copy of the bundled policies, with tokens and
webhook secrets set: the hostile suite attacks it over sockets, as a client would.

Every module ends by checking what no attack may cause: a 5xx answer, or a traceback in the log.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.server import events_of, output_of, running_server
from tests.conftest import POLICIES

TOKEN = "hostile-suite-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    policies: Path  # the served directory: tests may write into it

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def events(self) -> list[dict[str, Any]]:
        return events_of(self.process)

    def output(self) -> str:
        return output_of(self.process)

    def rss_mib(self, field: str = "VmRSS") -> float:
        """The worker's resident memory (one worker: the server process itself), now or at
        its highest so far (`VmHWM`)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def statuses(self) -> list[int]:
        return [e["status"] for e in self.events() if e["event"] == "request"]


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Server]:
    """A module may set `SERVER_ENV` (e.g. short timeouts) for its server."""
    policies = tmp_path_factory.mktemp("served") / "policies"
    shutil.copytree(POLICIES, policies)
    env = {
        "HANDSHAKE_POLICIES": str(policies),
        "HANDSHAKE_API_TOKENS": f"hostile:{TOKEN}",
        "EXAMPLE_CRM_WEBHOOK_SECRET": WEBHOOK_SECRET,
        **getattr(request.module, "SERVER_ENV", {}),
    }
    with running_server(env=env) as (url, process):
        served = Server(url, process, policies)
        yield served
        process.terminate()  # SIGTERM: drains and exits; what it logs is checked too
        process.wait(timeout=30)
        # What no attack may cause, whatever the module tried.
        output = served.output()
        assert process.returncode in (0, -signal.SIGTERM), output[-5000:]  # uvicorn re-raises
        assert not [s for s in served.statuses() if s >= 500], output[-5000:]
        assert "Traceback" not in output, output[-5000:]


def evaluate(server: Server, body: bytes, **headers: str) -> httpx.Response:
    return httpx.post(
        server.url + "/evaluate",
        content=body,
        headers={**AUTH, "content-type": "application/json", **headers},
        timeout=10,
    )


def wait_for(condition: Callable[[], Any], seconds: float = 15) -> Any:
    """Poll until `condition()` is truthy (bounded); return its value."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)
