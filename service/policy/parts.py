"""A policy as the compiler sees it: its own file merged with the bases it `extends`.

Every rule, variable and default keeps the site (file and JSON path) it was written at, so
problems point into the right file and `eval --explain` can say where each rule came from.
A child's `params` and `variables` are merged over its base's, key by key; its rules go
`rules_before` + the base's rules + `rules_after`; its `default`, `default_locale` and
`on_error` replace the base's when given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from service.policy.errors import Problem, did_you_mean
from service.policy.model import RULE_LISTS, Outcome, PolicyDocument, Rule
from service.policy.source import JsonPath, Source

__all__ = ["Document", "PolicyParts", "Site", "resolve"]


@dataclass(frozen=True, slots=True)
class Site:
    """Where something was written: a file and the JSON path inside it."""

    source: Source
    path: JsonPath

    def at(self, *segments: str | int) -> Site:
        return Site(self.source, (*self.path, *segments))

    @property
    def line(self) -> int:
        return self.source.locate(self.path)[0]


@dataclass(frozen=True)
class Document:
    """A validated policy file. `rule_indices` maps each kept rule to its index in the file
    when invalid rules were left out (then the file has errors and is compiled only to report
    the rest)."""

    source: Source
    document: PolicyDocument
    rule_indices: Mapping[str, list[int]] | None = None

    @property
    def broken(self) -> bool:
        return self.rule_indices is not None


@dataclass(frozen=True)
class PolicyParts:
    name: str
    source: Source
    description: str
    extends: tuple[str, ...]  # the bases, nearest first
    default_locale: str
    on_error: str
    params: dict[str, Any]
    variables: dict[str, tuple[str | bool, Site]]
    rules: list[tuple[Rule, Site]]
    default: tuple[Outcome, Site]
    broken: bool = field(default=False)  # compile only to report problems


def resolve(
    documents: Mapping[str, Document], names: Iterable[str] | None = None
) -> tuple[dict[str, PolicyParts], list[Problem]]:
    """Merge every policy with its bases; unknown bases and cycles are problems. `names`:
    every policy there is, for the hint at an unknown base (default: the documents)."""
    resolver = _Resolver(documents, list(names) if names is not None else list(documents))
    parts = {}
    for name in documents:
        resolved = resolver.parts(name, ())
        if resolved is not None:
            parts[name] = resolved
    return parts, resolver.problems


class _Resolver:
    def __init__(self, documents: Mapping[str, Document], names: list[str]) -> None:
        self.documents = documents
        self.names = names
        self.problems: list[Problem] = []
        self.done: dict[str, PolicyParts | None] = {}

    def parts(self, name: str, chain: tuple[str, ...]) -> PolicyParts | None:
        if name not in self.done:
            self.done[name] = self._resolve(name, chain)
        return self.done[name]

    def _resolve(self, name: str, chain: tuple[str, ...]) -> PolicyParts | None:
        entry = self.documents[name]
        source, doc = entry.source, entry.document
        own = self._own_rules(entry)
        if doc.extends is None:
            return self._root(name, entry, own)
        extends = Site(source, ("extends",))
        if doc.rules:
            self._error(
                Site(source, ("rules",)),
                "a policy that extends another adds `rules_before` or `rules_after`; "
                "its `rules` are the base's",
            )
            return None
        if doc.extends not in self.documents:
            hint = did_you_mean(doc.extends, self.names)
            self._error(extends, f"unknown base policy `{doc.extends}`{hint}")
            return None
        trail = (*chain, name)
        if doc.extends in trail:
            cycle = (*trail[trail.index(doc.extends) :], doc.extends)
            self._error(extends, "cyclic extends: " + " -> ".join(f"`{n}`" for n in cycle))
            return None
        base = self.parts(doc.extends, (*chain, name))
        if base is None or base.broken:
            self._error(extends, f"base policy `{doc.extends}` has problems of its own")
            return None
        default = (doc.default, Site(source, ("default",))) if doc.default else base.default
        return PolicyParts(
            name=name,
            source=source,
            description=doc.description or base.description,
            extends=(doc.extends, *base.extends),
            default_locale=doc.default_locale or base.default_locale,
            on_error=doc.on_error or base.on_error,
            params={**base.params, **doc.params},
            variables={**base.variables, **_variables(source, doc)},
            rules=[*own["rules_before"], *base.rules, *own["rules_after"]],
            default=default,
            broken=entry.broken,
        )

    def _root(
        self, name: str, entry: Document, own: dict[str, list[tuple[Rule, Site]]]
    ) -> PolicyParts | None:
        source, doc = entry.source, entry.document
        for key in ("rules_before", "rules_after"):
            if own[key]:
                self._error(Site(source, (key,)), f"`{key}` needs `extends`; use `rules`")
                return None
        if doc.default is None:
            self._error(Site(source, ()), "missing `default`: what happens when no rule matches")
            return None
        return PolicyParts(
            name=name,
            source=source,
            description=doc.description,
            extends=(),
            default_locale=doc.default_locale or "en",
            on_error=doc.on_error or "skip",
            params=dict(doc.params),
            variables=_variables(source, doc),
            rules=own["rules"],
            default=(doc.default, Site(source, ("default",))),
            broken=entry.broken,
        )

    def _own_rules(self, entry: Document) -> dict[str, list[tuple[Rule, Site]]]:
        rules = {}
        for key in RULE_LISTS:
            listed: list[Rule] = getattr(entry.document, key)
            indices = (entry.rule_indices or {}).get(key) or list(range(len(listed)))
            sites = [Site(entry.source, (key, i)) for i in indices]
            rules[key] = list(zip(listed, sites, strict=True))
        return rules

    def _error(self, site: Site, message: str) -> None:
        self.problems.append(site.source.problem(site.path, message))


def _variables(source: Source, doc: PolicyDocument) -> dict[str, tuple[str | bool, Site]]:
    return {name: (text, Site(source, ("variables", name))) for name, text in doc.variables.items()}
