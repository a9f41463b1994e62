"""An in-process gateway (localdisk, embedded bus, SQLite) with ``AUTH_REQUIRED`` on (the
default), and a way to mint API keys for it."""
from __future__ import annotations

from typing import Callable, Iterator

import pytest
import tornado.web

from auth.keys import create_key
from core.services import Services
from core.settings import Settings
from upload.app import make_app


@pytest.fixture
def env(tmp_path, http_port) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"WORKDIR": str(tmp_path / "work"), "LISTEN_PORT": str(http_port)}


@pytest.fixture
def services(env: dict[str, str]) -> Iterator[Services]:
    built = Services.build(Settings.from_env(env))
    yield built
    built.close()


@pytest.fixture
def app(services: Services) -> tornado.web.Application:
    return make_app(services)


@pytest.fixture
def mint(services: Services) -> Callable[..., dict[str, str]]:
    """``mint("admin", "pulls")``: the Authorization header of a new key with those scopes."""
    counter = iter(range(1000))

    def make(*scopes: str) -> dict[str, str]:
        token = create_key(services.database.engine, f"test-{next(counter)}", list(scopes))
        return {"Authorization": f"Bearer {token}"}

    return make
