"""Self-contained HTML pages: a template of this package with its data inlined as JSON.

A page loads nothing from anywhere (its Content-Security-Policy says so), so it works
offline, from a file, and in a cluster without egress.
"""

from __future__ import annotations

from importlib import resources

import msgspec

__all__ = ["page"]

_DATA = "__DATA__"
_DOM = "/* __DOM__ */"


def page(template: str, data: object) -> str:
    """`template` (a file of this package) with `data` as JSON in place of `__DATA__`, and
    the helpers of dom.js in place of `/* __DOM__ */`.

    `<`, `>` and `&` are escaped inside the JSON, so no string in it (a rule id, a literal
    of a condition) can close the script element that holds it."""
    files = resources.files(__package__)
    text = files.joinpath(template).read_text(encoding="utf-8")
    text = text.replace(_DOM, files.joinpath("dom.js").read_text(encoding="utf-8"))
    payload = msgspec.json.encode(data).decode()
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        payload = payload.replace(char, escaped)
    return text.replace(_DATA, payload)
