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
from service.api.state import load_active
from service.log import configure_logging
from service.settings import Settings
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
    """`create_app(settings)`, the bundled policies compiled once for the whole run: the app's
    load takes them over from the shared set, as a reload takes over what did not change."""
    if Path(settings.policies) != POLICIES:
        return create_app(settings)
    shared = bundled_policies(settings.cel_engine, compare_engines=False)
    return create_app(settings, load_active(settings, previous=shared))


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
