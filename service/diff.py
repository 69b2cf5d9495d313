"""`handshake diff`: what a change to the policies does to real requests, before it is merged.

Both revisions are evaluated on one corpus — every request in the test suites of either
revision, plus recorded requests (JSON lines) — with the same `now`, and every difference in
decision, rule or reply text is listed. An old revision is read with `git archive` into a
temporary directory: the work tree is never touched.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from service.policy import ConnectionRequest, PolicyError, PolicySet, evaluate, load_policies
from service.policy.decision import Decision
from service.policy.engines import DEFAULT_ENGINE
from service.policy.errors import Problem
from service.policy.request import Base, InputError, Timestamp, convert
from service.policy.suite import load_suites
from service.revision import git, policy_revision

__all__ = ["Change", "DiffError", "Report", "diff", "read_requests"]


class DiffError(Exception):
    """The diff cannot be made (unknown revision, not a git work tree, unreadable corpus)."""


class Recorded(Base, frozen=True, kw_only=True):
    """One line of `--requests`: a body of `POST /evaluate`, or just a request."""

    policy: str | None = None
    request: ConnectionRequest
    locale: str | None = None
    now: Timestamp | None = None


@dataclass(frozen=True)
class Item:
    source: str  # where the request came from: `suite.yaml:12 name` or `requests.jsonl:3`
    policy: str
    request: ConnectionRequest
    now: datetime
    locale: str | None


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    decision: str
    rule: str | None
    reply: str | None

    @classmethod
    def of(cls, decision: Decision) -> Outcome:
        reply = decision.reply.text if decision.reply else None
        return cls(decision=decision.decision, rule=decision.rule, reply=reply)


class Change(msgspec.Struct, frozen=True, kw_only=True):
    source: str
    policy: str
    status: str  # changed | added (policy only in B) | removed (policy only in A)
    fields: list[str]  # which of decision, rule, reply changed
    before: Outcome | None
    after: Outcome | None


class Side(msgspec.Struct, frozen=True, kw_only=True):
    label: str
    revision: str | None
    digest: str


@dataclass
class Report:
    a: Side
    b: Side
    added_policies: list[str]
    removed_policies: list[str]
    changes: list[Change] = field(default_factory=list)
    evaluated: Counter[str] = field(default_factory=Counter)  # requests per policy

    @property
    def changed(self) -> bool:
        return bool(self.changes or self.added_policies or self.removed_policies)

    def as_json(self) -> bytes:
        summary = {
            name: {"requests": count, **self._counts(name)}
            for name, count in sorted(self.evaluated.items())
        }
        return msgspec.json.encode(
            {
                "a": self.a,
                "b": self.b,
                "policies": {"added": self.added_policies, "removed": self.removed_policies},
                "changes": self.changes,
                "summary": summary,
                "transitions": self.transitions(),
            }
        )

    def _counts(self, policy: str) -> dict[str, int]:
        mine = [c for c in self.changes if c.policy == policy]
        counts = {"changed": len(mine)}
        for what in ("decision", "rule", "reply"):
            counts[what] = sum(what in c.fields for c in mine)
        return counts

    def transitions(self) -> dict[str, int]:
        """`accept -> decline`: how many requests moved between two decisions."""
        moved = Counter(
            f"{c.before.decision} -> {c.after.decision}"
            for c in self.changes
            if c.before and c.after and c.before.decision != c.after.decision
        )
        return dict(sorted(moved.items()))

    def as_text(self) -> str:
        lines = []
        for change in self.changes:
            lines.append(f"{change.source}  [{change.policy}] {change.status}")
            for what in change.fields:
                before = getattr(change.before, what) if change.before else None
                after = getattr(change.after, what) if change.after else None
                lines.append(f"    {what + ':':9} {_show(before)} -> {_show(after)}")
        if self.added_policies:
            lines.append("added policies: " + ", ".join(self.added_policies))
        if self.removed_policies:
            lines.append("removed policies: " + ", ".join(self.removed_policies))
        lines.append("")
        lines.append(
            f"A = {self.a.label} ({self.a.revision or 'no revision'}, {self.a.digest[:19]})"
        )
        lines.append(
            f"B = {self.b.label} ({self.b.revision or 'no revision'}, {self.b.digest[:19]})"
        )
        header = (
            f"{'policy':32} {'requests':>8} {'changed':>8} {'decision':>8} {'rule':>6} {'reply':>6}"
        )
        lines.append(header)
        totals = Counter[str]()
        for name, count in sorted(self.evaluated.items()):
            counts = self._counts(name)
            totals.update({"requests": count, **counts})
            lines.append(
                f"{name:32} {count:8} {counts['changed']:8} {counts['decision']:8} "
                f"{counts['rule']:6} {counts['reply']:6}"
            )
        lines.append(
            f"{'total':32} {totals['requests']:8} {totals['changed']:8} {totals['decision']:8} "
            f"{totals['rule']:6} {totals['reply']:6}"
        )
        for transition, count in self.transitions().items():
            lines.append(f"  {transition}: {count}")
        lines.append("changed" if self.changed else "no changes")
        return "\n".join(lines)


def _show(value: Any) -> str:
    return "none" if value is None else msgspec.json.encode(value).decode()


def diff(
    directory: Path,
    rev_a: str,
    rev_b: str | None = None,
    *,
    requests: Path | None = None,
    default_policy: str = "default",
    now: datetime | None = None,
    engine: str = DEFAULT_ENGINE,
) -> Report:
    """Evaluate the corpus at both revisions (B: the work tree when None) and compare."""
    now = now or datetime.now(UTC)
    recorded = read_requests(requests, default_policy, now) if requests else []
    with (
        _tree(directory, rev_a, now, engine) as (set_a, cases_a, side_a),
        _tree(directory, rev_b, now, engine) as (set_b, cases_b, side_b),
    ):
        report = Report(
            a=side_a,
            b=side_b,
            added_policies=sorted(set(set_b.policies) - set(set_a.policies)),
            removed_policies=sorted(set(set_a.policies) - set(set_b.policies)),
        )
        for item in _unique([*cases_b, *cases_a, *recorded]):
            _compare(report, item, set_a, set_b)
    return report


def _compare(report: Report, item: Item, set_a: PolicySet, set_b: PolicySet) -> None:
    before = _outcome(set_a, item)
    after = _outcome(set_b, item)
    if before is None and after is None:
        return
    report.evaluated[item.policy] += 1
    if before is None or after is None:
        status = "added" if before is None else "removed"
        report.changes.append(
            Change(
                source=item.source,
                policy=item.policy,
                status=status,
                fields=[],
                before=before,
                after=after,
            )
        )
        return
    fields = [f for f in ("decision", "rule", "reply") if getattr(before, f) != getattr(after, f)]
    if fields:
        report.changes.append(
            Change(
                source=item.source,
                policy=item.policy,
                status="changed",
                fields=fields,
                before=before,
                after=after,
            )
        )


def _outcome(policy_set: PolicySet, item: Item) -> Outcome | None:
    if item.policy not in policy_set.policies:
        return None
    return Outcome.of(
        evaluate(policy_set, item.policy, item.request, now=item.now, locale=item.locale)
    )


def _unique(items: list[Item]) -> Iterator[Item]:
    seen = set()
    for item in items:
        key = (item.policy, item.locale, item.now, msgspec.json.encode(item.request))
        if key not in seen:
            seen.add(key)
            yield item


@contextmanager
def _tree(
    directory: Path, revision: str | None, now: datetime, engine: str
) -> Iterator[tuple[PolicySet, list[Item], Side]]:
    """The policy set and suite cases at `revision` (None: the work tree, as it is)."""
    if revision is None:
        policy_set = load_policies(directory, revision=policy_revision(directory), engine=engine)
        items = _suite_items(directory, policy_set, None, now)
        yield policy_set, items, _side("work tree", policy_set)
        return
    commit = (
        git(directory, "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}") or ""
    ).strip()
    if not commit:
        raise DiffError(f"unknown revision `{revision}`")
    top = Path((git(directory, "rev-parse", "--show-toplevel") or "").strip())
    prefix = (git(directory, "rev-parse", "--show-prefix") or "").strip().rstrip("/")
    if prefix and git(top, "cat-file", "-e", f"{commit}:{prefix}") is None:
        label = f"{revision}:{prefix}"
        raise PolicyError([Problem(file=label, message="no policy directory at this revision")])
    archive = _git_bytes(top, "archive", "--format=tar", commit, "--", prefix or ".")
    with tempfile.TemporaryDirectory(prefix="handshake-diff-") as tmp:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        tree = Path(tmp) / prefix
        label = f"{revision}:{prefix or '.'}"  # files show as `main:policies/default.yaml`
        if not tree.is_dir():
            raise PolicyError([Problem(file=label, message="no policy directory at this revision")])
        policy_set = load_policies(tree, revision=commit, label=label, engine=engine)
        items = _suite_items(tree, policy_set, label, now)
        yield policy_set, items, _side(revision, policy_set)


def _git_bytes(directory: Path, *args: str) -> bytes:
    try:
        result = subprocess.run(
            ["git", "-C", str(directory), *args], capture_output=True, timeout=60, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise DiffError(f"git failed: {exc}") from None
    if result.returncode != 0:
        raise DiffError(f"git {args[0]} failed: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout


def _suite_items(
    directory: Path, policy_set: PolicySet, label: str | None, now: datetime
) -> list[Item]:
    items = []
    for case in load_suites(directory, policy_set.policies, label=label):
        items.append(
            Item(
                source=f"{case.file}:{case.line} {case.case.name}",
                policy=case.policy,
                request=case.case.request,
                now=case.now or now,
                locale=case.locale,
            )
        )
    return items


def _side(label: str, policy_set: PolicySet) -> Side:
    return Side(label=label, revision=policy_set.revision, digest=policy_set.digest)


def read_requests(path: Path, default_policy: str, now: datetime) -> list[Item]:
    """Recorded requests, one JSON object a line: a request, or a body of `POST /evaluate`."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise DiffError(f"{path}: cannot read: {exc.strerror}") from None
    items = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = msgspec.json.decode(line)
            body = convert(data if "request" in data else {"request": data}, Recorded)
        except (msgspec.DecodeError, InputError, TypeError) as exc:
            raise DiffError(f"{path}:{number}: {exc}") from None
        items.append(
            Item(
                source=f"{path.name}:{number}",
                policy=body.policy or default_policy,
                request=body.request,
                now=body.now or now,
                locale=body.locale,
            )
        )
    return items
