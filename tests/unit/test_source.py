"""The YAML dialect and positions."""

from __future__ import annotations

import pytest

from service.policy.errors import PolicyError
from service.policy.source import format_path, parse_path, parse_source


def test_only_true_and_false_are_booleans_and_timestamps_stay_text() -> None:
    source = parse_source(
        b"a: no\nb: yes\nc: on\nd: true\ne: 2026-01-01T00:00:00Z\nf: False\n", "x.yaml"
    )
    assert source.data == {
        "a": "no",
        "b": "yes",
        "c": "on",
        "d": True,
        "e": "2026-01-01T00:00:00Z",
        "f": False,
    }


def test_merge_keys_work_and_duplicate_keys_are_errors() -> None:
    merged = parse_source(b"base: &b {x: 1, y: 2}\nuse: {<<: *b, y: 3}\n", "x.yaml")
    assert merged.data["use"] == {"x": 1, "y": 3}
    with pytest.raises(PolicyError) as caught:
        parse_source(b"a: 1\nb:\n  c: 1\n  c: 2\n", "x.yaml")
    assert [str(p) for p in caught.value.problems] == ["x.yaml:4:3: duplicate key `c`"]


def test_locate_finds_values_and_keys() -> None:
    source = parse_source(b"rules:\n  - id: a\n    when: 'x'\n", "x.yaml")
    assert source.locate(("rules", 0, "when")) == (3, 11)
    assert source.locate(("rules", 0), key="when") == (3, 5)
    assert source.locate(("rules", 5, "when")) == (2, 3)  # nearest existing ancestor
    assert source.locate_in_scalar(("rules", 0, "when"), 1, 1) == (3, 12)


@pytest.mark.parametrize("path", ["$", "$.rules[1].when", "$.reply.pt-BR", "$['a b'][0]"])
def test_paths_round_trip(path: str) -> None:
    assert format_path(parse_path(path)) == path
