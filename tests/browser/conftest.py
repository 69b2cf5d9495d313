"""A real browser for the pages Handshake draws: Debian's Chromium, driven by Playwright.

`make test` installs Chromium (`make browser`); elsewhere, point `HANDSHAKE_CHROMIUM` at a
Chromium or Chrome binary. Every page is opened with the network closed to other origins:
each request for another origin (for a file, any other file) is refused and recorded, so a
test sees whether a page reached out for anything.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Route, sync_playwright

# What the probe of these machines found Chromium needs: no sandbox as root, and nothing in
# the background that would reach for the (closed) network.
_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str:
    named = os.environ.get("HANDSHAKE_CHROMIUM")
    found = named or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("the browser tests need Chromium: `make browser` installs Debian's", False)
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium a module. Not for the session: Playwright's sync API runs an event loop
    in this thread while it is open, and later tests call `asyncio.run`."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=_chromium(), args=_FLAGS)
        yield launched
        launched.close()


@dataclass
class Opened:
    """A page in a fresh context, with what it asked of the network and what it got wrong."""

    page: Page
    elsewhere: list[str] = field(default_factory=list)  # refused requests
    errors: list[str] = field(default_factory=list)  # uncaught errors and console errors

    def assert_clean(self) -> None:
        assert self.elsewhere == [], "the page reached for the network"
        assert self.errors == [], "the page raised errors"


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Callable[..., Opened]]:
    """`open_page(url, ready=selector)` -> `Opened`, once `ready` is on the page (by default:
    the page set `data-ready` on its body)."""
    contexts = []

    def open_(url: str, ready: str = "body[data-ready=true]") -> Opened:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        contexts.append(context)
        opened = Opened(context.new_page())

        def refuse_elsewhere(route: Route) -> None:
            if _origin(route.request.url) == _origin(url):
                route.continue_()
            else:
                opened.elsewhere.append(route.request.url)
                route.abort()

        context.route("**/*", refuse_elsewhere)
        opened.page.on("pageerror", lambda error: opened.errors.append(str(error)))
        opened.page.on(
            "console", lambda m: opened.errors.append(m.text) if m.type == "error" else None
        )
        opened.page.goto(url)
        opened.page.wait_for_selector(ready, timeout=15_000)
        return opened

    yield open_
    for context in contexts:
        context.close()


def _origin(url: str) -> str:
    """`scheme://host:port` of an HTTP URL; a file URL is its own origin."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme != "file" else url.split("#")[0]


def file_url(path: Path) -> str:
    return path.resolve().as_uri()
