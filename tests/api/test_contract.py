"""schemathesis against the app in process: every operation, every default check."""

from __future__ import annotations

import schemathesis

from service.api import create_app
from service.settings import Settings
from tests.conftest import POLICIES

app = create_app(Settings(policies=str(POLICIES)))
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
def test_every_operation_keeps_the_contract(case: schemathesis.Case) -> None:
    case.call_and_validate()
