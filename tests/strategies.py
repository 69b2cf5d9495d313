"""Hypothesis strategies for connection requests that are valid under the schema."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
from hypothesis import strategies as st

from service.policy.request import KNOWN_VIA, ConnectionRequest

# Any character the schema allows: no surrogates, no U+0000 (refused, as Google's CEL cuts there).
CHARACTERS = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
TEXT = st.text(CHARACTERS, max_size=40)
NAME = st.text(CHARACTERS, min_size=1, max_size=40)
PLATFORM = st.sampled_from(["linkedin", "xing", "github", "instagram", "facebook", "whatsapp"])
# RFC 3339 offsets are whole minutes, as in any JSON a client can send.
ZONE = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
TIMESTAMP = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2099, 12, 31), timezones=ZONE
)
COUNT = st.integers(min_value=0, max_value=10_000_000)
INDUSTRY = st.sampled_from(["software", "Software ", "data", "finance", "insurance"]) | TEXT


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(NAME, children, max_size=4),
    max_leaves=12,
)


def person() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"name": NAME, "has_photo": st.booleans()},
        optional={
            "id": NAME,
            "headline": optional(TEXT),
            "industry": optional(INDUSTRY),
            "function": optional(TEXT),
            "region": optional(st.sampled_from(["Europe", "europe", "Asia"]) | TEXT),
            "company": optional(TEXT),
            "connection_count": optional(COUNT | st.integers(29_000, 30_000)),
            "connection_limit": optional(COUNT),
            "last_active_at": optional(TIMESTAMP),
        },
    )


RELATIONSHIP = st.fixed_dictionaries(
    {},
    optional={
        "met_in_person": st.booleans(),
        "worked_together": st.booleans(),
        "shared_employers": st.lists(TEXT, max_size=3),
        "mutual_connections": COUNT | st.integers(0, 20),
        "last_interaction_at": optional(TIMESTAMP),
        "known_via": optional(st.sampled_from(KNOWN_VIA)),
        "connected_elsewhere": st.lists(PLATFORM, max_size=3),
    },
)

REQUEST_DATA = st.fixed_dictionaries(
    {"requester": person(), "recipient": person()},
    optional={
        "id": NAME,
        "platform": PLATFORM,
        "received_at": optional(TIMESTAMP),
        "message": st.sampled_from(["", "  ", "Hello!"]) | TEXT,
        "relationship": RELATIONSHIP,
        "attributes": st.dictionaries(NAME, JSON, max_size=4),
    },
)
REQUESTS = REQUEST_DATA.map(lambda data: msgspec.convert(data, ConnectionRequest))
NOW = TIMESTAMP.map(lambda ts: ts.astimezone(UTC))
LOCALES = st.none() | st.sampled_from(["en", "de", "de-AT", "fr", "FR-ca", "ja", "pt-BR"])
