"""Hostile policy files dropped into a served directory: each is refused with its position,
the last good set keeps serving, and the watcher keeps watching (a later good edit loads)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.attacks import RUNAWAY_POLICY
from tests.api.conftest import sample
from tests.hostile.conftest import AUTH, Server, wait_for

REQUEST = {"request": sample()}

HEADER = "apiVersion: handshake/v1\nkind: ConnectionPolicy\n"
DEFAULT = "default: {decision: ignore, rationale: x}\n"


def policy(when: str, params: str = "") -> str:
    rule = f"rules:\n  - id: r\n    when: '{when}'\n    decision: accept\n    rationale: x\n"
    return HEADER + params + rule + DEFAULT


LAUGHS = "".join(
    f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10 if i else ["x"] * 10) + "]\n"
    for i in range(8)
)
HOSTILE = {
    "parentheses": (policy("(" * 300 + "true" + ")" * 300), "nests too deeply"),
    "long-sum": (policy("+".join(["1"] * 2000) + " > 0"), "nests too deeply"),
    "deep-params": (
        policy("true", "params:\n  deep: " + "[" * 2000 + "]" * 2000 + "\n"),
        "nested deeper than 32 levels",
    ),
    "billion-laughs": (policy("true", "params:\n" + LAUGHS), "more than 100,000 values"),
    "alias-cycle": (policy("true", "params:\n  a: &a [*a]\n"), "an alias inside the node"),
}


def last_reload(server: Server) -> dict[str, Any]:
    ready = httpx.get(server.url + "/health/ready", timeout=5)
    assert ready.status_code == 200  # the last good set still serves
    return ready.json().get("last_reload") or {}


def evaluates(server: Server) -> bool:
    body = {
        "request": {
            "requester": {"name": "A", "has_photo": True},
            "recipient": {"name": "B", "has_photo": True},
        }
    }
    response = httpx.post(server.url + "/evaluate", json=body, headers=AUTH, timeout=5)
    return response.status_code == 200


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_file_is_refused_and_the_watcher_goes_on(server: Server, name: str) -> None:
    text, message = HOSTILE[name]
    path = server.policies / f"hostile-{name}.yaml"
    path.write_text(text)
    status = wait_for(lambda: (r := last_reload(server)).get("status") == "failed" and r)
    assert status, "no failed reload reported"
    (problem,) = [p for p in status["problems"] if path.name in p]
    assert message in problem
    assert f"{path.name}:" in problem  # file:line
    assert evaluates(server)
    admin = httpx.post(server.url + "/admin/reload", headers=AUTH, timeout=30)
    assert admin.status_code == 200
    assert admin.json()["status"] == "failed"
    path.unlink()
    _good_edit(server.policies / "default.yaml")
    assert wait_for(lambda: last_reload(server).get("status") == "ok"), last_reload(server)


def test_a_policy_exponential_under_the_reference_engine_loads_at_once(server: Server) -> None:
    """cel-python's `||` on two errors used to nest their reprs: 2^n work for n items."""
    items = ", ".join(str(i) for i in range(40))
    when = 'params.xs.exists(x, x.endsWith("a")) || params.xs.all(x, x.endsWith("b"))'
    path = server.policies / "exponential.yaml"
    path.write_text(policy(when, f"params:\n  xs: [{items}]\n"))
    admin = httpx.post(server.url + "/admin/reload", headers=AUTH, timeout=10)
    assert admin.json()["status"] == "ok", admin.text
    path.unlink()


def _good_edit(path: Path) -> None:
    path.write_text(path.read_text() + "\n# touched\n")


@pytest.mark.parametrize("explain", [False, True])
def test_the_costliest_request_a_loadable_policy_allows_is_bounded(
    server: Server, explain: bool
) -> None:
    """Within the load-time budget, a request built to cost the most (a 60 KB attribute doubled
    seven times, then twice more) adds at most 64 MiB and is answered within 1 s, while other
    requests are answered meanwhile."""
    (server.policies / "runaway.yaml").write_text(RUNAWAY_POLICY)
    admin = httpx.post(server.url + "/admin/reload", headers=AUTH, timeout=30)
    assert admin.json()["status"] == "ok", admin.text
    body = {
        "policy": "runaway",
        "request": {**REQUEST["request"], "attributes": {"s": "x" * 60_000}},
        "explain": explain,
    }
    before = server.rss_mib("VmHWM")  # the peak: C++ gives large blocks back at once
    others: list[float] = []

    def meanwhile() -> None:
        for _ in range(5):
            started = time.monotonic()
            assert evaluates(server)
            others.append(time.monotonic() - started)

    thread = threading.Thread(target=meanwhile)
    started = time.monotonic()
    thread.start()
    response = httpx.post(server.url + "/evaluate", json=body, headers=AUTH, timeout=10)
    seconds = time.monotonic() - started
    thread.join(timeout=10)
    grown = server.rss_mib("VmHWM") - before
    (server.policies / "runaway.yaml").unlink()
    assert response.status_code == 200, response.text[:500]
    assert response.json()["decision"] == "ignore"
    assert seconds < 1, seconds
    assert grown < 64, f"+{grown:.0f} MiB"
    assert len(others) == 5, others
    assert max(others) < 1, others
