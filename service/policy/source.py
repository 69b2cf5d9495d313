"""YAML documents that remember where each value came from, for file:line:column errors.

The YAML dialect is YAML 1.2's core schema for booleans (only `true`/`false`: a locale named
`no` stays a string) and timestamps stay strings (the schema parses them, with time zones).
Duplicate keys are errors, not silently "last one wins".
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from service.policy.errors import PolicyError, Problem

__all__ = ["JsonPath", "Source", "format_path", "parse_path", "parse_source", "read_source"]

JsonPath = tuple[str | int, ...]

_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_BOOL = "tag:yaml.org,2002:bool"
_UNKNOWN_TAG = re.compile(r"could not determine a constructor for the tag '([^']*)'")
_TIMESTAMP = "tag:yaml.org,2002:timestamp"


class _Loader(_Base):  # type: ignore[misc]  # a YAML 1.2-style dialect, see the docstring
    yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _TIMESTAMP)]
        for first, resolvers in _Base.yaml_implicit_resolvers.items()
    }


_Loader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


@dataclass(frozen=True)
class Source:
    """One parsed YAML file: its data and the node tree that knows positions."""

    file: str  # the path as shown to people
    text: str
    data: Any
    root: yaml.Node | None
    name: str = ""  # the path inside the policy directory, when it is in one

    def locate(self, path: JsonPath, key: str | None = None) -> tuple[int, int]:
        """1-based (line, column) of the value at `path`, or of `key` inside it when given.

        A path that does not exist resolves to its nearest existing ancestor.
        """
        node = self.root
        if node is None:
            return (1, 1)
        for segment in path:
            child = _child(node, segment)
            if child is None:
                break
            node = child
        if key is not None and isinstance(node, yaml.MappingNode):
            for key_node, _ in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
                    node = key_node
                    break
        return (node.start_mark.line + 1, node.start_mark.column + 1)

    def locate_in_scalar(self, path: JsonPath, line: int, column: int) -> tuple[int, int]:
        """Map a (line, column) inside a scalar's text to a position in the file.

        Exact for plain and quoted one-line scalars; for block scalars the line is exact and
        the column is the block's indentation plus the column.
        """
        node = self.root
        for segment in path:
            node = _child(node, segment) if node is not None else None
        if not isinstance(node, yaml.ScalarNode):
            return self.locate(path)
        start = node.start_mark
        if node.style in ("|", ">"):
            indent = _block_indent(self.text, start.line + 1)
            return (start.line + 1 + line, indent + column)
        quote = 1 if node.style in ("'", '"') else 0
        if line == 1:
            return (start.line + 1, start.column + 1 + quote + column - 1)
        return (start.line + line, column)

    def problem(
        self,
        path: JsonPath,
        message: str,
        *,
        severity: Literal["error", "warning"] = "error",
        position: tuple[int, int] | None = None,
        key: str | None = None,
    ) -> Problem:
        line, column = position or self.locate(path, key)
        return Problem(
            file=self.file,
            line=line,
            column=column,
            path=format_path(path),
            message=message,
            severity=severity,
        )


def read_source(path: Path, display: str) -> Source:
    """Read and parse one YAML file; raise `PolicyError` with one located problem if unreadable."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PolicyError([Problem(file=display, message=f"cannot read: {exc.strerror}")]) from None
    return parse_source(raw, display)


def parse_source(raw: bytes, display: str, name: str = "") -> Source:
    """Parse YAML bytes; raise `PolicyError` with the located problems if it is not valid YAML."""
    if len(raw) > YAML_MAX_BYTES:
        message = f"larger than {YAML_MAX_BYTES // 1024} KiB: split it, or move data out of it"
        raise PolicyError([Problem(file=display, line=1, column=1, message=message)])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise PolicyError(
            [Problem(file=display, line=line, message=f"invalid UTF-8 at byte {exc.start}")]
        ) from None
    loader = _Loader(text)
    try:
        _check_shape(text, display)
        root = loader.get_single_node()
        duplicates = list(_duplicate_keys(root, set()))
        if duplicates:
            raise PolicyError(
                Problem(
                    file=display,
                    line=node.start_mark.line + 1,
                    column=node.start_mark.column + 1,
                    message=f"duplicate key `{node.value}`",
                )
                for node in duplicates
            )
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        problem = (exc.problem or exc.context or "cannot parse").strip()
        if mark:
            problem += _quoting_hint(text, mark.line, mark.column, problem)
        raise PolicyError(
            [Problem(file=display, line=line, column=column, message=f"invalid YAML: {problem}")]
        ) from None
    except yaml.YAMLError as exc:
        raise PolicyError([Problem(file=display, message=f"invalid YAML: {exc}")]) from None
    finally:
        loader.dispose()
    return Source(file=display, text=text, data=data, root=root, name=name or display)


# `key: value` on a line of a block mapping (or a list item), and a `key: ` inside a flow
# mapping (`{id: r, when: …}`).
_KEY = r"""(?:(?!-\s)[^\s#'"{}\[\],:!&*|>%@`][^:#{}\[\],]*?|"[^"]*"|'[^']*')"""
_BLOCK_ENTRY = re.compile(
    rf"^\s*(?:-\s+)*(?P<key>{_KEY}):[ \t]+(?P<value>[^\s{{}}\[\]].*?|[{{\[].*?)(?:\s+#.*)?$"
)
_FLOW_KEY = re.compile(rf"[{{,]\s*(?P<key>{_KEY}):[ \t]+")
_INDICATORS = "!*&{[%@`"  # a plain value cannot start with these (YAML reads them otherwise)


def _quoting_hint(text: str, line: int, column: int, problem: str) -> str:
    """`; a value starting with `{` must be quoted: `when: '{…} == x'``, when the YAML error
    at (line, column), 0-based, is in a value that quoting would make a string; else ``."""
    lines = text.splitlines()
    if line >= len(lines):
        return ""
    here = lines[line]
    entry = _BLOCK_ENTRY.match(here)
    if entry and (reason := _why_quote(entry["value"])):
        return f"; {reason}: `{entry['key']}: {_quoted(entry['value'])}`"
    flow = [m for m in _FLOW_KEY.finditer(here) if m.end() <= column]
    if not flow:
        return ""
    key, value = flow[-1]["key"], here[flow[-1].end() : column + 1]
    if tag := _UNKNOWN_TAG.search(problem):  # `{when: !variables.x}`: the tag is the value
        return f"; {_why_quote(tag[1])}: `{key}: {_quoted(tag[1])}`"
    if value[:1] in _INDICATORS:
        return f"; a value starting with {_shown(value[0])} must be quoted"
    inside = next((c for c in value if c in "{}[]"), None) or (":" if ": " in value else None)
    if inside is None and value.endswith(":"):
        inside = ":"
    return f"; inside `{{…}}`, a value containing `{inside}` must be quoted" if inside else ""


def _why_quote(value: str) -> str:
    """Why YAML does not read `value` as the string it looks like, as an instruction; else ``."""
    first = value[:1]
    if first in ("{", "[", "'", '"') and not _goes_on(value):
        return ""  # a flow collection or quoted string, as meant (the error is inside it)
    if first in _INDICATORS:
        return f"a value starting with {_shown(first)} must be quoted"
    if first in ("'", '"'):
        return "a value starting with a quoted string must be quoted as a whole"
    if ": " in value:
        return "a value containing `: ` must be quoted"
    return ""


def _shown(char: str) -> str:
    return "a backtick" if char == "`" else f"`{char}`"


def _goes_on(value: str) -> bool:
    """Whether text follows the bracket or quote that closes `value`'s first one."""
    opening = value[0]
    closing = {"{": "}", "[": "]"}.get(opening, opening)
    depth = 0
    for index, char in enumerate(value):
        if opening in "{[" and char == opening:
            depth += 1
        elif char == closing and (opening in "{[" or index > 0):
            depth -= 1
            if depth <= 0:
                return bool(value[index + 1 :].strip())
    return False


def _quoted(value: str) -> str:
    """`value` as a quoted YAML scalar, the way that needs no escapes when there is one."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value and "\\" not in value:
        return f'"{value}"'
    return "'" + value.replace("'", "''") + "'"


# YAML is composed and constructed recursively (in C, for the C loader): a file is refused
# past these, read as a stream of events first. Aliases count as what they expand to, so a
# few lines of anchors cannot stand for millions of values ("billion laughs").
YAML_MAX_BYTES = 1024 * 1024
YAML_MAX_DEPTH = 32
YAML_MAX_NODES = 100_000


def _check_shape(text: str, display: str) -> None:
    """Raise `PolicyError` at the first event past YAML_MAX_DEPTH or YAML_MAX_NODES, or at an
    alias inside the node it names (a cycle)."""
    nodes = 0
    open_: list[list[Any]] = []  # per open collection: [anchor, nodes before it, tallest child]
    anchors: dict[str, tuple[int, int]] = {}  # anchor -> (nodes, height), once closed
    for event in yaml.parse(text, Loader=_Loader):
        height = None  # of a node that ends here
        if isinstance(event, yaml.CollectionStartEvent):
            open_.append([event.anchor, nodes, 0])
            nodes += 1
            if len(open_) > YAML_MAX_DEPTH:
                raise _shape_problem(display, event, f"nested deeper than {YAML_MAX_DEPTH} levels")
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, before, tallest = open_.pop()
            height = tallest + 1
            if anchor is not None:
                anchors[anchor] = (nodes - before, height)
        elif isinstance(event, yaml.ScalarEvent):
            nodes, height = nodes + 1, 0
            if event.anchor is not None:
                anchors[event.anchor] = (1, 0)
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor not in anchors:
                if any(entry[0] == event.anchor for entry in open_):
                    raise _shape_problem(display, event, "an alias inside the node it names")
                continue  # unknown: the composer reports it
            size, height = anchors[event.anchor]
            nodes += size
            if len(open_) + height > YAML_MAX_DEPTH:
                raise _shape_problem(display, event, f"nested deeper than {YAML_MAX_DEPTH} levels")
        if nodes > YAML_MAX_NODES:
            raise _shape_problem(display, event, f"more than {YAML_MAX_NODES:,} values")
        if height is not None and open_:
            open_[-1][2] = max(open_[-1][2], height)


def _shape_problem(display: str, event: yaml.Event, message: str) -> PolicyError:
    mark = event.start_mark
    line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    return PolicyError([Problem(file=display, line=line, column=column, message=message)])


def _child(node: yaml.Node, segment: str | int) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(segment):
                return value_node  # type: ignore[no-any-return]
    elif (
        isinstance(node, yaml.SequenceNode)
        and isinstance(segment, int)
        and 0 <= segment < len(node.value)
    ):
        return node.value[segment]  # type: ignore[no-any-return]
    return None


def _duplicate_keys(node: yaml.Node, seen: set[int]) -> Iterator[yaml.Node]:
    if id(node) in seen:  # aliases share nodes; visit each once
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        keys: set[str] = set()
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in keys:
                    yield key_node
                keys.add(key_node.value)
            yield from _duplicate_keys(value_node, seen)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _duplicate_keys(item, seen)


def _block_indent(text: str, header_line: int) -> int:
    """Indentation of the first content line after a block scalar's header (0-based line)."""
    lines = text.splitlines()
    for line in lines[header_line : header_line + 50]:
        if line.strip():
            return len(line) - len(line.lstrip(" "))
    return 0


_PATH_TOKEN = re.compile(r"\.([^.\[]+)|\[(\d+)\]|\[(?:\"|')?([^\]\"']*)(?:\"|')?\]")


def parse_path(text: str) -> JsonPath:
    """`$.rules[1].when` -> ("rules", 1, "when")."""
    segments: list[str | int] = []
    for name, index, quoted in _PATH_TOKEN.findall(text.removeprefix("$")):
        if index:
            segments.append(int(index))
        else:
            segments.append(name or quoted)
    return tuple(segments)


def format_path(path: JsonPath) -> str:
    out = "$"
    for segment in path:
        if isinstance(segment, int):
            out += f"[{segment}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", segment):
            out += f".{segment}"
        else:
            out += f"[{segment!r}]"
    return out
