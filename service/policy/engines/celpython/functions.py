"""cel-python's functions, made to behave as Google's CEL: the strings extension's
`lowerAscii`, `upperAscii` and `trim`, a quiet cached `matches`, `string` as the spec writes
it, and `||`/`&&` whose errors stay small."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from datetime import UTC
from typing import Any

import re2
from celpy import celtypes
from celpy.evaluation import CELEvalError

__all__ = ["EXTENSIONS"]

CelValue = Any  # a celpy.celtypes value


def _lower_ascii(value: celtypes.StringType) -> celtypes.StringType:
    return celtypes.StringType(value.translate(_LOWER))


def _upper_ascii(value: celtypes.StringType) -> celtypes.StringType:
    return celtypes.StringType(value.translate(_UPPER))


def _trim(value: celtypes.StringType) -> celtypes.StringType:
    return celtypes.StringType(value.strip(_WHITESPACE))


# Unicode White_Space, as CEL's strings extension trims it. Python's own `strip()` also takes
# U+001C..U+001F (information separators), which CEL keeps: found by the differential test.
_WHITESPACE = (
    "".join(chr(c) for c in (*range(0x9, 0xE), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B)))
    + "\u2028\u2029\u202f\u205f\u3000"
)


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # RE2 would print bad patterns to stderr itself


@functools.lru_cache(maxsize=256)
def _regex(pattern: str) -> Any:
    return re2.compile(pattern, _RE2_OPTIONS)


def _matches(text: celtypes.StringType, pattern: celtypes.StringType) -> CelValue:
    """cel-python's `matches` (RE2: linear time, no backtracking), quiet and cached."""
    try:
        return celtypes.BoolType(_regex(str(pattern)).search(str(text)) is not None)
    except re2.error as exc:
        detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        return CELEvalError(f"invalid regular expression: {detail}", ValueError, None)


def _string(value: CelValue) -> CelValue:
    """`string()` as the CEL spec (and the C++ runtime) writes it; cel-python writes `True`,
    drops a timestamp's fraction of a second and truncates a duration's."""
    if isinstance(value, celtypes.BoolType):
        return celtypes.StringType("true" if value else "false")
    if isinstance(value, celtypes.TimestampType):
        t = value.astimezone(UTC)
        return celtypes.StringType(t.strftime("%Y-%m-%dT%H:%M:%S") + _fraction(t.microsecond) + "Z")
    if isinstance(value, celtypes.DurationType):
        whole, micros = divmod(
            value.days * 86_400_000_000 + value.seconds * 1_000_000 + value.microseconds, 1_000_000
        )
        if whole < 0 and micros:
            whole, micros = whole + 1, 1_000_000 - micros
            return celtypes.StringType(f"-{abs(whole)}{_fraction(micros)}s")
        return celtypes.StringType(f"{whole}{_fraction(micros)}s")
    if isinstance(value, celtypes.DoubleType) and float(value) == 0 and math.copysign(1, value) < 0:
        return celtypes.StringType("-0")
    return celtypes.StringType(value)


def _fraction(micros: int) -> str:
    """`.5` s as `.500`, `.000123` as `.000123`: milliseconds or microseconds, as cel-cpp."""
    if micros == 0:
        return ""
    return f".{micros // 1000:03d}" if micros % 1000 == 0 else f".{micros:06d}"


_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _without_reprs(
    operator: Callable[[CelValue, CelValue], CelValue],
) -> Callable[[CelValue, CelValue], CelValue]:
    """cel-python's `||` and `&&` on two non-bools raise a TypeError whose message holds the
    `repr` of both operands; an operand that is itself such an error nests its `repr`, escaped
    again, so `exists` over n failing items builds text exponential in n (n = 24: seconds and
    hundreds of MB). The same outcome, with a message of constant size."""

    @functools.wraps(operator)
    def logical(x: CelValue, y: CelValue) -> CelValue:
        if not isinstance(x, celtypes.BoolType) and not isinstance(y, celtypes.BoolType):
            raise TypeError("no such overload")
        return operator(x, y)

    return logical


# The macros (`exists`, `all`) read these from the module at each call; the operators come
# from the function table below.
celtypes.logical_or = _without_reprs(celtypes.logical_or)  # type: ignore[assignment]
celtypes.logical_and = _without_reprs(celtypes.logical_and)  # type: ignore[assignment]

# Functions beyond cel-python's standard set, named as in cel-go's strings extension;
# `matches` replaced by a quiet, cached version of the same RE2 search; `string` as the spec.
EXTENSIONS: dict[str, Callable[..., CelValue]] = {
    "lowerAscii": _lower_ascii,
    "upperAscii": _upper_ascii,
    "_||_": celtypes.logical_or,
    "_&&_": celtypes.logical_and,
    "trim": _trim,
    "matches": _matches,
    "string": _string,
}
