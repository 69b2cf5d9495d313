"""Hot reload under a running app: the swap, a broken change, a fix, SIGHUP, suites as a gate."""

from __future__ import annotations

import gc
import shutil
import signal
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from service.api import create_app
from service.api.state import load_active
from service.policy import PolicyError
from service.policy.engines import ENGINES
from service.settings import Settings
from tests.api.conftest import Log, sample
from tests.api.server import running_server
from tests.conftest import POLICIES

OLD_TEXT = "Could we catch up on a call before we connect?"
NEW_TEXT = "Shall we have a coffee first?"
REQUEST = {"request": sample("old-colleague"), "now": "2026-11-22T09:00:00Z"}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(POLICIES, target)
    return target


def edit(tree: Path, old: str, new: str, name: str = "default.yaml") -> None:
    path = tree / name
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")


def wait_for(check: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def status(health: dict[str, Any]) -> str | None:
    return health.get("last_reload", {}).get("status")


def reply(decision: dict[str, Any]) -> str:
    return str(decision["reply"]["text"])


@pytest.fixture
def watched(tree: Path, log: Log) -> Iterator[TestClient[Litestar]]:
    app = create_app(Settings(policies=str(tree)))
    with TestClient(app) as client:
        yield client


def test_a_change_goes_live_a_broken_one_does_not_and_a_fix_does(
    watched: TestClient[Litestar], tree: Path, log: Log
) -> None:
    client = watched
    before = client.get("/health/ready").json()
    assert OLD_TEXT in reply(client.post("/evaluate", json=REQUEST).json())

    edit(tree, OLD_TEXT, NEW_TEXT)
    wait_for(lambda: client.get("/health/ready").json()["digest"] != before["digest"], "swap")
    changed = client.post("/evaluate", json=REQUEST).json()
    assert NEW_TEXT in reply(changed)
    assert changed["policy"]["digest"] != before["digest"]
    ready = client.get("/health/ready").json()
    assert ready["last_reload"]["status"] == "ok"

    # A broken change: the last good set keeps serving, the failure shows everywhere.
    edit(
        tree,
        'decision: accept\n    rationale: "{{ request',
        'decision: acept\n    rationale: "{{ request',
    )
    failed = wait_for(
        lambda: (
            (r := client.get("/health/ready").json())["last_reload"]["status"] == "failed" and r
        ),
        "the failed reload",
    )
    assert failed["digest"] == changed["policy"]["digest"]
    assert any(
        "default.yaml:" in p and "invalid value `acept`" in p
        for p in failed["last_reload"]["problems"]
    )
    assert client.get("/policies").json()["last_reload"]["status"] == "failed"
    still = client.post("/evaluate", json=REQUEST).json()
    assert (still["policy"]["digest"], reply(still)) == (
        changed["policy"]["digest"],
        reply(changed),
    )
    metrics = client.get("/metrics").text
    assert 'handshake_policy_reloads_total{result="failure"}' in metrics
    events = [e for e in log.events() if e["event"] == "policy_reload_failed"]
    assert events
    assert any("invalid value `acept`" in p for p in events[-1]["problems"])

    # The fix goes live.
    edit(tree, "decision: acept", "decision: accept")
    wait_for(lambda: client.get("/health/ready").json()["last_reload"]["status"] == "ok", "fix")
    fixed = client.post("/evaluate", json=REQUEST).json()
    assert NEW_TEXT in reply(fixed)


def test_suites_can_gate_a_reload(tree: Path, log: Log) -> None:
    app = create_app(Settings(policies=str(tree), watch=False, reload_requires_tests=True))
    reloader = app.state.reloader
    with TestClient(app) as client:
        digest = client.get("/health/ready").json()["digest"]
        edit(tree, '"Hallo {{ request.requester.name }}, schön, nach so langer Zeit', '"Servus!')
        assert reloader.reload("test") is False
        ready = client.get("/health/ready").json()
        assert ready["digest"] == digest
        assert any(
            "test `an old colleague gone quiet" in p for p in ready["last_reload"]["problems"]
        )


def test_load_loop_sees_no_failure_and_never_half_a_set(tree: Path) -> None:
    """A real server: requests run in a loop while policies change, break and get fixed."""
    seen: Counter[tuple[str, str]] = Counter()
    failures: list[str] = []
    stop = threading.Event()

    def load(url: str) -> None:
        with httpx.Client(base_url=url, timeout=10) as http:
            deadline = time.monotonic() + 90
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    response = http.post("/evaluate", json=REQUEST)
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                    continue
                if response.status_code != 200:
                    failures.append(response.text)
                    continue
                body = response.json()
                seen[(body["policy"]["digest"], reply(body))] += 1

    with running_server("--policies", str(tree)) as (url, _):
        ready = lambda: httpx.get(f"{url}/health/ready", timeout=10).json()  # noqa: E731
        first = ready()
        worker = threading.Thread(target=load, args=(url,))
        worker.start()
        try:
            edit(
                tree,
                'decision: accept\n    rationale: "{{ request',
                'decision: acept\n    rationale: "{{ request',
            )
            wait_for(lambda: status(ready()) == "failed", "the failed reload")
            assert ready()["digest"] == first["digest"]
            edit(tree, "decision: acept", "decision: accept")
            edit(tree, OLD_TEXT, NEW_TEXT)
            wait_for(lambda: ready()["digest"] != first["digest"], "the fixed change")
            time.sleep(0.5)
        finally:
            stop.set()
            worker.join(timeout=30)
    assert failures == []
    by_digest: dict[str, set[str]] = {}
    for digest, text in seen:
        by_digest.setdefault(digest, set()).add(text)
    assert len(by_digest) == 2  # the old set, then the new one; never a mix
    assert all(len(texts) == 1 for texts in by_digest.values())
    assert sum(seen.values()) > 20


def test_sighup_reloads_a_server_that_does_not_watch(tree: Path) -> None:
    with running_server("--policies", str(tree), env={"HANDSHAKE_WATCH": "false"}) as (
        url,
        process,
    ):
        before = httpx.get(f"{url}/health/ready", timeout=10).json()["digest"]
        edit(tree, OLD_TEXT, NEW_TEXT)
        time.sleep(1)
        assert httpx.get(f"{url}/health/ready", timeout=10).json()["digest"] == before
        process.send_signal(signal.SIGHUP)
        wait_for(
            lambda: httpx.get(f"{url}/health/ready", timeout=10).json()["digest"] != before,
            "the SIGHUP reload",
        )
        decision = httpx.post(f"{url}/evaluate", json=REQUEST, timeout=10).json()
        assert NEW_TEXT in reply(decision)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_policy_set_replaced_in_a_frozen_worker_is_freed(
    tree: Path, log: Log, engine: str
) -> None:
    """Workers freeze what they start with, the first policy set included (service/server.py),
    so a set replaced by a reload must be freed by reference counting alone."""
    app = create_app(Settings(policies=str(tree), watch=False, cel_engine=engine))  # type: ignore[arg-type]
    state = app.state.handshake
    gc.collect()
    gc.freeze()
    try:
        with TestClient(app) as client:
            for body in (REQUEST, {**REQUEST, "explain": True}, {**REQUEST, "policy": "nope"}):
                client.post("/evaluate", json=body)
            first_active, first_set = weakref.ref(state.active), weakref.ref(state.policy_set)
            edit(tree, OLD_TEXT, NEW_TEXT)
            assert app.state.reloader.reload("test")
            assert reply(client.post("/evaluate", json=REQUEST).json()).endswith(NEW_TEXT)
        assert first_active() is None
        assert first_set() is None
    finally:
        gc.unfreeze()


def test_a_deployment_serves_its_part_of_the_repository(tree: Path) -> None:
    """HANDSHAKE_SERVE_ONLY: the policies named are served, under their names in the
    repository; what they extend is read from wherever it is; the others are not served, and
    their suites do not gate this Deployment's reloads."""
    settings = Settings(
        policies=str(tree),
        serve_only="examples/team-*, examples/who-is-this",
        watch=False,
        reload_requires_tests=True,
    )
    app = create_app(settings)
    with TestClient(app) as client:
        listed = [p["name"] for p in client.get("/policies").json()["policies"]]
        assert listed == ["examples/team-sales", "examples/who-is-this"]  # team-sales extends
        decided = client.post("/evaluate", json={**REQUEST, "policy": "examples/team-sales"})
        assert decided.status_code == 200  # its base, examples/my-field, is not served
        assert client.post("/evaluate", json={**REQUEST, "policy": "default"}).status_code == 404
        edit(tree, '"Hallo {{ request.requester.name }}, schön, nach so langer Zeit', '"Servus!')
        assert app.state.reloader.reload("test") is True  # default's suite fails: not ours


def test_a_serve_only_pattern_that_matches_nothing_is_a_load_problem(tree: Path) -> None:
    with pytest.raises(PolicyError, match=r"no policy matches `exampels/\*`"):
        load_active(Settings(policies=str(tree), serve_only="examples/who-is-this,exampels/*"))
