"""A reload compiles only what changed: policies whose file and bases are unchanged are taken
over from the set in force, as they are (service/policy/loader.py, `previous`)."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from service.policy import PolicyError, evaluate, load_policies, loader
from service.policy.request import decode_request
from tests.conftest import POLICIES

NOW = datetime(2026, 11, 22, 9, tzinfo=UTC)
SAMPLES = sorted((POLICIES.parent / "examples" / "requests").glob("*.json"))


def copy(tmp_path: Path) -> Path:
    tree = tmp_path / "policies"
    shutil.copytree(POLICIES, tree)
    return tree


def test_an_unchanged_directory_compiles_nothing_again(tmp_path: Path) -> None:
    tree = copy(tmp_path)
    first = load_policies(tree)
    second = load_policies(tree, previous=first)
    assert second.policies.keys() == first.policies.keys()
    assert all(second.policies[n] is first.policies[n] for n in first.policies)
    assert second.warnings == first.warnings


def test_an_edit_compiles_the_file_and_what_extends_it_and_nothing_else(tmp_path: Path) -> None:
    tree = copy(tmp_path)
    first = load_policies(tree)
    base = tree / "examples" / "my-field.yaml"  # examples/team-sales extends it
    base.write_text(base.read_text().replace("kind, honest no", "kind and honest no"))
    assert "kind and honest no" in base.read_text()  # the edit changed the file
    second = load_policies(tree, previous=first)
    changed = {n for n in first.policies if second.policies[n] is not first.policies[n]}
    assert changed == {"examples/my-field", "examples/team-sales"}
    fresh = load_policies(tree)
    assert second.digest == fresh.digest
    assert second.warnings == fresh.warnings
    for sample in SAMPLES:
        request = decode_request(sample.read_bytes())
        for name in fresh.policies:
            a = evaluate(second, name, request, now=NOW)
            b = evaluate(fresh, name, request, now=NOW)
            assert msgspec.to_builtins(a) == msgspec.to_builtins(b), name


def test_another_engine_or_comparison_compiles_everything(tmp_path: Path) -> None:
    tree = copy(tmp_path)
    first = load_policies(tree, engine="cel-expr-python", compare_engines=False)
    for kwargs in ({"engine": "cel-python", "compare_engines": False}, {"compare_engines": True}):
        again = load_policies(tree, previous=first, **kwargs)  # type: ignore[arg-type]
        assert not any(again.policies[n] is first.policies[n] for n in first.policies)


def test_what_is_taken_over_is_not_even_read_as_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = copy(tmp_path)
    first = load_policies(tree)
    base = tree / "examples" / "my-field.yaml"
    base.write_text(base.read_text() + "# edited\n")
    parsed: list[str] = []
    real = loader.parse_source

    def counted(raw: bytes, shown: str, relative: str) -> Any:
        parsed.append(relative)
        return real(raw, shown, relative)

    monkeypatch.setattr(loader, "parse_source", counted)
    load_policies(tree, previous=first)
    # The edited base, what extends it, and the webhook sources (not a policy: never kept).
    assert sorted(parsed) == ["examples/my-field.yaml", "examples/team-sales.yaml", "webhooks.yaml"]


def test_a_deleted_base_fails_what_extends_it(tmp_path: Path) -> None:
    tree = copy(tmp_path)
    first = load_policies(tree)
    (tree / "examples" / "my-field.yaml").unlink()
    for suite in tree.rglob("my-field_test.yaml"):
        suite.unlink()
    with pytest.raises(PolicyError) as failed:
        load_policies(tree, previous=first)
    assert [p.message for p in failed.value.problems if p.severity == "error"] == [
        "unknown base policy `examples/my-field`"
    ]


def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files a load reads from now on."""
    read: list[str] = []
    real = loader._raw

    def counted(path: str) -> bytes:
        read.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(loader, "_raw", counted)
    return read


def test_a_reload_reads_only_what_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "SETTLE_NS", -(10**18))  # files written just now count as settled
    tree = copy(tmp_path)
    first = load_policies(tree)
    read = reads(monkeypatch)
    assert load_policies(tree, previous=first).digest == first.digest
    assert read == ["webhooks.yaml"]  # not a policy: never kept, so parsed on every load
    read.clear()
    base = tree / "examples" / "my-field.yaml"
    base.write_text(base.read_text() + "# edited\n")
    second = load_policies(tree, previous=first)
    assert sorted(read) == ["my-field.yaml", "team-sales.yaml", "webhooks.yaml"]  # it, and
    assert second.digest == load_policies(tree).digest != first.digest  # what extends it


def test_a_same_size_edit_with_its_old_time_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As `cp -p` or `rsync -a` leave a file: the change time still tells."""
    monkeypatch.setattr(loader, "SETTLE_NS", -(10**18))
    tree = copy(tmp_path)
    first = load_policies(tree)
    base = tree / "examples" / "my-field.yaml"
    before = base.stat()
    text = base.read_text()
    base.write_text(text.replace("kind, honest no", "kind, honest NO"))
    os.utime(base, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (base.stat().st_size, base.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    second = load_policies(tree, previous=first)
    assert second.digest == load_policies(tree).digest != first.digest


def test_a_file_changed_just_before_a_load_is_read_by_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Times have the kernel's tick: a file changed just before it was read could change
    again unseen, so it is read again until it has settled."""
    tree = copy(tmp_path)
    first = load_policies(tree)  # every file was written just now
    read = reads(monkeypatch)
    load_policies(tree, previous=first)
    assert len(read) == len(list(tree.rglob("*.yaml"))) - len(list(tree.rglob("*_test.yaml")))
