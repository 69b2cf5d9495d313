"""schemathesis against the app in process: every operation, every default check, with API
tokens on (so it also checks that guarded operations refuse requests without one)."""

from __future__ import annotations

import schemathesis
import structlog

from service.settings import Settings
from tests.api.conftest import AUTH, TOKEN, app_for
from tests.conftest import POLICIES

app = app_for(Settings(policies=str(POLICIES), api_tokens=f"tests:{TOKEN}"))
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
def test_every_operation_keeps_the_contract(case: schemathesis.Case) -> None:
    with structlog.testing.capture_logs() as events:
        case.call_and_validate(headers=AUTH)
    assert not [e for e in events if e.get("log_level") == "error"], events  # no fault logged
