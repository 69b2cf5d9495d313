"""What a caller may do: scopes, for API tokens and webhook sources.

A token entry is `name:token` (everything, as before scopes) or `name:token:SCOPES`, where
SCOPES is a comma-separated list of
- `evaluate=PATTERN`: decide under the policies PATTERN names (`/evaluate`, its batch);
- `read=PATTERN`: see those policies (`/policies` lists only them, `/policies/{name}`);
- `metrics`: read `/metrics` (when it is guarded);
- `admin`: `/admin/reload`.

A PATTERN is a policy name in which `*` stands for any part of one path segment and `**` for
any number of segments: `sales/**`, `team-*`, `default`. A clause may repeat
(`evaluate=sales/**,evaluate=default`). What no clause grants is refused with a 403 problem
`out-of-scope`, whether the policy exists or not (a scope does not reveal the names beyond it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "Action",
    "OutOfScope",
    "Scopes",
    "is_clause",
    "parse_scopes",
    "pattern",
    "source_scopes",
]

Action = Literal["evaluate", "read", "metrics", "admin"]
_PATTERN = re.compile(r"^[A-Za-z0-9._/*?-]{1,256}$")
_CLAUSE = re.compile(r"^(?:(evaluate|read)=(.*)|(metrics|admin))$")


class OutOfScope(Exception):  # noqa: N818 - read as the answer's code, `out-of-scope`
    """The caller may not do this (a 403 problem `out-of-scope`)."""


@dataclass(frozen=True)
class Scopes:
    """The policies a caller may evaluate and read, and whether it may read the metrics and
    reload."""

    written: str  # as configured, for logs and errors
    evaluate: re.Pattern[str] | None = None  # None: no policy
    read: re.Pattern[str] | None = None
    metrics: bool = False
    admin: bool = False

    def allows(self, action: Action, policy: str = "") -> bool:
        if action == "metrics":
            return self.metrics
        if action == "admin":
            return self.admin
        names = self.evaluate if action == "evaluate" else self.read
        return names is not None and names.fullmatch(policy) is not None


def is_clause(text: str) -> bool:
    """Whether `text` reads as a scope clause (`read=…`, `admin`), not as a token entry."""
    return _CLAUSE.match(text) is not None


def parse_scopes(text: str) -> Scopes:
    """`evaluate=sales/**,read=sales/**,admin` -> Scopes; raises ValueError naming the clause."""
    patterns: dict[str, list[str]] = {"evaluate": [], "read": []}
    flags = set()
    for clause in (c.strip() for c in text.split(",")):
        found = _CLAUSE.match(clause)
        if not found:
            raise ValueError(
                f"`{clause}` is not a scope: use evaluate=PATTERN, read=PATTERN, metrics or admin"
            )
        action, names, flag = found.groups()
        if flag:
            flags.add(flag)
            continue
        if not _PATTERN.match(names):
            raise ValueError(f"`{names}` is not a policy name pattern (A-Z a-z 0-9 . _ - / * ?)")
        patterns[action].append(names)
    compiled = {
        action: re.compile("|".join(pattern(p) for p in found)) if found else None
        for action, found in patterns.items()
    }
    return Scopes(
        written=text,
        evaluate=compiled["evaluate"],
        read=compiled["read"],
        metrics="metrics" in flags,
        admin="admin" in flags,
    )


def source_scopes(text: str | None) -> dict[str, Scopes] | None:
    """`crm=sales/**,crm=default,hr=hr/**` -> the scopes of each webhook source (None: no
    limit); raises ValueError naming the entry."""
    if text is None:
        return None
    patterns: dict[str, list[str]] = {}
    for entry in (e for e in re.split(r"[,\s]+", text) if e):
        source, equals, names = entry.partition("=")
        if not (source and equals):
            raise ValueError(f"`{entry}` is not `source=PATTERN`")
        patterns.setdefault(source, []).append(f"evaluate={names}")
    return {source: parse_scopes(",".join(found)) for source, found in patterns.items()}


def pattern(glob: str) -> str:
    """A policy name pattern as a regular expression: `**` any segments, `*` and `?` within
    one segment."""
    parts = re.split(r"(\*\*/?|\*|\?)", glob)
    table = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    return "(?:" + "".join(table.get(p, re.escape(p)) for p in parts) + ")"
