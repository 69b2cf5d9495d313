"""Policy directory -> compiled `PolicySet`. The only file I/O in the core.

A policy is `<dir>/<name>.yaml` (or `.yml`); `*_test.yaml` files beside them are test suites, and
directories whose names start with `.` are skipped. Every problem in every file is gathered
before anything is raised.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from service.policy.compiled import CompiledPolicy, PolicySet
from service.policy.compiler import compile_policy
from service.policy.engines import DEFAULT_ENGINE, get_engine
from service.policy.errors import PolicyError, Problem, did_you_mean
from service.policy.model import DECISIONS, POLICY_NAME, RULE_LISTS, PolicyDocument, Rule
from service.policy.model import Outcome as DefaultOutcome
from service.policy.parts import Document, resolve
from service.policy.source import Source, parse_path, parse_source

__all__ = ["SUFFIXES", "SUITE_SUFFIXES", "load_policies", "policy_files", "validate"]

SUFFIXES = (".yaml", ".yml")
SUITE_SUFFIXES = tuple(f"_test{suffix}" for suffix in SUFFIXES)
OTHER_KINDS = frozenset({"WebhookSources"})  # documents in the directory that are not policies
T = TypeVar("T")
_AT = re.compile(r" - at `(\$[^`]*)`$")
_BAD_VALUE = re.compile(r"^Invalid enum value '([^']*)'$")
_ENUMS = (*DECISIONS, "skip", "default")
_ALLOWED = {
    "decision": DECISIONS,
    "on_error": ("skip", "default"),
    "apiVersion": ("handshake/v1",),
    "kind": ("ConnectionPolicy",),
}
_UNKNOWN_FIELD = re.compile(r"^Object contains unknown field `([^`]*)`$")


def policy_files(directory: Path, *, suites: bool = False) -> list[Path]:
    """The policy files (or, with `suites`, the suite files) below `directory`, sorted."""
    found = []
    for path in sorted(p for p in directory.rglob("*") if p.suffix in SUFFIXES):
        relative = path.relative_to(directory)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        if path.name.endswith(SUITE_SUFFIXES) == suites:
            found.append(path)
    return found


def display(directory: Path, path: Path, label: str | None = None) -> str:
    """How a file is named in problems: below `label` when given (e.g. `main:policies`)."""
    if label is not None:
        return f"{label}/{path.relative_to(directory).as_posix()}"
    return str(directory / path.relative_to(directory))


def load_policies(
    directory: Path,
    *,
    revision: str | None = None,
    label: str | None = None,
    engine: str = DEFAULT_ENGINE,
    compare_engines: bool = True,
) -> PolicySet:
    """Load and compile every policy below `directory`; raise `PolicyError` listing them all.

    `label` names the directory in problems instead of its path (e.g. a git revision's tree);
    `engine` is the CEL engine that will evaluate them (service/policy/engines);
    `compare_engines`: also warn where the other engine disagrees (`check` and `test` do; a
    server does not, so that it compiles each expression once, under the engine it serves).
    """
    cel_engine = get_engine(engine)
    if not directory.is_dir():
        raise PolicyError(
            [Problem(file=label or str(directory), message="no such policy directory")]
        )
    problems: list[Problem] = []
    documents: dict[str, Document] = {}
    digest = hashlib.sha256()
    files: dict[str, str] = {}  # policy name -> the file that defines it
    for path in policy_files(directory):
        relative = path.relative_to(directory).as_posix()
        name = relative.removesuffix(path.suffix)
        shown = display(directory, path, label)
        if not POLICY_NAME.match(name):
            problems.append(
                Problem(file=shown, message=f"policy name `{name}` may use only A-Z a-z 0-9 . _ -")
            )
            continue
        if name in files:
            message = f"policy `{name}` is also defined by `{files[name]}`: keep one of the two"
            problems.append(Problem(file=shown, message=message))
            continue
        files[name] = shown
        try:
            raw = path.read_bytes()
            digest.update(f"{relative}\0{len(raw)}\0".encode() + raw)
            source = parse_source(raw, shown, relative)
        except OSError as exc:
            problems.append(Problem(file=shown, message=f"cannot read: {exc.strerror}"))
            continue
        except PolicyError as exc:
            problems.extend(exc.problems)
            continue
        if isinstance(source.data, dict) and source.data.get("kind") in OTHER_KINDS:
            continue  # e.g. webhook sources: kept beside the policies, loaded elsewhere
        document, found = validate(source, PolicyDocument)
        problems.extend(found)
        if document is not None:
            documents[name] = Document(source, document)
        elif salvaged := _salvage(source):  # compile the valid parts, to report their problems
            documents[name] = salvaged
    every_parts, found = resolve(documents)
    problems.extend(found)
    policies: dict[str, CompiledPolicy] = {}
    for name, parts in every_parts.items():
        policy, found = compile_policy(parts, cel_engine, compare_engines=compare_engines)
        problems.extend(found)
        if policy is not None:
            policies[name] = policy
    if any(p.severity == "error" for p in problems):
        raise PolicyError(problems)
    return PolicySet(
        policies=policies,
        digest=f"sha256:{digest.hexdigest()}",
        revision=revision,
        engine=engine,
        warnings=tuple(problems),
    )


Part = tuple[tuple[str | int, ...], Any, type]


def validate(
    source: Source, kind: type[T], parts: Callable[[dict[str, Any]], list[Part]] | None = None
) -> tuple[T | None, list[Problem]]:
    """Convert a parsed document to `kind`, gathering every problem.

    msgspec stops at the first error; `parts` names pieces (path, data, type) to validate one
    by one, so that each invalid rule (or webhook source) is reported.
    """
    try:
        return msgspec.convert(source.data, kind), []
    except msgspec.ValidationError as exc:
        whole = _schema_problem(source, str(exc), ())
    if parts is None and kind is PolicyDocument:
        parts = _policy_parts
    problems = []
    if parts is not None and isinstance(source.data, dict):
        for prefix, data, part_kind in parts(source.data):
            try:
                msgspec.convert(data, part_kind)
            except msgspec.ValidationError as exc:
                problems.append(_schema_problem(source, str(exc), prefix))
    if not problems or "..." not in whole.path:  # msgspec writes `[...]` for a key it cannot name
        problems.insert(0, whole)
    return None, problems


def _policy_parts(data: dict[str, Any]) -> list[Part]:
    parts: list[Part] = []
    for key in RULE_LISTS:
        rules = data.get(key)
        if isinstance(rules, list):
            parts += [((key, i), rule, Rule) for i, rule in enumerate(rules)]
    if isinstance(data.get("default"), dict):
        parts.append((("default",), data["default"], DefaultOutcome))
    return parts


def _salvage(source: Source) -> Document | None:
    """The document without its invalid rules, with the file index of each kept rule."""
    data = source.data
    if not isinstance(data, dict):
        return None
    kept: dict[str, list[int]] = {}
    for key in RULE_LISTS:
        rules = data.get(key, [])
        if not isinstance(rules, list):
            return None
        kept[key] = [i for i, rule in enumerate(rules) if _valid(rule, Rule)]
    lists = {key: [data[key][i] for i in indices] for key, indices in kept.items() if key in data}
    try:
        salvaged = msgspec.convert({**data, **lists}, PolicyDocument)
    except msgspec.ValidationError:
        return None
    return Document(source, salvaged, rule_indices=kept)


def _valid(data: Any, kind: type) -> bool:
    try:
        msgspec.convert(data, kind)
    except msgspec.ValidationError:
        return False
    return True


def _schema_problem(source: Source, message: str, prefix: tuple[str | int, ...]) -> Problem:
    path = prefix
    if match := _AT.search(message):
        path = (*prefix, *parse_path(match.group(1)))
        message = message[: match.start()]
    key = None
    if match := _BAD_VALUE.match(message):
        allowed = _ALLOWED.get(str(path[-1]) if path else "")
        hint = did_you_mean(match.group(1), allowed or _ENUMS)
        if allowed and not hint:
            hint = "; one of " + ", ".join(f"`{value}`" for value in allowed)
        message = f"invalid value `{match.group(1)}`{hint}"
    elif match := _UNKNOWN_FIELD.match(message):
        key = match.group(1)
        message = f"unknown field `{key}`{did_you_mean(key, _KNOWN_KEYS)}"
    message = message[:1].lower() + message[1:]
    return source.problem(path, message, key=key)


_KNOWN_KEYS = {
    f.encode_name for struct in (PolicyDocument, Rule) for f in msgspec.structs.fields(struct)
}
