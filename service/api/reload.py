"""Safe hot reload: load and compile the whole new set off the request path, then swap.

Triggers: changes under the policy directory (watchfiles) and SIGHUP. A reload that fails —
any load problem, or a failing test suite when `reload_requires_tests` is on — leaves the
active set serving and is reported in the log, in `/health/ready` and `/policies`
(`last_reload`), and in metrics. Each worker process watches on its own and converges on the
same files; the digest says which content a worker serves.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path

import structlog
from litestar import Litestar
from watchfiles import awatch

from service.api.auth import load_tokens
from service.api.state import AppState, ReloadStatus, TokensStatus, load_active
from service.policy import PolicyError, PolicySet, Problem
from service.policy.loader import policy_names
from service.policy.suite import load_suites, run_case
from service.settings import SettingsError

__all__ = ["Reloader", "watching"]

WATCH_RETRY_SECONDS = 1.0


class Reloader:
    def __init__(self, state: AppState) -> None:
        self.state = state
        self.log = structlog.get_logger("handshake")
        self._lock = asyncio.Lock()

    def reload(self, reason: str) -> bool:
        """Load, check and swap; blocking (run it in a thread). True when a new set is active."""
        state = self.state
        started = time.perf_counter()
        self._reload_tokens(reason)
        try:
            active = load_active(state.settings, previous=state.policy_set)
            candidate = active.policy_set
            if state.settings.reload_requires_tests:
                _require_passing_suites(Path(state.settings.policies), candidate)
        except PolicyError as exc:
            self._failed(reason, exc.problems)
            return False
        except Exception as exc:  # a fault nobody foresaw: the last good set keeps serving
            self.log.exception("policy_reload_crashed", reason=reason)
            where = Problem(file=state.settings.policies, message=f"internal error: {exc!r}"[:500])
            self._failed(reason, [where])
            return False
        previous = state.policy_set
        if (candidate.digest, candidate.revision) == (previous.digest, previous.revision):
            state.last_reload = ReloadStatus.ok(candidate, unchanged=True)
            return False
        state.active = active  # one assignment: each request reads what is active once
        state.metrics.activated(candidate)
        state.metrics.reloads.labels("success").inc()
        state.last_reload = ReloadStatus.ok(candidate)
        self.log.info(
            "policies_reloaded",
            reason=reason,
            revision=candidate.revision,
            digest=candidate.digest,
            previous_digest=previous.digest,
            policies=len(candidate.policies),
            seconds=round(time.perf_counter() - started, 3),
        )
        return True

    async def reload_async(self, reason: str) -> bool:
        async with self._lock:  # one reload at a time; the next sees the newest files
            return await asyncio.to_thread(self.reload, reason)

    async def reload_shadow_async(self, reason: str) -> bool:
        """Load the shadow's candidate set again (HANDSHAKE_SHADOW_POLICIES)."""
        shadow = self.state.shadow
        if shadow is None:
            return False
        async with self._lock:
            return await asyncio.to_thread(shadow.load, reason)

    async def reload_all(self, reason: str) -> bool:
        """The live set, then the candidate: SIGHUP and `/admin/reload`."""
        reloaded = await self.reload_async(reason)
        await self.reload_shadow_async(reason)
        return reloaded

    def _reload_tokens(self, reason: str) -> None:
        """Read the tokens again (a file may have been rotated). A reading that fails keeps
        the last good tokens in force: authentication never turns off by a file's content."""
        state = self.state
        if state.tokens_status is None:  # authentication is off, by configuration
            return
        try:
            state.tokens = load_tokens(state.settings)
        except SettingsError as exc:
            state.metrics.token_reloads.labels("failure").inc()
            state.tokens_status = TokensStatus(
                status="failed", at=datetime.now(UTC), problem=str(exc)
            )
            self.log.error("tokens_reload_failed", reason=reason, problem=str(exc))
            return
        state.metrics.token_reloads.labels("success").inc()
        state.tokens_status = TokensStatus(status="ok", at=datetime.now(UTC))

    def _failed(self, reason: str, problems: list[Problem]) -> None:
        state = self.state
        state.metrics.reloads.labels("failure").inc()
        state.last_reload = ReloadStatus(
            status="failed",
            at=datetime.now(UTC),
            problems=[str(p) for p in problems],
        )
        self.log.error(
            "policy_reload_failed",
            reason=reason,
            active_revision=state.policy_set.revision,
            active_digest=state.policy_set.digest,
            problems=[str(p) for p in problems],
        )


def _require_passing_suites(directory: Path, policy_set: PolicySet) -> None:
    failed = []
    for case in load_suites(directory, policy_names(directory)):
        if case.policy not in policy_set.policies:
            continue  # not served here (HANDSHAKE_SERVE_ONLY): another Deployment tests it
        result = run_case(policy_set, case)
        if result.failures:
            failed.append(
                Problem(
                    file=case.file,
                    line=case.line,
                    message=f"test `{case.case.name}` fails: " + "; ".join(result.failures),
                )
            )
    if failed:
        raise PolicyError(failed)


@asynccontextmanager
async def watching(app: Litestar) -> AsyncIterator[None]:
    """Lifespan: watch the policy directory and listen for SIGHUP while the app runs."""
    state: AppState = app.state.handshake
    reloader: Reloader = app.state.reloader
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[bool]] = set()

    def on_sighup() -> None:
        task = loop.create_task(reloader.reload_all("SIGHUP"))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    with suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread
        loop.add_signal_handler(signal.SIGHUP, on_sighup)
    stop = asyncio.Event()
    watchers = []
    if state.settings.watch:
        watched = [(Path(state.settings.policies), reloader.reload_async)]
        if state.shadow is not None:  # (its own watch, even on the same directory)
            watched.append((state.shadow.directory, reloader.reload_shadow_async))
        watchers = [loop.create_task(_watch(d, reload, stop)) for d, reload in watched]
    try:
        yield
    finally:
        stop.set()
        with suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(signal.SIGHUP)
        for watcher in watchers:
            with suppress(asyncio.CancelledError):
                await asyncio.wait_for(watcher, timeout=5)


def watch_paths(directory: Path) -> list[Path]:
    """The directory, and the parent of every symlink on its path: git-sync swaps a symlink
    (`current -> <rev>`) on each sync, and a watch on the old target would miss the next one."""
    paths = [directory]
    current = directory.absolute()
    for ancestor in [current, *current.parents]:
        if ancestor.is_symlink():
            paths.append(ancestor.parent)
    return paths


async def _watch(
    directory: Path, reload: Callable[[str], Awaitable[bool]], stop: asyncio.Event
) -> None:
    """Reload on changes until stopped. Whatever a reload or the watch itself meets, it
    watches on (after a pause, if the watch failed: e.g. the directory is being replaced)."""
    log = structlog.get_logger("handshake")
    while not stop.is_set():
        try:
            paths = watch_paths(directory)
            async for changes in awatch(*paths, stop_event=stop, debounce=300, step=50):
                files = sorted({Path(path).name for _, path in changes})
                await reload(f"files changed: {', '.join(files[:5])}")
        except Exception:
            log.exception("policy_watch_failed", retry_seconds=WATCH_RETRY_SECONDS)
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), WATCH_RETRY_SECONDS)
