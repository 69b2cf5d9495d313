"""The C++ engine is given only the request fields a policy reads.

`request_fields` reads them off the parse trees at compile time; `request_data` then builds
only those. What it leaves out can never be read, so the decisions do not change: the
differential test and every policy suite (run under both engines) hold that; here, the
analysis itself and the projection's values.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.policy import ConnectionRequest
from service.policy.cel import parse, request_fields
from service.policy.cel.schema import REQUEST_SHAPE
from service.policy.engines.celexpr import request_data
from tests.conftest import bundled_policies
from tests.strategies import REQUESTS


def fields_of(*texts: str) -> Any:
    return request_fields(parse(text) for text in texts)


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        (["request.requester.name == 'Ann'"], {"requester": ("name",)}),
        (
            ["request.requester.name != ''", "request.requester.industry == 'x'"],
            {"requester": ("industry", "name")},
        ),
        (["has(request.message)"], {"message": None}),
        (["request.message.trim() == ''"], {"message": None}),
        (["has(request.relationship.known_via)"], {"relationship": ("known_via",)}),
        (["size(request.requester) > 2"], {"requester": None}),
        (["size(request.requester) > 2 && request.requester.name == ''"], {"requester": None}),
        (["request.attributes.team == 'sales'"], {"attributes": None}),
        (["request.received_at < now"], {"received_at": None}),
        (
            ["request.relationship.shared_employers.exists(e, e == request.requester.company)"],
            {"relationship": ("shared_employers",), "requester": ("company",)},
        ),
        (["[1, 2].exists(request, request == 1)"], {}),  # a comprehension's own name
        (  # `.request` is the root scope's, even where a comprehension variable is `request`
            ["[1].exists(request, .request.requester.company == 'Acme')"],
            {"requester": ("company",)},
        ),
        (["params.limit > 3 && variables.x"], {}),
        (["size(request) > 0"], None),  # the request as a value: all of it
        (["request['requester'].name == ''"], None),  # an index: not followed, all of it
    ],
)
def test_the_fields_read_are_found_in_the_expressions(texts: list[str], expected: Any) -> None:
    assert fields_of(*texts) == expected


def test_the_default_policy_reads_a_third_of_the_request() -> None:
    policy = bundled_policies("cel-expr-python").get("default")
    assert policy.request_fields == {
        "message": None,
        "recipient": ("connection_count", "connection_limit"),
        "relationship": (
            "connected_elsewhere",
            "known_via",
            "last_interaction_at",
            "met_in_person",
            "mutual_connections",
            "worked_together",
        ),
        "requester": ("first_name", "has_photo", "industry", "name"),
    }


def _projections() -> st.SearchStrategy[dict[str, tuple[str, ...] | None]]:
    """Any choice of top-level fields, each whole or a sorted choice of its sub-fields."""
    shape = REQUEST_SHAPE
    assert isinstance(shape, dict)

    def one(key: str) -> st.SearchStrategy[tuple[str, ...] | None]:
        sub = shape[key]
        if not isinstance(sub, dict):
            return st.none()
        return st.none() | st.lists(st.sampled_from(sorted(sub)), unique=True).map(
            lambda names: tuple(sorted(names))
        )

    return st.lists(st.sampled_from(sorted(shape)), unique=True).flatmap(
        lambda keys: st.fixed_dictionaries({key: one(key) for key in keys})
    )


@given(REQUESTS, _projections())
def test_a_projection_is_the_full_data_cut_down(
    request: ConnectionRequest, fields: dict[str, tuple[str, ...] | None]
) -> None:
    full = request_data(request)
    expected: dict[str, Any] = {}
    for key, names in fields.items():
        if key not in full:  # absent: left out either way, so that `has()` is false
            continue
        if names is None:
            expected[key] = full[key]
        else:
            expected[key] = {name: full[key][name] for name in names if name in full[key]}
    assert request_data(request, fields) == expected
