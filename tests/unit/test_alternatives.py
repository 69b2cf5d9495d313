"""What would change a decision (service/policy/alternatives.py): the alternatives for the
example requests, and that every alternative, applied, really is decided so."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from service.policy import PolicyError, evaluate, load_policies
from service.policy.alternatives import with_field
from service.policy.request import decode_request
from tests.conftest import POLICIES, bundled_policies

NOW = datetime(2026, 11, 22, 9, tzinfo=UTC)
SAMPLES = sorted((POLICIES.parent / "examples" / "requests").glob("*.json"))


def explained(name: str, policy: str = "default") -> list[tuple[str, str | None, str, object]]:
    request = decode_request(
        (POLICIES.parent / "examples" / "requests" / f"{name}.json").read_bytes()
    )
    decision = evaluate(bundled_policies(), policy, request, now=NOW, explain=True)
    assert decision.trace is not None
    return [(a.decision, a.rule, a.field, a.value) for a in decision.trace.alternatives]


def test_the_examples_alternatives_on_default() -> None:
    assert explained("stranger") == [
        ("accept", "close-tie", "relationship.met_in_person", True),
        ("decline", "personal-tie", "relationship.known_via", "friend"),
        ("ignore", None, "message", "Hello — I'd like to connect."),
    ]
    assert explained("friend") == [("accept", "close-tie", "relationship.known_via", "colleague")]
    assert explained("old-colleague") == [
        ("accept", "my-field", "relationship.worked_together", False),
        ("decline", "personal-tie", "relationship.known_via", "friend"),
    ]


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.stem)
def test_every_alternative_holds(sample: Path) -> None:
    policy_set = bundled_policies()
    request = decode_request(sample.read_bytes())
    for name in policy_set.policies:
        decision = evaluate(policy_set, name, request, now=NOW, explain=True)
        assert decision.trace is not None
        reached = [a.decision for a in decision.trace.alternatives]
        assert decision.decision not in reached, name
        assert len(reached) == len(set(reached)), name
        for alternative in decision.trace.alternatives:
            changed = with_field(request, tuple(alternative.field.split(".")), alternative.value)
            msgspec.convert(msgspec.to_builtins(changed), type(request))  # a request one can send
            again = evaluate(policy_set, name, changed, now=NOW)
            assert (again.decision, again.rule) == (alternative.decision, alternative.rule), (
                name,
                alternative,
            )


def test_an_alternative_carries_the_rules_hint_in_the_requesters_locale() -> None:
    request = decode_request((SAMPLES[0].parent / "stranger.json").read_bytes())
    for locale, hint in [
        ("fr", "Si nous nous connaissons, précisez d'où dans votre message."),
        ("pt", "If we have met or worked together, say where in your note."),  # the default's
    ]:
        decision = evaluate(
            bundled_policies(), "default", request, now=NOW, explain=True, locale=locale
        )
        assert decision.trace is not None
        accept = decision.trace.alternatives[0]
        assert (accept.rule, accept.hint) == ("close-tie", hint)
        assert decision.trace.alternatives[1].hint is None  # personal-tie has none


HINTED = """\
apiVersion: handshake/v1
kind: ConnectionPolicy
default_locale: en
rules:
  - id: r
    when: request.requester.has_photo
    decision: accept
    rationale: x
    hint: {de: "Hallo {{ request.requester.name }}"}
default: {decision: ignore, rationale: y}
"""


def test_check_holds_a_hint_to_plain_text_in_the_default_locale(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(HINTED)
    with pytest.raises(PolicyError) as raised:
        load_policies(tmp_path)
    messages = {(p.severity, p.message) for p in raised.value.problems}
    assert messages == {
        ("error", "a hint is plain text: no `{{ }}` placeholders"),
        ("warning", "no hint in the default locale `en`: requesters in other locales get none"),
    }
