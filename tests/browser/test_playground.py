"""`handshake playground`, driven in a real browser: a broken condition shows its problem at
its line; fixed, the decision appears, with its trace and a reply in each locale."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.api.server import ROOT, free_port
from tests.browser.conftest import Opened

CONDITION = "!request.requester.has_photo && !variables.has_note"


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    port = free_port()
    command = [sys.executable, "-m", "service", "playground", "default", "--port", str(port)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    found = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            try:
                if httpx.get(found, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the playground did not start"
            time.sleep(0.1)
        yield found
    finally:
        process.terminate()
        process.wait(timeout=15)
        if process.stdout is not None:
            process.stdout.close()


def test_a_broken_condition_shows_at_its_line_and_fixed_it_decides(
    url: str, open_page: Callable[..., Opened]
) -> None:
    opened = open_page(url)
    page = opened.page
    assert page.locator("#decision").get_attribute("data-decision") == "defer"
    original = page.locator("#policy").input_value()
    line = next(n for n, text in enumerate(original.splitlines(), 1) if CONDITION in text)

    page.locator("#policy").fill(original.replace(CONDITION, CONDITION.replace("&&", "&& &&")))
    problem = page.locator(f'#problems li[data-line="{line}"]')
    problem.wait_for(timeout=10_000)
    assert "syntax error" in problem.inner_text()
    assert page.locator(f'#policy-gutter span.bad[data-line="{line}"]').count() == 1
    assert page.locator("#decision").is_hidden()

    page.locator("#policy").fill(original.replace("decision: defer", "decision: accept"))
    page.wait_for_selector('#decision[data-decision="accept"]', timeout=10_000)
    assert page.locator("#problems li").count() == 0
    assert page.locator("#decision").get_attribute("data-rule") == "ask-for-context"
    assert page.locator('#trace tr[data-rule="ask-for-context"] td').nth(1).inner_text() == "yes"
    locales = page.locator("#replies tr").evaluate_all("rows => rows.map(r => r.dataset.locale)")
    assert locales == ["en", "de", "fr"]

    # The request side: invalid JSON is said, and nothing is decided.
    request = page.locator("#request").input_value()
    page.locator("#request").fill(request.replace('"has_photo": true', '"has_photo": "yes"', 1))
    page.wait_for_selector('#problems li[data-side="request"]', timeout=10_000)
    assert "has_photo" in page.locator('#problems li[data-side="request"]').inner_text()
    opened.assert_clean()


def test_only_this_machines_pages_may_call_it(url: str) -> None:
    body = b'{"policy": "", "request": "{}"}'
    json_type = {"content-type": "application/json"}
    assert httpx.post(f"{url}attempt", content=body, headers=json_type).status_code == 200
    rebound = {**json_type, "host": "evil.example:8081"}
    assert httpx.post(f"{url}attempt", content=body, headers=rebound).status_code == 400
    elsewhere = {**json_type, "origin": "https://evil.example"}
    assert httpx.post(f"{url}attempt", content=body, headers=elsewhere).status_code == 403
    form = {"content-type": "text/plain"}  # what a form on another site can send unasked
    assert httpx.post(f"{url}attempt", content=body, headers=form).status_code == 415
