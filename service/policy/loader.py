"""Policy directory -> compiled `PolicySet`. The only file I/O in the core.

A policy is `<dir>/<name>.yaml` (or `.yml`); `*_test.yaml` files beside them are test suites, and
directories whose names start with `.` are skipped. Every problem in every file is gathered
before anything is raised.
"""

from __future__ import annotations

import functools
import hashlib
import multiprocessing
import os
import re
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import msgspec

from service.policy.cel import forget
from service.policy.compiled import CompiledPolicy, FileState, PolicySet
from service.policy.compiler import compile_policy
from service.policy.engines import DEFAULT_ENGINE, get_engine
from service.policy.errors import PolicyError, Problem, did_you_mean, sorted_problems
from service.policy.model import DECISIONS, POLICY_NAME, RULE_LISTS, PolicyDocument, Rule
from service.policy.model import Outcome as DefaultOutcome
from service.policy.parts import Document, resolve
from service.policy.source import Source, parse_path, parse_source

__all__ = [
    "MIN_SHARE",
    "SUFFIXES",
    "SUITE_SUFFIXES",
    "Checked",
    "check_policies",
    "load_policies",
    "policy_files",
    "policy_name",
    "policy_names",
    "shares",
    "validate",
]

SUFFIXES = (".yaml", ".yml")
SUITE_SUFFIXES = tuple(f"_test{suffix}" for suffix in SUFFIXES)
OTHER_KINDS = frozenset({"WebhookSources"})  # documents in the directory that are not policies
T = TypeVar("T")
_AT = re.compile(r" - at `(\$[^`]*)`$")
_BAD_VALUE = re.compile(r"^Invalid enum value '([^']*)'$")
_ENUMS = (*DECISIONS, "skip", "default")
_UNKNOWN_FIELD = re.compile(r"^Object contains unknown field `([^`]*)`$")


def policy_files(directory: Path, *, suites: bool = False) -> list[Path]:
    """The policy files (or, with `suites`, the suite files) below `directory`, sorted."""
    return [directory / relative for relative in _relative_files(directory, suites)]


def _relative_files(directory: Path, suites: bool) -> list[str]:
    """`policy_files`, as paths relative to `directory` (`teams/sales.yaml`): no hidden files
    or folders, symlinked folders not followed, in the order of their parts. With os.scandir
    and strings: a reload lists every file, and pathlib cost 50 µs a file."""
    found: list[str] = []
    pending = [(str(directory), "")]
    while pending:
        folder, prefix = pending.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    pending.append((entry.path, f"{prefix}{entry.name}/"))
                elif entry.name.endswith(SUFFIXES) and entry.is_file():
                    found.append(prefix + entry.name)
    found = [relative for relative in found if relative.endswith(SUITE_SUFFIXES) == suites]
    return sorted(found, key=lambda relative: relative.split("/"))


def display(directory: Path, path: Path, label: str | None = None) -> str:
    """How a file is named in problems: below `label` when given (e.g. `main:policies`)."""
    return _shown(directory, path.relative_to(directory).as_posix(), label)


def _shown(directory: Path, relative: str, label: str | None) -> str:
    if label is not None:
        return f"{label}/{relative}"
    base = str(directory)
    return relative if base == "." else f"{base.rstrip('/')}/{relative}"


def load_policies(
    directory: Path,
    *,
    revision: str | None = None,
    label: str | None = None,
    engine: str = DEFAULT_ENGINE,
    compare_engines: bool = True,
    previous: PolicySet | None = None,
    only: Collection[str] | None = None,
) -> PolicySet:
    """Load and compile every policy below `directory`; raise `PolicyError` listing them all.

    `label` names the directory in problems instead of its path (e.g. a git revision's tree);
    `engine` is the CEL engine that will evaluate them (service/policy/engines);
    `compare_engines`: also warn where the other engine disagrees (`check` and `test` do; a
    server does not, so that it compiles each expression once, under the engine it serves);
    `previous`: a set loaded before (a reload's), whose policies are taken over unchanged
    where neither their file nor a base's changed: a reload compiles only what changed;
    `only`: compile just these policies (a share of `check_policies` on many cores, or what
    `HANDSHAKE_SERVE_ONLY` names); the bases they extend are read, not served.
    """
    cel_engine = get_engine(engine)
    only = None if only is None else frozenset(only)
    if not directory.is_dir():
        raise PolicyError(
            [Problem(file=label or str(directory), message="no such policy directory")]
        )
    files, digest, problems = _read(directory, label, previous.files if previous else {})
    contents = {name: file.state.content for name, file in files.items()}
    known = previous.policies if previous is not None else {}

    def key_of(name: str, extends: tuple[str, ...]) -> str | None:
        if any(n not in contents for n in (name, *extends)):
            return None
        return _key(engine, compare_engines, [contents[n] for n in (name, *extends)])

    # What neither changed nor extends what changed is taken over without reading its YAML.
    kept = {
        name: policy
        for name, policy in known.items()
        if name in files
        and (only is None or name in only)
        and policy.key == key_of(name, policy.extends)
    }
    documents: dict[str, Document] = {}
    pending = [n for n in files if n not in kept and (only is None or n in only)]
    while pending:  # each changed file, and the bases it extends (to resolve it)
        name = pending.pop()
        if name in documents or name not in files:
            continue
        document, found = _document(directory, files[name])
        problems.extend(found)
        if document is not None:
            documents[name] = document
            if document.document.extends is not None:
                pending.append(document.document.extends)
    documents = {name: documents[name] for name in files if name in documents}  # file order
    every_parts, found = resolve(documents, names=files)
    problems.extend(found)
    policies: dict[str, CompiledPolicy] = dict(kept)
    for policy in kept.values():
        problems.extend(policy.problems)  # the same files compile the same way
    for name, parts in every_parts.items():
        if name in kept or (only is not None and name not in only):
            continue
        compiled, found = compile_policy(parts, cel_engine, compare_engines=compare_engines)
        problems.extend(found)
        if compiled is not None:
            key = key_of(name, parts.extends) or ""
            policies[name] = replace(compiled, key=key, problems=tuple(found))
    policies = {name: policies[name] for name in files if name in policies}  # file order
    for name in every_parts.keys() - kept.keys():
        for program in policies[name].programs() if name in policies else ():
            program.expression.release()  # checked and compiled: the text is what stays
    forget()  # what this load worked out per text (cel/memo.py)
    problems.sort(key=lambda p: (p.file, p.line, p.column))  # stable: by file, then line
    if any(p.severity == "error" for p in problems):
        raise PolicyError(problems)
    return PolicySet(
        policies=policies,
        digest=f"sha256:{digest.hexdigest()}",
        revision=revision,
        engine=engine,
        warnings=tuple(problems),
        files={file.relative: file.state for file in files.values()},
    )


@dataclass(frozen=True, slots=True)
class _File:
    relative: str
    shown: str  # as problems name it
    state: FileState
    raw: bytes | None  # None: not read (unchanged), read when a changed policy extends it


@dataclass(frozen=True)
class Checked:
    """What `check` needs of a directory once every policy compiled: their names (in file
    order) and the warnings."""

    names: tuple[str, ...]
    warnings: tuple[Problem, ...]


MIN_SHARE = 32  # policies a process must have to be worth starting


def check_policies(
    directory: Path, *, label: str | None = None, engine: str = DEFAULT_ENGINE, jobs: int = 1
) -> Checked:
    """Compile and check every policy below `directory`, comparing the engines, on up to
    `jobs` processes; raise `PolicyError` with every problem, in file order, as
    `load_policies` does. Each process compiles a share of the policies (reading the bases
    they extend); what all of them find (a file's YAML, a name) is reported once."""
    if not directory.is_dir():
        raise PolicyError(
            [Problem(file=label or str(directory), message="no such policy directory")]
        )
    names = policy_names(directory)
    parts = shares(names, jobs)
    work = functools.partial(_check_share, directory, label, engine)
    if len(parts) == 1:
        found = [work(None)]
    else:
        # fork: the workers start with what this process imported (it runs no threads)
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(len(parts), mp_context=context) as pool:
            found = list(pool.map(work, parts))
    compiled = {name for share, _ in found for name in share}
    problems = sorted_problems(p for _, share_problems in found for p in share_problems)
    if any(p.severity == "error" for p in problems):
        raise PolicyError(problems)
    return Checked(tuple(n for n in names if n in compiled), tuple(problems))


def shares(names: list[str], jobs: int) -> list[list[str] | None]:
    """`names` dealt out to at most `jobs` processes of MIN_SHARE or more each; [None] (all
    of them, in this process) when that is one."""
    count = max(1, min(jobs, len(names) // MIN_SHARE))
    return [None] if count == 1 else [names[index::count] for index in range(count)]


def _check_share(
    directory: Path, label: str | None, engine: str, share: list[str] | None
) -> tuple[list[str], list[Problem]]:
    """One process's share of `check_policies`: the policies that compiled, and problems."""
    try:
        policy_set = load_policies(directory, label=label, engine=engine, only=share)
    except PolicyError as exc:
        return [], list(exc.problems)
    return list(policy_set.policies), list(policy_set.warnings)


def policy_names(directory: Path) -> list[str]:
    """The name of every policy file below `directory`, in file order."""
    return [_name(relative) for relative in _relative_files(directory, False)]


def policy_name(directory: Path, path: Path) -> str:
    """The name of the policy in file `path` below `directory`."""
    return _name(path.relative_to(directory).as_posix())


def _name(relative: str) -> str:
    return relative[: relative.rindex(".")]  # without .yaml or .yml


def _read(
    directory: Path, label: str | None, known: Mapping[str, FileState]
) -> tuple[dict[str, _File], Any, list[Problem]]:
    """Every policy file by name, the digest of them all, and naming problems. A file is read
    unless `known` (what the load before knew) has it settled with the same signature: a
    reload of a large directory reads what changed only (each read is three system calls,
    and after each the reload waits for the GIL while requests are being served)."""
    problems: list[Problem] = []
    files: dict[str, _File] = {}
    digest = hashlib.sha256()  # over each file's path and content digest, in order
    started = time.time_ns()
    for relative in _relative_files(directory, False):
        name = _name(relative)
        shown = _shown(directory, relative, label)
        if not POLICY_NAME.match(name):
            message = f"policy name `{name}` may use only A-Z a-z 0-9 . _ -"
            problems.append(Problem(file=shown, message=message))
            continue
        if name in files:
            message = (
                f"policy `{name}` is also defined by `{files[name].shown}`: keep one of the two"
            )
            problems.append(Problem(file=shown, message=message))
            continue
        path = _path(directory, relative)
        try:
            stat = os.stat(path)  # noqa: PTH116  (strings: see _relative_files)
            state, raw = known.get(relative), None
            if state is None or not state.settled or state.signature != _signature(stat):
                raw = _raw(path)
                state = _state(raw, shown, stat, started)
        except OSError as exc:
            problems.append(Problem(file=shown, message=f"cannot read: {exc.strerror}"))
            continue
        digest.update(f"{relative}\0".encode() + state.digest)
        files[name] = _File(relative, shown, state, raw)
    return files, digest, problems


# A file changed this close to being read may change again with the same signature (times
# have the kernel's tick, not nanoseconds): it is read again by the next load.
SETTLE_NS = 2_000_000_000


def _state(raw: bytes, shown: str, stat: os.stat_result, started: int) -> FileState:
    """What a load knows of a file it read (`stat` taken before reading it)."""
    return FileState(
        signature=_signature(stat),
        settled=max(stat.st_mtime_ns, stat.st_ctime_ns) < started - SETTLE_NS,
        digest=hashlib.sha256(raw).digest(),
        content=hashlib.sha256(f"{shown}\0".encode() + raw).digest(),
    )


def _signature(stat: os.stat_result) -> tuple[int, ...]:
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def _path(directory: Path, relative: str) -> str:
    return os.path.join(directory, relative)  # noqa: PTH118  (strings: see _relative_files)


def _raw(path: str) -> bytes:
    with open(path, "rb") as file:  # noqa: PTH123  (strings: see _relative_files)
        return file.read()


def _document(directory: Path, file: _File) -> tuple[Document | None, list[Problem]]:
    """The file parsed and validated (None: not a policy, or nothing worth compiling)."""
    try:
        raw = file.raw if file.raw is not None else _raw(_path(directory, file.relative))
        source = parse_source(raw, file.shown, file.relative)
    except OSError as exc:
        return None, [Problem(file=file.shown, message=f"cannot read: {exc.strerror}")]
    except PolicyError as exc:
        return None, list(exc.problems)
    if isinstance(source.data, dict) and source.data.get("kind") in OTHER_KINDS:
        return None, []  # e.g. webhook sources: kept beside the policies, loaded elsewhere
    document, found = validate(source, PolicyDocument)
    if document is not None:
        return Document(source, document), found
    return _salvage(source), found  # compile the valid parts, to report their problems


def _key(engine: str, compare_engines: bool, files: list[bytes]) -> str:
    """What a compiled policy depends on: its file and its bases' (content and the name shown
    in problems), the engine, and whether the engines were compared."""
    hasher = hashlib.sha256(f"{engine}\0{compare_engines}\0".encode())
    for file in files:
        hasher.update(file)
    return hasher.hexdigest()


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
        whole = _schema_problem(source, str(exc), (), kind)
    if parts is None and kind is PolicyDocument:
        parts = _policy_parts
    problems = []
    if parts is not None and isinstance(source.data, dict):
        for prefix, data, part_kind in parts(source.data):
            try:
                msgspec.convert(data, part_kind)
            except msgspec.ValidationError as exc:
                problems.append(_schema_problem(source, str(exc), prefix, kind))
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


def _schema_problem(
    source: Source, message: str, prefix: tuple[str | int, ...], kind: Any = None
) -> Problem:
    path = prefix
    if match := _AT.search(message):
        path = (*prefix, *parse_path(match.group(1)))
        message = message[: match.start()]
    key = None
    if match := _BAD_VALUE.match(message):
        message = _invalid_value(match.group(1), _allowed_values(kind, path))
    elif match := _UNKNOWN_FIELD.match(message):
        key = match.group(1)
        known = _keys_at(kind, path) or _KNOWN_KEYS
        message = f"unknown field `{key}`{did_you_mean(key, known)}"
    message = message[:1].lower() + message[1:]
    return source.problem(path, message, key=key)


def _invalid_value(value: str, allowed: Sequence[str]) -> str:
    """`invalid value `acept` (one of `accept`, …); did you mean `accept`?`: what may be
    written there, and the closest."""
    if len(allowed) == 1:
        return f"invalid value `{value}` (must be `{allowed[0]}`)"
    listed = f" (one of {', '.join(f'`{a}`' for a in allowed)})" if allowed else ""
    return f"invalid value `{value}`{listed}{did_you_mean(value, allowed or _ENUMS)}"


def _allowed_values(kind: Any, path: Sequence[str | int]) -> tuple[str, ...]:
    """The values a `Literal` allows at `path` in a document of type `kind` (a Struct), in
    the order it declares them; () when there is none there."""
    for found in _types_at(kind, path):
        if get_origin(found) is Literal:
            return tuple(str(value) for value in get_args(found))
    return ()


def _keys_at(kind: Any, path: Sequence[str | int]) -> set[str]:
    """The keys the Struct(s) at `path` in a document of type `kind` have."""
    return {
        field.encode_name
        for found in _types_at(kind, path)
        if isinstance(found, type) and issubclass(found, msgspec.Struct)
        for field in msgspec.structs.fields(found)
    }


def _types_at(kind: Any, path: Sequence[str | int]) -> Iterator[Any]:
    """The types a document of type `kind` may have at `path` (each side of a union)."""
    if get_origin(kind) is Annotated:
        kind = get_args(kind)[0]
    origin, args = get_origin(kind), get_args(kind)
    if origin in (Union, UnionType):
        for alternative in args:
            yield from _types_at(alternative, path)
        return
    if not path:
        yield kind
        return
    segment, rest = path[0], path[1:]
    if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
        for field in msgspec.structs.fields(kind):
            if field.encode_name == segment:
                yield from _types_at(field.type, rest)
    elif origin is list and isinstance(segment, int):
        yield from _types_at(args[0], rest)
    elif origin is dict and isinstance(segment, str):
        yield from _types_at(args[1], rest)


_KNOWN_KEYS = {
    f.encode_name for struct in (PolicyDocument, Rule) for f in msgspec.structs.fields(struct)
}
