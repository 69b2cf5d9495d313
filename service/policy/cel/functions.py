"""The names a policy may call: what both runtimes implement, the same way.

tests/unit/test_cel_front_end.py holds this table to both runtimes: every name is one that
cel-python's function table and Google's CEL checker (with the strings extension) know. Type
names that cel-python also lists as functions (`list`, `map`, `null_type`) are not: Google's
CEL has no such functions.
"""

from __future__ import annotations

__all__ = ["COMPREHENSIONS", "FUNCTIONS", "MACROS"]

# Macros: expanded by the parser, not called.
MACROS = frozenset({"has", "all", "exists", "exists_one", "map", "filter"})
COMPREHENSIONS = MACROS - {"has"}

FUNCTIONS = frozenset(
    {
        # conversions and types
        "bool",
        "bytes",
        "double",
        "duration",
        "int",
        "string",
        "timestamp",
        "type",
        "uint",
        # strings (`lowerAscii`, `upperAscii` and `trim` from the strings extension)
        "contains",
        "endsWith",
        "lowerAscii",
        "matches",
        "size",
        "startsWith",
        "trim",
        "upperAscii",
        # timestamps
        "getDate",
        "getDayOfMonth",
        "getDayOfWeek",
        "getDayOfYear",
        "getFullYear",
        "getHours",
        "getMilliseconds",
        "getMinutes",
        "getMonth",
        "getSeconds",
    }
)
