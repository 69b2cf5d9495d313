"""The `handshake` command line (also `python -m service`).

Exit codes: 0 success; 1 problems found (check) or cases failed (test); 2 bad usage or input.
Every error is one line, `file:line:column: message` where a position is known; never a
traceback.
"""

from __future__ import annotations

import argparse
import ast
import functools
import inspect
import itertools
import multiprocessing
import os
import socket
import sys
import textwrap
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn, TextIO
from xml.etree import ElementTree

import msgspec

from service import __version__
from service.diff import DiffError, diff
from service.pages import page
from service.policy import (
    ConnectionRequest,
    PolicyError,
    PolicySet,
    Problem,
    UnknownPolicyError,
    evaluate,
    load_policies,
)
from service.policy.coverage import PolicyCoverage, measure
from service.policy.decision import Decision
from service.policy.decision_map import MAX_REGIONS, explore
from service.policy.engines import DEFAULT_ENGINE, ENGINES
from service.policy.errors import sorted_problems
from service.policy.loader import (
    check_policies,
    policy_files,
    policy_name,
    policy_names,
    shares,
)
from service.policy.model import POLICY_NAME, PolicyDocument
from service.policy.request import InputError, Timestamp, check_timestamps, decode_request
from service.policy.suite import Suite, load_suites, run_case
from service.revision import git, policy_revision
from service.settings import CHOICES, PREFIX, Settings, SettingsError, load_settings
from service.webhook_sources import Webhooks, WebhooksDocument, load_webhooks

__all__ = ["main"]

OPENAPI = Path("openapi/openapi.yaml")
SCHEMAS: dict[str, type] = {
    "policy": PolicyDocument,
    "suite": Suite,
    "webhooks": WebhooksDocument,
    "request": ConnectionRequest,
    "decision": Decision,
}
# What editors validate YAML files with: committed under schemas/ as <name>.schema.json.
EDITOR_SCHEMAS = ("policy", "suite", "webhooks")
SCHEMA_DIR = Path("schemas")
# yaml-language-server (VS Code's YAML extension and other editors) validates with draft 7;
# msgspec writes nothing a draft 7 validator does not know (tests/unit/test_schemas.py).
JSON_SCHEMA_DIALECT = "http://json-schema.org/draft-07/schema#"


class CommandError(Exception):
    """A one-line error for the terminal; exit code 2."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except CommandError as exc:
        print(f"handshake: error: {exc}", file=sys.stderr)
        return 2
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (e.g. `| head`); nothing more to say
        return 1


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose epilog may be worked out only when help is shown (`serve`'s
    settings are read from service/settings.py's source)."""

    epilog_factory: Callable[[], str] | None = None

    def format_help(self) -> str:
        if self.epilog_factory is not None:
            self.epilog = self.epilog_factory()
        return super().format_help()


_HELP = argparse.RawDescriptionHelpFormatter
_PROGRAM_EPILOG = """\
examples:
  handshake check policies          every problem, one a line: file:line:column
  handshake test policies           run the *_test.yaml suites, both engines
  handshake eval default --input examples/requests/stranger.json --explain
  handshake init ../team-policies --name sales
  handshake serve --help            the HTTP service, its HANDSHAKE_* settings

The policy directory is DIR, else --policies DIR, else $HANDSHAKE_POLICIES,
else ./policies.

exit codes: 0 success; 1 problems found, a case failed, or (diff) a decision
changed; 2 bad usage or input, or policies that do not load; 130 interrupted.
`handshake COMMAND --help` shows a command's examples and exit codes.
"""
_EPILOGS = {
    "check": """\
examples:
  handshake check policies
  handshake check --strict policies   warnings fail, and policies no suite names

exit codes: 0 no errors (warnings allowed unless --strict); 1 problems, one a
line as file:line:column: $.path: message; 2 bad usage or settings
""",
    "test": """\
examples:
  handshake test policies
  handshake test policies --filter recruiter -v
  handshake test policies --coverage --min-coverage 90
  handshake test policies --format junit > report.xml

exit codes: 0 every case passed; 1 a case failed, no case ran, or coverage is
below --min-coverage; 2 the policies or suites do not load
""",
    "map": """\
examples:
  handshake map default
  handshake map default --format html > default-map.html

exit codes: 0 the map is printed; 2 an unknown policy, or policies that do not
load
""",
    "eval": """\
examples:
  handshake eval default --input examples/requests/stranger.json --explain
  handshake eval default --input - --locale de < request.json

The request is a connection request as JSON (handshake schema request prints
its schema), read from FILE, or from standard input when FILE is -.

exit codes: 0 the decision is printed; 2 no or bad input, an unknown policy,
or policies that do not load
""",
    "diff": """\
examples:
  handshake diff main               what the work tree changes, against main
  handshake diff main~1 main --format json
  handshake diff main --requests captured.jsonl

Run it in a git work tree: the policy directory (--policies DIR, else
$HANDSHAKE_POLICIES, else ./policies) is read at both revisions.

exit codes: 0 no decision changed; 1 some changed; 2 an error (no policy
directory, not a git work tree, an unknown revision, policies that do not load)
""",
    "init": """\
examples:
  handshake init policies --name sales/emea
  handshake init ../team-policies --name sales

It writes DIR/NAME.yaml and DIR/NAME_test.yaml, each starting with a line
`# yaml-language-server: $schema=...` that points editors at its JSON Schema,
in the repository's schemas/ folder (written there when it has none).

exit codes: 0 written; 2 a file exists already (nothing is written), or NAME
is not a policy name
""",
    "playground": """\
examples:
  handshake playground default
  handshake playground teams/sales --policies ../team-policies --port 8090

It serves a page on 127.0.0.1 (only): the policy and a request side by side; as
you type, check's problems at their lines, or the decision, its trace and the
reply in each locale. The policy is edited in a scratch copy of the policy
directory (so `extends` finds its bases): copy it back into your file when done.

exit codes: 0 stopped (Ctrl-C); 2 POLICY is not a policy name, no such policy
directory, or the port is in use
""",
    "openapi": """\
exit codes: 0 written (with --check: up to date); 1 with --check, FILE differs
""",
    "schema": """\
examples:
  handshake schema policy > policy.schema.json
  handshake schema --write          write schemas/: policy, suite, webhooks
  handshake schema --check          exit 1 when those differ from this version's

Editors read them from a first line `# yaml-language-server: $schema=<path>`
(handshake init writes it), or from VS Code's `yaml.schemas` setting
(docs/policy-language.md, "Editors").

exit codes: 0 printed (with --check: up to date); 1 with --check, a file differs
""",
}


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="handshake",
        description="Connection policies as code: check, test and evaluate policies.",
        epilog=_PROGRAM_EPILOG,
        formatter_class=_HELP,
    )
    parser.add_argument("--version", action="version", version=f"handshake {__version__}")
    commands = parser.add_subparsers(
        title="commands", required=True, metavar="COMMAND", parser_class=_Parser
    )

    def command(name: str, **kwargs: Any) -> _Parser:
        return commands.add_parser(name, epilog=_EPILOGS.get(name), formatter_class=_HELP, **kwargs)

    policies = argparse.ArgumentParser(add_help=False)
    policies.add_argument(
        "--policies",
        metavar="DIR",
        type=Path,
        help="policy directory (default: $HANDSHAKE_POLICIES, else ./policies)",
    )
    policies.add_argument(
        "--engine",
        choices=ENGINES,
        help=f"CEL engine (default: $HANDSHAKE_CEL_ENGINE, else {DEFAULT_ENGINE})",
    )

    cores = argparse.ArgumentParser(add_help=False)
    cores.add_argument(
        "--jobs",
        type=int,
        default=_cores(),
        metavar="N",
        help="processes to use at most (default: this machine's cores, %(default)s)",
    )

    check = command(
        "check", parents=[policies, cores], help="load and compile policies; list every problem"
    )
    check.add_argument("dir", nargs="?", type=Path, metavar="DIR", help="policy directory")
    check.add_argument("--strict", action="store_true", help="fail on warnings too")
    check.set_defaults(run=_check)

    test = command(
        "test", parents=[policies, cores], help="run the policy test suites (under every engine)"
    )
    test.add_argument("dir", nargs="?", type=Path, metavar="DIR", help="policy directory")
    test.add_argument("--filter", metavar="TEXT", help="only cases whose policy or name has TEXT")
    test.add_argument("-v", "--verbose", action="store_true", help="list passing cases too")
    test.add_argument(
        "--coverage",
        action="store_true",
        help="report what the cases exercised: rules, branches of conditions, variables, locales",
    )
    test.add_argument(
        "--format",
        choices=("text", "json", "junit"),
        default="text",
        help="text (default); json; junit: JUnit XML, as CI systems read it",
    )
    test.add_argument(
        "--min-coverage",
        type=float,
        metavar="PERCENT",
        help="with --coverage: fail when fewer branches than this are covered",
    )
    test.set_defaults(run=_test)

    mapping = command(
        "map", parents=[policies], help="which rule decides which kinds of request (a decision map)"
    )
    mapping.add_argument("policy", metavar="POLICY", help="policy name, e.g. default")
    mapping.add_argument(
        "--format",
        choices=("text", "json", "html"),
        default="text",
        help="text (default); json; html: one self-contained page that draws the map",
    )
    mapping.add_argument(
        "--max-regions",
        type=int,
        default=MAX_REGIONS,
        metavar="N",
        help=f"decide at most N requests, spread over the space (default {MAX_REGIONS:,})",
    )
    mapping.add_argument("--now", metavar="TS", help="evaluation time, RFC 3339 (default: current)")
    mapping.set_defaults(run=_map)

    ev = command("eval", parents=[policies], help="evaluate one request; print JSON")
    ev.add_argument("policy", metavar="POLICY", help="policy name, e.g. examples/met-or-worked")
    ev.add_argument(
        "--input", metavar="FILE", help="the request as JSON: a file, or - for standard input"
    )
    ev.add_argument("--now", metavar="TS", help="evaluation time, RFC 3339 (default: current)")
    ev.add_argument("--locale", metavar="L", help="reply locale, e.g. de or pt-BR")
    ev.add_argument("--explain", action="store_true", help="add each rule tried and variables")
    ev.set_defaults(run=_eval)

    serve = command(
        "serve", parents=[policies], help="start the HTTP service (settings: HANDSHAKE_*)"
    )
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8080)")
    serve.add_argument("--workers", type=int, help="worker processes (default 1)")
    serve.epilog_factory = _serve_epilog
    serve.set_defaults(run=_serve)

    playground = command(
        "playground", parents=[policies], help="edit a policy and a request; see the answer"
    )
    playground.add_argument("policy", metavar="POLICY", help="policy name, e.g. default")
    playground.add_argument("--port", type=int, default=8081, help="port (default 8081)")
    playground.set_defaults(run=_playground)

    openapi = command("openapi", help="write the OpenAPI document (YAML)")
    openapi.add_argument(
        "--output", type=Path, default=OPENAPI, metavar="FILE", help=f"default: {OPENAPI}"
    )
    openapi.add_argument(
        "--check", action="store_true", help="only compare with FILE; exit 1 when it differs"
    )
    openapi.set_defaults(run=_openapi)

    init = command("init", help="start a team policy with a passing test suite")
    init.add_argument("dir", type=Path, metavar="DIR", help="the policy directory to write into")
    init.add_argument("--name", default="team", help="the policy's name (default: team)")
    init.set_defaults(run=_init)

    diff = command(
        "diff",
        parents=[policies],
        help="what a change does: evaluate requests at two git revisions and compare",
    )
    diff.add_argument("rev_a", metavar="REV_A", help="the revision before, e.g. main")
    diff.add_argument(
        "rev_b", nargs="?", metavar="REV_B", help="the revision after (default: the work tree)"
    )
    diff.add_argument("--requests", type=Path, metavar="FILE", help="recorded requests, JSON lines")
    diff.add_argument(
        "--policy", default="default", help="policy for recorded requests that name none"
    )
    diff.add_argument("--format", choices=["text", "json"], default="text")
    diff.set_defaults(run=_diff)

    schema = command("schema", help="print a JSON Schema (for editors and clients)")
    schema.add_argument(
        "what", nargs="?", choices=list(SCHEMAS), metavar="DOCUMENT", help=" | ".join(SCHEMAS)
    )
    written = schema.add_mutually_exclusive_group()
    written.add_argument(
        "--write",
        action="store_true",
        help=f"write the editors' schemas ({', '.join(EDITOR_SCHEMAS)}) into --dir",
    )
    written.add_argument(
        "--check", action="store_true", help="only compare them with --dir; exit 1 when one differs"
    )
    schema.add_argument(
        "--dir", type=Path, default=SCHEMA_DIR, metavar="DIR", help=f"default: {SCHEMA_DIR}"
    )
    schema.set_defaults(run=_schema)
    return parser


def _serve_epilog() -> str:
    """`serve`'s examples, exit codes, and every HANDSHAKE_* setting with its default and
    what it does: from service.settings.Settings, its fields and their docstrings."""
    lines = [
        "examples:",
        "  handshake serve --policies policies",
        "  HANDSHAKE_API_TOKENS_FILE=tokens handshake serve --host 0.0.0.0 --workers 2",
        "",
        "exit codes: 0 once stopped (SIGTERM); 2 bad settings, or policies that do not",
        "load",
        "",
        "environment (an unknown HANDSHAKE_* variable is an error; the flags above win):",
    ]
    docs = _field_docs(Settings)
    for field in msgspec.structs.fields(Settings):
        default = field.default
        if default is None or default is msgspec.NODEFAULT:
            shown = "unset"
        elif isinstance(default, bool):
            shown = f"default: {str(default).lower()}"
        else:
            shown = f"default: {default}"
        choices = CHOICES.get(field.name)
        if choices:
            shown = f"{' | '.join(choices)}; {shown}"
        lines.append(f"  {PREFIX}{field.name.upper()} ({shown})")
        if field.name in docs:
            lines += textwrap.wrap(
                docs[field.name],
                width=80,
                initial_indent=" " * 6,
                subsequent_indent=" " * 6,
                break_on_hyphens=False,
                break_long_words=False,
            )
    return "\n".join(lines) + "\n"


def _field_docs(struct: type) -> dict[str, str]:
    """The docstring under each field of a class (`name: type = default` then `\"\"\"…\"\"\"`),
    read from its source; {} when the source is not there."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(struct)))
    except (OSError, TypeError, SyntaxError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs = {}
    for node, after in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def _nothing_to_test(directory: Path, names: list[str], only: str | None) -> str:
    """Why `test` ran no case, and what to do."""
    if only:
        return f"no test case matches `{only}` (its policy or name) in {directory}"
    if not names and not policy_files(directory, suites=True):
        return (
            f"no policies or test suites in {directory}: point at yours with `--policies DIR`, "
            f"or start one with `handshake init {directory}`"
        )
    return f"no test cases in {directory} (suites are `*_test.yaml` files)"


def _settings(args: argparse.Namespace, **flags: Any) -> Settings:
    """The service's settings (HANDSHAKE_*), the command's flags on top: one source for both."""
    given = getattr(args, "dir", None) or args.policies
    try:
        return load_settings(
            policies=str(given) if given else None, cel_engine=args.engine, **flags
        )
    except SettingsError as exc:
        raise CommandError(str(exc)) from None


def _directory(args: argparse.Namespace) -> Path:
    return Path(_settings(args).policies)


def _engine(args: argparse.Namespace) -> str:
    return _settings(args).cel_engine


def _load(directory: Path, engine: str) -> PolicySet:
    try:
        return load_policies(directory, revision=policy_revision(directory), engine=engine)
    except PolicyError as exc:
        _load_failed(directory, exc.problems)


def _load_failed(directory: Path, problems: list[Problem]) -> NoReturn:
    if len(problems) == 1:
        raise CommandError(str(problems[0]))
    for problem in problems:
        print(problem, file=sys.stderr)
    count = sum(p.severity == "error" for p in problems)
    raise CommandError(f"{directory}: {_count(count, 'problem')}; nothing was evaluated")


def _check(args: argparse.Namespace) -> int:
    settings = _settings(args)
    directory = Path(settings.policies)
    hooks = settings.webhooks or directory / "webhooks.yaml"
    try:
        checked = check_policies(directory, engine=settings.cel_engine, jobs=args.jobs)
        cases = load_suites(directory, checked.names)
        webhooks = (
            load_webhooks(Path(hooks), checked.names, settings.cel_engine, settings.default_policy)
            if Path(hooks).is_file()
            else Webhooks()
        )
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem)
        errors = sum(p.severity == "error" for p in exc.problems)
        print(f"{_count(errors, 'error')}, {_count(len(exc.problems) - errors, 'warning')}")
        return 1
    untested = set(checked.names) - {case.policy for case in cases} if args.strict else set()
    untested_files = [
        Problem(file=str(path), message="no test suite names this policy", severity="warning")
        for path in policy_files(directory)
        if policy_name(directory, path) in untested
    ]
    warnings = sorted_problems([*checked.warnings, *webhooks.warnings, *untested_files])
    for problem in warnings:
        print(problem)
    sources = f", {_count(len(webhooks.sources), 'webhook source')}" if webhooks.sources else ""
    print(
        f"{_count(len(checked.names), 'policy', 'policies')}{sources} and "
        f"{_count(len(cases), 'test case')} in {directory}: no errors, "
        f"{_count(len(warnings), 'warning')}"
    )
    return 1 if args.strict and warnings else 0


def _cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _count(n: int, noun: str, plural: str | None = None) -> str:
    """`1 policy`, `2 policies`."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def _test(args: argparse.Namespace) -> int:
    """Every suite under every engine (or the one asked for): a policy must mean one thing.
    With cores to spare, the engines (and, for a large directory, shares of its policies)
    run side by side; the output is the same."""
    directory = _directory(args)
    engines = [args.engine] if args.engine else list(ENGINES)
    names = policy_names(directory) if directory.is_dir() else []
    tasks = [(engine, share) for engine in engines for share in shares(names, args.jobs)]
    run = functools.partial(_test_share, directory, only=args.filter)
    jobs = min(args.jobs, len(tasks))
    if jobs > 1:  # fork: the workers start with what this process imported
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as pool:
            runs = list(pool.map(run, *zip(*tasks, strict=True)))
    else:
        runs = [run(*task) for task in tasks]
    results: list[_CaseRun] = []
    for engine in engines:
        mine = [run for (e, _), run in zip(tasks, runs, strict=True) if e == engine]
        for stage in ("load", "suites"):  # as loading them here would fail
            problems = [p for _, failed_at, found in mine if failed_at == stage for p in found]
            if problems and stage == "load":
                _load_failed(directory, sorted_problems(problems))
            if problems:
                raise PolicyError(problems)
        results += [case for _, case in sorted(c for cases, _, _ in mine for c in cases)]
    failed = sum(bool(r.failures) for r in results)
    summary_line = f"{len(results) - failed} passed, {failed} failed ({', '.join(engines)})"
    coverage = None
    if args.coverage:
        policy_set = load_policies(directory, engine=engines[0], compare_engines=False)
        coverage = measure(policy_set, directory, load_suites(directory, policy_set.policies))
    if args.format == "junit":
        sys.stdout.write(_junit(results))
    elif args.format == "json":
        body = {"cases": [msgspec.structs.asdict(r) for r in results], "failed": failed}
        body |= {"passed": len(results) - failed, "engines": engines}
        if coverage is not None:
            body["coverage"] = [_coverage_json(policy) for policy in coverage]
        sys.stdout.write(msgspec.json.format(msgspec.json.encode(body), indent=2).decode() + "\n")
    else:
        for result in results:
            label = f" [{result.engine}]" if len(engines) > 1 else ""
            where = f"{result.file}:{result.line}"
            if result.failures:
                print(f"FAIL {where} {result.title}{label}")
                for failure in result.failures:
                    print(f"     {failure}")
            elif args.verbose:
                print(f"ok   {where} {result.title}{label}")
        print(summary_line)
    covered = True
    if coverage is not None:
        out = sys.stdout if args.format == "text" else sys.stderr  # keep json and XML whole
        covered = _print_coverage(coverage, engines[0], args.min_coverage, out)
    if not results:
        print(
            f"handshake: error: {_nothing_to_test(directory, names, args.filter)}", file=sys.stderr
        )
    return 1 if failed or not results or not covered else 0


class _CaseRun(msgspec.Struct, frozen=True, kw_only=True):
    """One suite case under one engine, as `test` reports it."""

    engine: str
    policy: str
    title: str
    file: str
    line: int
    failures: list[str]


def _junit(results: list[_CaseRun]) -> str:
    """JUnit XML, as CI systems read it: a test suite per engine, a test case per suite case."""
    root = ElementTree.Element("testsuites", name="handshake")
    for engine in dict.fromkeys(r.engine for r in results):
        mine = [r for r in results if r.engine == engine]
        failures = sum(bool(r.failures) for r in mine)
        suite = ElementTree.SubElement(
            root, "testsuite", name=engine, tests=str(len(mine)), failures=str(failures)
        )
        for result in mine:
            case = ElementTree.SubElement(
                suite,
                "testcase",
                classname=result.policy,
                name=result.title,
                file=result.file,
                line=str(result.line),
            )
            if result.failures:
                failure = ElementTree.SubElement(case, "failure", message=result.failures[0])
                failure.text = "\n".join(result.failures)
    ElementTree.indent(root)
    return ElementTree.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _coverage_json(policy: PolicyCoverage) -> dict[str, object]:
    return {
        "policy": policy.name,
        "cases": policy.cases,
        "rules": {"matched": len(policy.matched), "total": len(policy.rules)},
        "branches": {"covered": policy.branches_seen, "total": policy.branches_total},
        "variables": {"evaluated": policy.variables_evaluated, "total": len(policy.variables)},
        "locales": {"rendered": sorted(policy.rendered), "total": sorted(policy.locales)},
        "uncovered": list(policy.uncovered()),
    }


def _print_coverage(
    report: list[PolicyCoverage], engine: str, minimum: float | None, out: TextIO
) -> bool:
    """Print what the suites exercised, per policy; False when below `minimum` percent of
    branches."""
    seen = total = 0
    print(f"\ncoverage ({engine}):", file=out)
    for policy in report:
        seen += policy.branches_seen
        total += policy.branches_total
        print(
            f"  {policy.name}: {_count(policy.cases, 'case')}; rules {len(policy.matched)}/"
            f"{len(policy.rules)}, branches {policy.branch_percent:.0f}%, variables "
            f"{policy.variables_evaluated}/{len(policy.variables)}, "
            f"locales {policy.locales_rendered}/{len(policy.locales)}",
            file=out,
        )
        for line in policy.uncovered():
            print(f"    {line}", file=out)
    percent = 100.0 if not total else 100.0 * seen / total
    print(f"branches: {seen}/{total} ({percent:.1f}%)", file=out)
    if minimum is not None and percent < minimum:
        print(
            f"handshake: error: branch coverage {percent:.1f}% is below --min-coverage {minimum:g}",
            file=sys.stderr,
        )
        return False
    return True


def _test_share(
    directory: Path, engine: str, share: list[str] | None, *, only: str | None
) -> tuple[list[tuple[int, _CaseRun]], str | None, list[Problem]]:
    """The cases of the policies in `share` (None: all) under one engine, each with its
    place among all cases; or where it failed (`load`, `suites`) and the problems."""
    try:
        # Comparing the engines is `check`'s: a test only needs each engine's own answers.
        policy_set = load_policies(directory, engine=engine, compare_engines=False, only=share)
    except PolicyError as exc:
        return [], "load", list(exc.problems)
    known = set(policy_set.policies)
    if share is not None:  # the other shares answer for their own names
        known |= set(policy_names(directory)) - set(share)
    try:
        every_case = load_suites(directory, known)
    except PolicyError as exc:
        return [], "suites", list(exc.problems)
    cases = []
    for index, case in enumerate(every_case):
        if (only and only not in case.title) or case.policy not in policy_set.policies:
            continue
        result = run_case(policy_set, case)
        run = _CaseRun(
            engine=engine,
            policy=case.policy,
            title=case.title,
            file=case.file,
            line=case.line,
            failures=result.failures,
        )
        cases.append((index, run))
    return cases, None, []


def _map(args: argparse.Namespace) -> int:
    policy_set = _load(_directory(args), _engine(args))
    now = _timestamp(args.now) if args.now else datetime.now(UTC)
    try:
        found = explore(
            policy_set, args.policy, now, max(1, args.max_regions), table=args.format == "html"
        )
    except UnknownPolicyError as exc:
        raise CommandError(str(exc)) from None
    if args.format == "html":
        sys.stdout.write(page("decision_map.html", found))
        return 0
    if args.format == "json":
        sys.stdout.write(msgspec.json.format(msgspec.json.encode(found), indent=2).decode() + "\n")
        return 0
    spread = f" of {found.space:,}, spread over the space" if found.capped else ""
    print(f"{found.policy}: {found.regions:,} kinds of request{spread}, varying:")
    for name, values in found.dimensions.items():
        print(f"  {name}: {', '.join(_shown(v) for v in values)}")
    print(f"\n{'rule':28} {'decision':9} {'regions':>8}  the same in all of them")
    for rule in found.rules:
        same = ", ".join(f"{k}={_shown(v)}" for k, v in rule.same.items())
        print(f"{rule.rule:28} {rule.decision:9} {rule.regions:8,}  {same}")
    if found.unreached:
        print(f"\nno request explored reaches: {', '.join(found.unreached)}")
    if found.unexplored:
        print(f"not explored (they read attributes): {', '.join(found.unexplored)}")
    for region, failing, message in found.failures:
        where = ", ".join(f"{k}={_shown(v)}" for k, v in region.items())
        print(f"\n`{failing}` fails ({message}) for: {where}")
    return 0


def _shown(value: Any) -> str:
    """A value as JSON (`-` for absent), short."""
    if value is None:
        return "-"
    text = msgspec.json.encode(value).decode()
    return text if len(text) <= 40 else text[:37] + "..."


def _eval(args: argparse.Namespace) -> int:
    if args.input is None:  # never wait on a terminal, or on a pipe nobody writes to, unasked
        raise CommandError(
            "no request given: `--input FILE`, or `--input -` to read it from standard input"
        )
    policy_set = _load(_directory(args), _engine(args))
    request = _read_request(args.input)
    now = _timestamp(args.now) if args.now else datetime.now(UTC)
    try:
        decision = evaluate(
            policy_set, args.policy, request, now=now, locale=args.locale, explain=args.explain
        )
    except UnknownPolicyError as exc:
        raise CommandError(str(exc)) from None
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(decision), indent=2).decode() + "\n")
    return 0


def _schema(args: argparse.Namespace) -> int:
    if args.write or args.check:
        if args.what is not None:
            raise CommandError(f"`{args.what}`: --write and --check take no DOCUMENT")
        return _schema_files(args.dir, check=args.check)
    if args.what is None:
        raise CommandError(
            f"which schema? `handshake schema {'|'.join(SCHEMAS)}`, or --write or --check"
        )
    sys.stdout.write(schema_text(args.what))
    return 0


def schema_text(what: str) -> str:
    """The JSON Schema of a document (`policy`, `suite`, …), as `handshake schema` prints it:
    generated from its msgspec Struct."""
    schema = {"$schema": JSON_SCHEMA_DIALECT, **msgspec.json.schema(SCHEMAS[what])}
    for definition in schema.get("$defs", {}).values():  # docstrings, without their indent
        if isinstance(definition.get("description"), str):
            definition["description"] = inspect.cleandoc(definition["description"])
    return msgspec.json.format(msgspec.json.encode(schema), indent=2).decode() + "\n"


def _schema_files(directory: Path, *, check: bool) -> int:
    stale = []
    for what in EDITOR_SCHEMAS:
        path = directory / f"{what}.schema.json"
        text = schema_text(what)
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if check:
            if current != text:
                stale.append(path)
            continue
        if current != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        listed = ", ".join(map(str, stale))
        print(f"{listed}: out of date: run `handshake schema --write`", file=sys.stderr)
        return 1
    if check:
        print(f"{directory}: up to date")
    return 0


def _init(args: argparse.Namespace) -> int:
    if not POLICY_NAME.match(args.name):
        raise CommandError(f"--name: `{args.name}` is not a policy name (A-Z a-z 0-9 . _ - and /)")
    scaffold = resources.files("service.scaffold")
    targets = {
        args.dir / f"{args.name}.yaml": ("policy", scaffold.joinpath("policy.yaml")),
        args.dir / f"{args.name}_test.yaml": ("suite", scaffold.joinpath("suite.yaml")),
    }
    for target in targets:
        if target.exists():
            raise CommandError(f"{target}: already exists; nothing was written")
    schemas = _schemas_for(args.dir)
    for what in ("policy", "suite"):  # the editors' schemas the files point at
        path = schemas / f"{what}.schema.json"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(schema_text(what), encoding="utf-8")
            print(f"wrote {os.path.relpath(path)}")
    for target, (what, template) in targets.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        schema = os.path.relpath(
            schemas.absolute() / f"{what}.schema.json", target.parent.absolute()
        )
        text = template.read_text(encoding="utf-8")
        target.write_text(text.format(name=args.name, schema=Path(schema).as_posix()))
        print(f"wrote {target}")
    print(f"next: handshake test {args.dir}")
    return 0


def _schemas_for(directory: Path) -> Path:
    """Where the editors' schemas are for a policy directory: the nearest `schemas/` holding
    them, looking up from it to its git work tree's top; else that top's `schemas/` (or the
    directory's own, outside git), where `init` writes them."""
    start = directory.absolute()
    top = None
    for folder in (start, *start.parents):
        if (folder / SCHEMA_DIR / "policy.schema.json").is_file():
            return folder / SCHEMA_DIR
        if (folder / ".git").exists():
            top = folder
            break
    return (top or start) / SCHEMA_DIR


def _diff(args: argparse.Namespace) -> int:
    directory = _directory(args)
    if not directory.is_dir():
        raise CommandError(
            f"{directory}: no such policy directory; name yours with `--policies DIR` "
            "(or HANDSHAKE_POLICIES)"
        )
    inside = git(directory, "rev-parse", "--is-inside-work-tree")
    if inside is None or inside.strip() != "true":
        raise CommandError(
            f"{directory}: not in a git work tree; `diff` compares git revisions, so run it "
            "in a clone of the policies' repository"
        )
    try:
        report = diff(
            directory,
            args.rev_a,
            args.rev_b,
            requests=args.requests,
            default_policy=args.policy,
            engine=_engine(args),
        )
    except DiffError as exc:
        raise CommandError(str(exc)) from None
    if args.format == "json":
        sys.stdout.write(report.as_json().decode() + "\n")
    else:
        print(report.as_text())
    return 1 if report.changed else 0


def _serve(args: argparse.Namespace) -> int:
    from service.server import serve  # the web stack loads only for this command

    return serve(_settings(args, host=args.host, port=args.port, workers=args.workers))


def _playground(args: argparse.Namespace) -> int:
    import uvicorn  # the web stack loads only for this command

    from service.playground import Playground, playground_app

    if not POLICY_NAME.match(args.policy):
        raise CommandError(f"`{args.policy}` is not a policy name (A-Z a-z 0-9 . _ - and /)")
    directory = _directory(args)
    if not directory.is_dir():
        raise CommandError(f"{directory}: no such policy directory; name yours with --policies DIR")
    with socket.socket() as probe:  # say it in one line, before anything is copied
        try:
            probe.bind(("127.0.0.1", args.port))
        except OSError:
            raise CommandError(f"port {args.port} is in use: choose another with --port") from None
    playground = Playground(directory, args.policy)
    app = playground_app(playground, args.port)
    print(f"playground: http://127.0.0.1:{args.port}/ (Ctrl-C to stop)", flush=True)
    try:
        uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
    finally:
        playground.close()
    return 0


def _openapi(args: argparse.Namespace) -> int:
    from service.api.app import openapi_yaml  # the web stack loads only for this command

    text = openapi_yaml()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is out of date: run `handshake openapi`", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


def _read_request(name: str) -> ConnectionRequest:
    if name == "-" and sys.stdin.isatty():  # else it would seem to hang
        print(
            "reading the request JSON from standard input (end with Ctrl-D), or pass --input FILE",
            file=sys.stderr,
        )
    try:
        raw = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
    except OSError as exc:
        raise CommandError(f"{name}: cannot read: {exc.strerror}") from None
    try:
        return decode_request(raw)
    except InputError as exc:
        shown = "<stdin>" if name == "-" else name
        raise CommandError(f"{shown}:{'' if exc.at else ' '}{exc}") from None


def _timestamp(text: str) -> datetime:
    try:
        value = msgspec.convert(text, Timestamp)
        check_timestamps(value)
        return value
    except (msgspec.ValidationError, ValueError):
        raise CommandError(
            f"--now: `{text}` is not an RFC 3339 timestamp with a time zone"
        ) from None
