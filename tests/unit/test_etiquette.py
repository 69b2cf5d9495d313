"""The etiquette of every bundled policy, over a grid of the kinds of person who ask: every
combination of how I know them, whether they wrote, photo, the networks we share, first name,
locale and my connection count. Each decision must be right for the person it reaches
(issue "Domain", docs/policy-language.md "Wording"), whatever the suites happened to try."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime

import pytest

from service.policy import evaluate
from service.policy.request import ConnectionRequest, Person, Relationship
from tests.conftest import bundled_policies

NOW = datetime(2026, 11, 22, 9, tzinfo=UTC)
PERSONAL = ("friend", "family")
KNOWN = ("colleague", "client", "classmate", *PERSONAL)
TIES: dict[str, Relationship] = {
    "stranger": Relationship(),
    "stranger, 5 mutual": Relationship(mutual_connections=5),
    "met at an event": Relationship(known_via="event"),
    "recruiter": Relationship(known_via="recruiter"),
    "worked together": Relationship(worked_together=True),
    "met in person": Relationship(met_in_person=True),
    **{k: Relationship(known_via=k) for k in KNOWN},  # type: ignore[arg-type]
    **{
        f"{k}, on WhatsApp": Relationship(known_via=k, connected_elsewhere=["whatsapp"])  # type: ignore[arg-type]
        for k in (*PERSONAL, "colleague")
    },
}
ME = Person(name="Sam Rivera", has_photo=True, industry="software", connection_count=1200)
ME_NEAR_LIMIT = Person(name="Sam Rivera", has_photo=True, connection_count=29_500)
STRANGER_PHRASES = ("met yet", "kennen uns noch nicht", "ne nous connaissons pas", "connaissions")
INFORMAL = {
    "de": re.compile(r"\b(du|dir|dich|dein\w*)\b"),
    "fr": re.compile(r"\b(tu|te|toi|tes|ton|ta)\b"),
}
FORMAL = {"de": re.compile(r"\b(Sie|Ihnen|Ihre?)\b"), "fr": re.compile(r"\b(vous|votre|vos)\b")}


def grid() -> list[tuple[str, ConnectionRequest, str]]:
    cases = []
    for (tie, relationship), note, photo, first, me, locale in itertools.product(
        TIES.items(),
        ("", "Loved your talk."),
        (True, False),
        (None, "Noor"),
        (ME, ME_NEAR_LIMIT),
        ("en", "de", "fr"),
    ):
        requester = Person(name="Noor Ali", first_name=first, has_photo=photo, industry="software")
        request = ConnectionRequest(
            message=note, requester=requester, recipient=me, relationship=relationship
        )
        cases.append((tie, request, locale))
    return cases


GRID = grid()
POLICY_NAMES = sorted(bundled_policies().policies)


def known(tie: str) -> bool:
    return tie.split(",")[0] in (*KNOWN, "worked together", "met in person")


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_every_kind_of_person_gets_a_fitting_answer(policy: str) -> None:
    wrong = unfitting(policy)
    assert not wrong, f"{len(wrong)} of {len(GRID)}:\n" + "\n".join(wrong[:20])


def unfitting(policy: str) -> list[str]:
    """What is wrong with the answers `policy` gives across the grid."""
    policy_set = bundled_policies()
    wrong: list[str] = []
    for tie, request, locale in GRID:
        decision = evaluate(policy_set, policy, request, now=NOW, locale=locale)
        reply = decision.reply.text if decision.reply is not None else ""
        who = f"{tie}, note={bool(request.message)}, photo={request.requester.has_photo}, {locale}"
        problems = []
        if decision.decision == "ignore" and decision.reply is not None:
            problems.append("a reply to a request left pending: nobody would send it")
        if decision.decision in ("decline", "defer") and not reply:
            problems.append(f"a {decision.decision} in silence")
        if known(tie) and decision.decision == "ignore":
            problems.append("someone known left pending")
        if known(tie) and any(p in reply for p in STRANGER_PHRASES):
            problems.append("someone known treated as a stranger")
        if not known(tie) and not request.message and decision.decision == "decline":
            problems.append("a stranger who did not write declined (leave them pending)")
        if "WhatsApp" not in tie and re.search(
            r"already (in touch|connected)|schon .*(Kontakt|verbunden)|déjà en contact", reply
        ):
            problems.append("claims we are in touch elsewhere")
        if locale in INFORMAL and reply:
            personal = tie.split(",")[0] in PERSONAL
            if personal and FORMAL[locale].search(reply):
                problems.append("formal to a friend")
            if not personal and INFORMAL[locale].search(reply):
                problems.append("informal to someone who is not a friend")
        if request.requester.first_name and locale == "en" and "Noor Ali" in reply:
            problems.append("greeted by full name in English")
        wrong += [f"{who}: {decision.rule}: {p}: {reply!r}" for p in problems]
    return wrong
