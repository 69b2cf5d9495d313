"""Templates for rationales, replies and outputs: text with `{{ <CEL expression> }}` placeholders.

Placeholders are compiled with the policy (never per request) and evaluated in the same CEL
environment as conditions. A placeholder may not contain `}}`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import msgspec

from service.policy.cel import CelSyntaxError, Value, parse, to_json
from service.policy.engines import Engine, Program, Scope

__all__ = ["NOTHING_KNOWN", "Template", "TemplateError", "choose_locale", "compile_template"]

NOTHING_KNOWN: Mapping[Program, Value] = MappingProxyType({})
_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)


class TemplateError(Exception):
    """A template does not compile; `offset` is the 0-based index in the template's text."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message, self.offset = message, offset


@dataclass(frozen=True, slots=True)
class Placeholder:
    program: Program
    offset: int  # index of the expression's first character in the template


@dataclass(frozen=True, slots=True)
class Template:
    source: str
    parts: tuple[str | Placeholder, ...]

    @property
    def placeholders(self) -> Iterable[Placeholder]:
        return (part for part in self.parts if isinstance(part, Placeholder))

    def render(self, scope: Scope, known: Mapping[Program, Value] = NOTHING_KNOWN) -> str:
        """The text; raises `EvalError` when a placeholder fails. `known`: placeholder values
        computed already (by a rules program)."""
        texts = []
        for part in self.parts:
            if isinstance(part, str):
                texts.append(part)
                continue
            program = part.program
            value = known[program] if program in known else scope.run(program)
            texts.append(to_text(to_json(value)))
        return "".join(texts)

    def render_value(self, scope: Scope, known: Mapping[Program, Value] = NOTHING_KNOWN) -> Any:
        """Like `render`, but a template that is one placeholder keeps its value's type."""
        if len(self.parts) == 1 and isinstance(self.parts[0], Placeholder):
            program = self.parts[0].program
            return to_json(known[program] if program in known else scope.run(program))
        return self.render(scope, known)


def compile_template(source: str, engine: Engine) -> Template:
    """Split and compile every placeholder; raises `TemplateError` with a position."""
    parts: list[str | Placeholder] = []
    position = 0
    for match in _PLACEHOLDER.finditer(source):
        _literal(parts, source, position, match.start())
        expression = match.group(1)
        offset = match.start(1)
        if not expression.strip():
            raise TemplateError("empty placeholder `{{ }}`", match.start())
        try:
            program = engine.compile(parse(expression))
        except CelSyntaxError as exc:
            lines = expression.split("\n")
            at = offset + sum(len(line) + 1 for line in lines[: exc.line - 1]) + exc.column - 1
            raise TemplateError(f"in placeholder: {exc.message}", at) from None
        parts.append(Placeholder(program, offset))
        position = match.end()
    _literal(parts, source, position, len(source))
    return Template(source, tuple(parts))


def _literal(parts: list[str | Placeholder], source: str, start: int, end: int) -> None:
    text = source[start:end]
    if "{{" in text:
        raise TemplateError("unclosed placeholder: `{{` without `}}`", start + text.index("{{"))
    if "}}" in text:
        raise TemplateError("`}}` without `{{`", start + text.index("}}"))
    if text:
        parts.append(text)


def to_text(value: Any) -> str:
    """How a placeholder's value reads in text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ", ".join(to_text(item) for item in value)
    if isinstance(value, dict):
        return msgspec.json.encode(value).decode()
    return str(value)


def choose_locale(available: Iterable[str], requested: str | None, default: str) -> str | None:
    """The reply locale: the requested tag, then its language (`pt-BR` -> `pt`), then the
    policy's default; case-insensitive. None when none of them has a text."""
    by_tag = {tag.lower(): tag for tag in available}
    candidates = []
    if requested:
        candidates += [requested, requested.split("-", 1)[0]]
    candidates.append(default)
    for candidate in candidates:
        if candidate.lower() in by_tag:
            return by_tag[candidate.lower()]
    return None
