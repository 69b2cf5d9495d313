"""An app on the bundled policies, a test client, and its log captured as JSON lines."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from service.api import create_app
from service.api.state import Active, webhooks_path
from service.log import configure_logging
from service.revision import policy_revision
from service.settings import Settings
from service.webhook_sources import Webhooks, load_webhooks
from tests.conftest import POLICIES, bundled_policies

REQUESTS = POLICIES.parent / "examples" / "requests"
TOKEN = "ci-test-token-0123456789"  # the `tests` caller
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def sample(name: str = "stranger") -> dict[str, Any]:
    return json.loads((REQUESTS / f"{name}.json").read_text(encoding="utf-8"))


class Log(io.StringIO):
    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.getvalue().splitlines()]


def app_for(settings: Settings) -> Litestar:
    """`create_app(settings)`, the bundled policies compiled once for the whole run (as the
    app compiles them: the engine that serves, with the directory's revision)."""
    if Path(settings.policies) != POLICIES:
        return create_app(settings)
    policy_set = bundled_policies(
        settings.cel_engine,
        compare_engines=False,
        revision=policy_revision(POLICIES, settings.revision),
    )
    path = webhooks_path(settings)
    webhooks = load_webhooks(path, policy_set, settings.default_policy) if path else Webhooks()
    return create_app(settings, Active(policy_set, webhooks))


@pytest.fixture
def log() -> Log:
    stream = Log()
    configure_logging(Settings(log_format="json"), stream)
    return stream


@pytest.fixture
def settings() -> Settings:
    return Settings(policies=str(POLICIES), api_tokens=f"tests:{TOKEN}")


@pytest.fixture
def app(settings: Settings, log: Log) -> Litestar:
    return app_for(settings)


@pytest.fixture
def client(app: Litestar) -> Iterator[TestClient[Litestar]]:
    with TestClient(app) as client:
        client.headers.update(AUTH)
        yield client
