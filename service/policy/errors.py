"""Domain errors of the core. They know nothing of HTTP or terminals.

A load gathers every `Problem` it finds and raises them together as one `PolicyError`, sorted
by file and position. Messages follow Cedar's style: lowercase, no final period, user input
in backticks.
"""

from __future__ import annotations

from collections.abc import Iterable
from difflib import get_close_matches
from typing import Literal

import msgspec

__all__ = [
    "PolicyError",
    "Problem",
    "UnknownPolicyError",
    "did_you_mean",
    "sorted_problems",
    "with_article",
]


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    file: str
    line: int = 0  # 1-based; 0 when the problem concerns the whole file
    column: int = 0
    path: str = "$"  # JSON path inside the file
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        where = self.file
        if self.line:
            where += f":{self.line}" + (f":{self.column}" if self.column else "")
        path = "" if self.path == "$" else f" {self.path}:"
        tag = " warning:" if self.severity == "warning" else ""
        return f"{where}:{tag}{path} {self.message}"

    @property
    def sort_key(self) -> tuple[str, int, int, str]:
        return (self.file, self.line, self.column, self.path)


def sorted_problems(problems: Iterable[Problem]) -> list[Problem]:
    unique = {(p.sort_key, p.message, p.severity): p for p in problems}
    return [unique[k] for k in sorted(unique)]


class PolicyError(Exception):
    """Policies (or suites) could not be loaded; carries every problem found."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = sorted_problems(problems)
        super().__init__("\n".join(map(str, self.problems)))


class UnknownPolicyError(LookupError):
    def __init__(self, name: str, known: Iterable[str] = ()) -> None:
        self.name = name
        super().__init__(f"unknown policy `{name}`{did_you_mean(name, known)}")


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """A `; did you mean `x`?` suffix when one candidate is close (or is what other languages
    call `word`: `strip` is CEL's `trim`), else ``."""
    names = list(candidates)
    alias = _ALIASES.get(word)
    close = [alias] if alias in names else get_close_matches(word, names, n=1, cutoff=0.7)
    return f"; did you mean `{close[0]}`?" if close else ""


# What other languages call CEL's functions (service/policy/cel/functions.py), tried before
# difflib's closest spelling: `strip` is not a misspelt `string`, it is CEL's `trim`.
_ALIASES = {
    **dict.fromkeys(("strip", "trim_space", "trimSpace", "TrimSpace"), "trim"),
    **dict.fromkeys(("len", "length", "count", "Len"), "size"),
    **dict.fromkeys(
        ("lower", "tolower", "toLower", "toLowerCase", "lowercase", "downcase", "casefold"),
        "lowerAscii",
    ),
    **dict.fromkeys(
        ("upper", "toupper", "toUpper", "toUpperCase", "uppercase", "upcase"), "upperAscii"
    ),
    **dict.fromkeys(("includes", "include", "has_substring", "Contains"), "contains"),
    **dict.fromkeys(("startswith", "starts_with", "hasPrefix", "HasPrefix"), "startsWith"),
    **dict.fromkeys(("endswith", "ends_with", "hasSuffix", "HasSuffix"), "endsWith"),
    **dict.fromkeys(("match", "regex", "regexp", "re_match", "test"), "matches"),
    **dict.fromkeys(("str", "toString", "to_s", "String"), "string"),
    **dict.fromkeys(("float", "parseFloat", "Number"), "double"),
    **dict.fromkeys(("parseInt", "integer", "Int"), "int"),
    **dict.fromkeys(("boolean", "Boolean"), "bool"),
    **dict.fromkeys(("year", "getYear"), "getFullYear"),
    **dict.fromkeys(("weekday", "getDay"), "getDayOfWeek"),
}


def with_article(noun: str) -> str:
    """`an int`, `a string`."""
    return f"an {noun}" if noun[:1] in "aeiou" else f"a {noun}"
