"""Mappings: from another service's webhook payload to a connection request.

A mapping is a YAML tree that mirrors the request; each leaf is a CEL expression over
`payload` (the decoded JSON body) and `headers` (lowercase names), or a YAML literal
(`has_photo: true`). It is compiled and checked at load time like a policy: unknown request
fields, syntax errors, unknown names and functions, and required fields left unmapped are
problems with file:line. A leaf for an optional field whose payload key is missing leaves the
field out; any other failure names the mapping leaf and the request field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from service.policy.cel import (
    FUNCTIONS,
    MACROS,
    REQUEST,
    Call,
    CelSyntaxError,
    EvalError,
    Found,
    Misuse,
    parse,
    to_json,
)
from service.policy.cel.schema import Field, Message
from service.policy.engines import Engine, Program
from service.policy.errors import Problem, did_you_mean
from service.policy.parts import Site
from service.policy.request import ConnectionRequest, InputError, convert

__all__ = ["MappingError", "RequestMapping", "compile_mapping"]

ROOTS = ("payload", "headers")


class MappingError(Exception):
    """A payload that does not map to a valid request."""

    def __init__(self, field: str, where: str, message: str) -> None:
        super().__init__(f"`{field}` (mapped at {where}): {message}")
        self.field, self.where, self.message = field, where, message


@dataclass(frozen=True, slots=True)
class Leaf:
    field: tuple[str, ...]  # the request field it fills, e.g. ("requester", "name")
    program: Program
    where: str  # `file:line` of the expression
    optional: bool  # absent in the payload -> absent in the request


@dataclass(frozen=True)
class RequestMapping:
    leaves: tuple[Leaf, ...]
    engine: Engine

    def apply(self, payload: Any, headers: Mapping[str, str]) -> ConnectionRequest:
        """Evaluate every leaf and validate the result; raises `MappingError`."""
        names = {"payload": payload, "headers": dict(headers)}
        scope = self.engine.bind(names)
        data: dict[str, Any] = {}
        for leaf in self.leaves:
            try:
                value = to_json(scope.run(leaf.program))
            except EvalError as exc:
                if leaf.optional and exc.kind == "missing":
                    continue
                raise MappingError(".".join(leaf.field), leaf.where, str(exc)) from None
            if value is None and leaf.optional:
                continue
            target = data
            for key in leaf.field[:-1]:
                target = target.setdefault(key, {})
            target[leaf.field[-1]] = value
        try:
            return convert(data, ConnectionRequest)
        except InputError as exc:
            field = (exc.path or "$").removeprefix("$").lstrip(".") or "request"
            raise MappingError(field, self._where(field), exc.message) from None

    def _where(self, field: str) -> str:
        """The leaf that filled `field` (or the closest enclosing one)."""
        for leaf in self.leaves:
            if field.startswith(".".join(leaf.field)):
                return leaf.where
        return self.leaves[0].where if self.leaves else "the mapping"


def compile_mapping(
    tree: Any, site: Site, engine: Engine
) -> tuple[RequestMapping | None, list[Problem]]:
    """Compile a mapping tree found at `site`; None when there are problems."""
    compiler = _MappingCompiler(engine)
    if not isinstance(tree, dict):
        compiler.error(site, "a mapping mirrors the request: an object of request fields")
    else:
        compiler.struct(tree, site, (), REQUEST)
    if compiler.problems:
        return None, compiler.problems
    return RequestMapping(tuple(compiler.leaves), engine), []


class _MappingCompiler:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.leaves: list[Leaf] = []
        self.problems: list[Problem] = []

    def error(self, site: Site, message: str, **where: Any) -> None:
        self.problems.append(site.source.problem(site.path, message, **where))

    def struct(
        self,
        tree: dict[str, Any],
        site: Site,
        field: tuple[str, ...],
        message: Message,
    ) -> None:
        fields = message.fields
        for key, value in tree.items():
            if key not in fields:
                dotted = ".".join((*field, str(key)))
                self.error(
                    site.at(key),
                    f"unknown request field `{dotted}`{did_you_mean(str(key), fields)}",
                    position=site.source.locate(site.path, key=str(key)),
                )
                continue
            self.node(value, site.at(key), (*field, key), fields[key])
        for name, spec in fields.items():
            if spec.required and name not in tree:
                dotted = ".".join((*field, name))
                self.error(site, f"the request needs `{dotted}`: map it")

    def node(self, value: Any, site: Site, field: tuple[str, ...], spec: Field) -> None:
        if isinstance(value, dict) and spec.kind == "message" and spec.message is not None:
            self.struct(value, site, field, spec.message)
        elif isinstance(value, dict) and spec.kind == "any":
            for key, item in value.items():  # attributes: free keys, leaves or nested objects
                self.free(item, site.at(key), (*field, str(key)))
        else:
            self.leaf(value, site, field, optional=not spec.required)

    def free(self, value: Any, site: Site, field: tuple[str, ...]) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                self.free(item, site.at(key), (*field, str(key)))
        else:
            self.leaf(value, site, field, optional=True)

    def leaf(self, value: Any, site: Site, field: tuple[str, ...], *, optional: bool) -> None:
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int | float):
            text = repr(value)
        elif isinstance(value, str):
            text = value
        else:
            self.error(site, "a mapping leaf is a CEL expression (text) or a literal")
            return
        line = site.source.locate(site.path)[0]
        try:
            program = self.engine.compile(parse(text))
        except CelSyntaxError as exc:
            position = site.source.locate_in_scalar(site.path, exc.line, exc.column)
            self.error(site, exc.message, position=position)
            return
        ok = True
        for found in program.expression.references:
            message = _check(found)
            if message:
                self.error(site, message)
                ok = False
        if ok:
            where = f"{site.source.file}:{line}"
            self.leaves.append(Leaf(field, program, where, optional))


def _check(found: Found) -> str | None:
    if isinstance(found, Misuse):
        return found.message
    if isinstance(found, Call):
        if found.name in FUNCTIONS or found.name in MACROS:
            return None
        return f"unknown function `{found.name}`{did_you_mean(found.name, FUNCTIONS)}"
    root = found.path[0]
    if root not in ROOTS:
        return f"unknown name `{root}`: a mapping reads `payload` and `headers`"
    return None
