"""`/docs`: Swagger UI served whole by the service, so it works with no network beyond it;
"Try it out" starts from the example requests; `/` leads there."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.api.server import ROOT, running_server
from tests.browser.conftest import Opened


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with running_server() as (found, _):
        yield found


def test_the_root_leads_to_the_docs(url: str) -> None:
    answer = httpx.get(f"{url}/", timeout=10)
    assert answer.status_code in (301, 302, 307, 308)
    assert answer.headers["location"] == "/docs"


def test_every_asset_of_the_docs_is_served_from_here(url: str) -> None:
    page = httpx.get(f"{url}/docs", timeout=10).text
    for other_host in ("http://", "https://", '="//', "='//"):  # absolute or scheme-relative
        assert other_host not in page, other_host
    for asset in ("swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "swagger-ui.css"):
        assert f'"/docs/assets/{asset}"' in page
        answer = httpx.get(f"{url}/docs/assets/{asset}", timeout=10)
        assert answer.status_code == 200
        assert len(answer.content) > 10_000


def test_swagger_ui_renders_offline_and_tries_an_example(
    url: str, open_page: Callable[..., Opened]
) -> None:
    opened = open_page(f"{url}/docs", ready=".opblock")
    page = opened.page
    operations = page.locator(".opblock-summary-path").all_inner_texts()
    assert "/evaluate" in operations
    assert "/policies/{name}" in operations
    page.locator("#operations-decisions-evaluate .opblock-summary").click()
    page.locator("#operations-decisions-evaluate .try-out__btn").click()
    body = page.locator("#operations-decisions-evaluate textarea.body-param__text")
    first = sorted((ROOT / "examples" / "requests").glob("*.json"))[0]
    expected = json.loads(first.read_text())
    assert json.loads(body.input_value()) == {"request": expected}
    page.locator("#operations-decisions-evaluate .execute").click()
    live = page.locator("#operations-decisions-evaluate .live-responses-table tbody tr").first
    live.wait_for(timeout=10_000)
    assert live.locator(".response-col_status").inner_text().strip() == "200"
    assert '"decision"' in live.locator(".response-col_description").inner_text()
    opened.assert_clean()
