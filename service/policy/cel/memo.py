"""What a load works out once per expression text.

An organisation's policies share many expressions (templates copied between teams, a base
that several policies extend), and parsing, type checking and compiling one depend on its
text alone. So within one load each is done once per text; `forget()` ends the load, so that
nothing is kept between loads that a compiled set does not hold itself.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

__all__ = ["forget", "per_load", "per_load_table"]

P = ParamSpec("P")
R = TypeVar("R")

_CACHES: list[functools._lru_cache_wrapper[object]] = []
_TABLES: list[dict[Any, Any]] = []


def per_load(function: Callable[P, R]) -> Callable[P, R]:
    """`function`, remembered per argument until `forget()` (a bounded number, in case a
    load is very large). A call that raises is not remembered: it is the rare case."""
    cached = functools.lru_cache(maxsize=8192)(function)
    _CACHES.append(cached)
    return cached  # type: ignore[return-value]


def per_load_table() -> dict[Any, Any]:
    """A dict emptied by `forget()`: for what is remembered under a key worked out by hand
    (what a text computes in one policy's context)."""
    table: dict[Any, Any] = {}
    _TABLES.append(table)
    return table


def forget() -> None:
    """Let go of everything remembered (a load calls it when done)."""
    for cache in _CACHES:
        cache.cache_clear()
    for table in _TABLES:
        table.clear()
