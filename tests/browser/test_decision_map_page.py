"""`handshake map --format html`: the page draws the map in a real browser, offline, and
what it shows is what the map found."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from service.cli import main
from service.policy import load_policies
from service.policy.decision_map import explore
from tests.browser.conftest import Opened, file_url
from tests.unit.test_decision_map import PLANTED as DEAD_AND_FAILING

NOW = datetime(2026, 11, 22, 9, tzinfo=UTC)
HOSTILE = "</script><script>window.pwned = true</script>"
PLANTED = DEAD_AND_FAILING.replace(
    "params: {employers: [Acme]}", f'params: {{employers: [Acme, "{HOSTILE}"]}}'
)


@pytest.fixture
def planted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    (tmp_path / "policies").mkdir()
    assert HOSTILE in PLANTED
    (tmp_path / "policies" / "p.yaml").write_text(PLANTED)
    argv = ["map", "p", "--policies", str(tmp_path / "policies"), "--format", "html"]
    assert main([*argv, "--now", NOW.isoformat()]) == 0
    page = tmp_path / "map.html"
    page.write_text(capsys.readouterr().out)
    return page


def _count(opened: Opened, rule: str) -> int:
    text = opened.page.locator(f'#rules tr[data-rule="{rule}"] td.count').inner_text()
    return int(text.split()[0].replace(",", ""))


def _status(opened: Opened) -> int:
    found = re.search(r"([\d,]+) kinds", opened.page.locator("#status").inner_text())
    assert found
    return int(found.group(1).replace(",", ""))


def test_the_page_draws_the_map_offline(
    planted: Path, open_page: Callable[[str], Opened], tmp_path: Path
) -> None:
    found = explore(load_policies(tmp_path / "policies"), "p", NOW)
    opened = open_page(file_url(planted))
    page = opened.page
    assert page.title() == "Decision map: p"
    assert _status(opened) == found.regions
    for rule in found.rules:
        assert _count(opened, rule.rule) == rule.regions, rule.rule
    assert "dead" in page.locator("#unreached").inner_text()
    failures = page.locator("#failures li").all_inner_texts()
    assert failures
    assert all("fragile (index error" in text for text in failures)
    # The grid: a cell for every pair of values of the two axes the page chose.
    rows, columns = (page.locator(f"#{axis}").input_value() for axis in ("rows", "columns"))
    fields = list(found.dimensions)
    cells = len(found.dimensions[fields[int(rows)]]) * len(found.dimensions[fields[int(columns)]])
    assert page.locator("#grid td.cell").count() == cells
    # A params value that looks like markup is shown as text, never run.
    assert page.evaluate("window.pwned") is None
    assert HOSTILE in page.locator("#fields").inner_text()
    opened.assert_clean()


def test_a_value_clicked_keeps_only_its_requests(
    planted: Path, open_page: Callable[[str], Opened], tmp_path: Path
) -> None:
    found = explore(load_policies(tmp_path / "policies"), "p", NOW, table=True)
    assert found.table is not None
    fields = list(found.dimensions)
    known_via = fields.index("relationship.known_via")
    friend = found.dimensions["relationship.known_via"].index("friend")
    kept = [row for row in found.table if row[known_via] == friend]
    by_rule = {rule.rule: sum(row[-1] == i for row in kept) for i, rule in enumerate(found.rules)}
    assert by_rule["friend"]
    assert by_rule["acme"]

    opened = open_page(file_url(planted))
    page = opened.page
    page.locator(f'tr[data-field="relationship.known_via"][data-value="{friend}"]').click()
    assert _status(opened) == len(kept)
    assert {rule: _count(opened, rule) for rule in by_rule} == by_rule
    assert 'relationship.known_via = "friend"' in page.locator("#filters").inner_text()
    page.locator("#clear").click()
    assert _status(opened) == found.regions
    # A cell of the grid keeps the requests of its row and column.
    page.locator("#grid td.cell").first.click()
    assert page.locator("#filters button.chip[data-field]").count() == 2
    opened.assert_clean()
