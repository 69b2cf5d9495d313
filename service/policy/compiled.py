"""A compiled policy set: what the compiler builds and the evaluator reads, frozen.

Every CEL program in it was compiled by `engine`, once, at load; nothing here changes after.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from difflib import get_close_matches
from typing import Any

from service.policy.cel import RequestFields
from service.policy.engines import Engine, Program, RulesProgram, Scope
from service.policy.errors import Problem, UnknownPolicyError
from service.policy.request import ConnectionRequest
from service.policy.wording import Template

__all__ = ["CompiledOutcome", "CompiledPolicy", "CompiledRule", "PolicySet"]


@dataclass(frozen=True, slots=True)
class CompiledOutcome:
    decision: str
    rationale: Template
    reply: Mapping[str, Template]
    outputs: Mapping[str, Template]

    def placeholder_programs(self) -> list[Program]:
        """Every placeholder's program: the rationale's, each reply's, each output's."""
        templates = [self.rationale, *self.reply.values(), *self.outputs.values()]
        return [part.program for template in templates for part in template.placeholders]


@dataclass(frozen=True, slots=True)
class CompiledRule:
    id: str
    description: str
    when: Program
    outcome: CompiledOutcome
    origin: str  # `file:line` in the policy directory where the rule was written (maybe a base's)
    hint: Mapping[str, str] = field(default_factory=dict)  # by locale: for the requester


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    name: str
    file: str
    description: str
    extends: tuple[str, ...]  # the bases, nearest first
    default_locale: str
    on_error: str
    params: Mapping[str, Any]  # as written, merged over the bases'
    params_data: object  # the same, as the engine's `prepare` converted it once
    variables: Mapping[str, Program]
    rules: tuple[CompiledRule, ...]
    default: CompiledOutcome
    engine: Engine
    rules_program: RulesProgram | None = None  # the engine's one-call form of the rules
    request_fields: RequestFields | None = None  # what the expressions read (None: anything)
    # The strings and integers its expressions and params hold: the values that can tip a
    # condition (alternatives.py tries requests with them).
    literals: tuple[str | int, ...] = ()
    key: str = ""  # what it was compiled from: its file and its bases', the engine (loader.py)
    problems: tuple[Problem, ...] = ()  # the warnings compiling it gave

    def programs(self) -> list[Program]:
        """Every program: variables, conditions, then each outcome's placeholders."""
        outcomes = [*(rule.outcome for rule in self.rules), self.default]
        return [
            *self.variables.values(),
            *(rule.when for rule in self.rules),
            *(p for outcome in outcomes for p in outcome.placeholder_programs()),
        ]

    def scope(self, request: ConnectionRequest, now: datetime) -> Scope:
        """The names CEL sees; `variables` are computed lazily, at most once each."""
        return self.engine.scope(
            request, now, self.params_data, self.variables, self.request_fields
        )


@dataclass(frozen=True, slots=True)
class FileState:
    """What a load knew of one policy file, so that the next one can tell it unchanged
    without reading it (loader.py)."""

    signature: tuple[int, ...]  # device, inode, size, and modification and change times
    settled: bool  # last changed well before it was read: its signature can be trusted
    digest: bytes  # sha256 of its content
    content: bytes  # sha256 of its content and the name shown: what a compiled policy keys on


@dataclass(frozen=True)
class PolicySet:
    """Everything one evaluation needs. Replaced whole on reload, never changed in place."""

    policies: Mapping[str, CompiledPolicy]
    digest: str
    revision: str | None = None
    engine: str = "cel-expr-python"
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    warnings: tuple[Problem, ...] = ()
    files: Mapping[str, FileState] = field(default_factory=dict, repr=False)  # by relative path

    def get(self, name: str) -> CompiledPolicy:
        try:
            return self.policies[name]
        except KeyError:
            raise UnknownPolicyError(name, self.neighbours(name)) from None

    def neighbours(self, name: str) -> list[str]:
        """The names a "did you mean" for `name` is sought among: those in its folder (or in
        the folder nearest to it), at most MAX_NEIGHBOURS, so that an unknown name costs
        little at any number of policies (difflib over 10,000 names took 150 ms)."""
        folders = self._folders
        folder = name.rpartition("/")[0]
        if folder not in folders and len(folders) <= MAX_NEIGHBOURS:
            nearest = get_close_matches(folder, list(folders), n=1, cutoff=0.7)
            folder = nearest[0] if nearest else folder
        names = folders.get(folder, [])
        return names if len(names) <= MAX_NEIGHBOURS else []

    @functools.cached_property
    def _folders(self) -> dict[str, list[str]]:
        folders: dict[str, list[str]] = {}
        for name in self.policies:
            folders.setdefault(name.rpartition("/")[0], []).append(name)
        return folders


MAX_NEIGHBOURS = 256
