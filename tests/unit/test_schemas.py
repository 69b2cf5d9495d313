"""The JSON Schemas editors validate YAML with (`handshake schema`, committed under schemas/):
generated from the msgspec Structs, kept in step with them, and true to what loads."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest

from service.cli import EDITOR_SCHEMAS, SCHEMAS, main, schema_text
from service.policy.source import read_source
from tests.conftest import MINIMAL_POLICY, POLICIES

COMMITTED = POLICIES.parent / "schemas"
Validator = jsonschema.Draft7Validator  # what yaml-language-server (VS Code's YAML) speaks


def schema(what: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((COMMITTED / f"{what}.schema.json").read_text())
    return loaded


def kind_of(path: Path) -> str:
    if path.name == "webhooks.yaml":
        return "webhooks"
    return "suite" if path.name.endswith("_test.yaml") else "policy"


def errors(what: str, data: Any) -> list[str]:
    """Every error's message, and those of the alternatives an `anyOf` tried."""
    pending = list(Validator(schema(what)).iter_errors(data))
    found = []
    while pending:
        error = pending.pop()
        found.append(error.message)
        pending.extend(error.context or ())
    return found


@pytest.mark.parametrize("what", EDITOR_SCHEMAS)
def test_the_committed_schema_is_what_handshake_schema_prints(
    capsys: pytest.CaptureFixture[str], what: str
) -> None:
    assert main(["schema", what]) == 0
    printed = capsys.readouterr().out
    assert (COMMITTED / f"{what}.schema.json").read_text(encoding="utf-8") == printed, (
        f"schemas/{what}.schema.json is out of date: run `handshake schema --write`"
    )


def test_schema_check_finds_a_stale_copy_and_write_mends_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    copy = tmp_path / "schemas"
    shutil.copytree(COMMITTED, copy)
    assert main(["schema", "--check", "--dir", str(copy)]) == 0
    stale = copy / "suite.schema.json"
    stale.write_text(stale.read_text().replace('"cases"', '"examples"', 1))
    capsys.readouterr()
    assert main(["schema", "--check", "--dir", str(copy)]) == 1
    assert capsys.readouterr().err == (f"{stale}: out of date: run `handshake schema --write`\n")
    assert main(["schema", "--write", "--dir", str(copy)]) == 0
    assert capsys.readouterr().out == f"wrote {stale}\n"  # only what changed
    assert stale.read_text() == schema_text("suite")


@pytest.mark.parametrize("what", SCHEMAS)
def test_every_schema_is_draft_7_and_generated_from_its_struct(what: str) -> None:
    printed = json.loads(schema_text(what))
    Validator.check_schema(printed)
    assert printed["$schema"] == "http://json-schema.org/draft-07/schema#"
    generated = msgspec.json.schema(SCHEMAS[what])
    assert printed["$ref"] == generated["$ref"]
    assert printed["$defs"].keys() == generated["$defs"].keys()
    # nothing a draft 7 validator (yaml-language-server's) would skip without a word
    assert not set(keywords(printed)) & {
        "prefixItems", "dependentRequired", "dependentSchemas", "unevaluatedProperties",
        "unevaluatedItems", "$dynamicRef", "$anchor", "minContains", "maxContains",
    }  # fmt: skip


def keywords(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            if key not in ("properties", "$defs"):
                yield from keywords(value)
            else:
                for child in value.values():
                    yield from keywords(child)
    elif isinstance(node, list):
        for item in node:
            yield from keywords(item)


def test_the_bundled_files_are_valid_under_their_schemas() -> None:
    """Validated as an editor sees them (YAML read as our loader reads it: merge keys
    resolved, timestamps as text) with the `jsonschema` library."""
    files = sorted(POLICIES.rglob("*.yaml"))
    kinds = [kind_of(path) for path in files]
    assert (kinds.count("policy"), kinds.count("suite"), kinds.count("webhooks")) == (10, 10, 1)
    for path, what in zip(files, kinds, strict=True):
        data = read_source(path, str(path)).data
        assert errors(what, data) == [], path


@pytest.mark.parametrize(
    ("what", "text", "message"),
    [
        (
            "policy",
            MINIMAL_POLICY.replace("ignore", "ignor"),
            "'ignor' is not one of ['accept', 'decline', 'defer', 'ignore']",
        ),
        ("policy", MINIMAL_POLICY + "rule: []\n", "Additional properties are not allowed"),
        (
            "suite",
            "policy: p\ncases:\n  - name: c\n    request: {requester: {name: A}, "
            "recipient: {name: B, has_photo: true}}\n    expect: {}\n",
            "'has_photo' is a required property",
        ),
        ("suite", "policy: p\ncases: []\nexpected: {}\n", "Additional properties are not allowed"),
        (
            "webhooks",
            "apiVersion: handshake/v1\nkind: WebhookSources\nsources:\n"
            "  crm: {scheme: githb, secrets: [{env: S}], mapping: {}}\n",
            "'githb' is not one of ['github', 'standard-webhooks']",
        ),
        (
            "webhooks",
            "apiVersion: handshake/v1\nkind: WebhookSources\nsources:\n"
            "  Crm: {scheme: github, secrets: [{env: S}], mapping: {}}\n",
            "'Crm' does not match",
        ),
    ],
)
def test_the_schemas_refuse_what_does_not_load(what: str, text: str, message: str) -> None:
    data = msgspec.yaml.decode(text)
    found = errors(what, data)
    assert found
    assert any(message in error for error in found), found
    with pytest.raises(msgspec.ValidationError):  # and neither does the Struct
        msgspec.convert(data, SCHEMAS[what])


def test_what_init_writes_is_valid_under_the_schemas_its_first_lines_name(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["init", str(tmp_path), "--name", "team"]) == 0
    for name, what in (("team.yaml", "policy"), ("team_test.yaml", "suite")):
        path = tmp_path / name
        first = path.read_text().splitlines()[0]
        referenced = path.parent / first.removeprefix("# yaml-language-server: $schema=")
        assert referenced.resolve() == (tmp_path / "schemas" / f"{what}.schema.json").resolve()
        named = json.loads(referenced.read_text())
        assert list(Validator(named).iter_errors(read_source(path, name).data)) == []


def test_init_in_a_repository_points_at_its_schemas(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A policy directory below a repository that has schemas/ (as this one does) points there
    and writes none of its own."""
    (tmp_path / ".git").mkdir()
    shutil.copytree(COMMITTED, tmp_path / "schemas")
    assert main(["init", str(tmp_path / "policies"), "--name", "teams/sales"]) == 0
    out = capsys.readouterr().out
    assert "schema.json" not in out
    first = (tmp_path / "policies" / "teams" / "sales.yaml").read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=../../schemas/policy.schema.json"
    assert not (tmp_path / "policies" / "schemas").exists()
