"""An in-process gateway (localdisk, embedded bus, SQLite) for HTTP tests."""
from __future__ import annotations

from typing import Iterator

import pytest
import tornado.web

from core.services import Services
from core.settings import Settings
from upload.app import make_app


@pytest.fixture
def env(tmp_path, http_port) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"WORKDIR": str(tmp_path / "work"), "LISTEN_PORT": str(http_port),
            "MAX_LENGTH": str(1024 * 1024)}


@pytest.fixture
def services(env: dict[str, str]) -> Iterator[Services]:
    built = Services.build(Settings.from_env(env))
    yield built
    built.close()


@pytest.fixture
def app(services: Services) -> tornado.web.Application:
    return make_app(services)
