"""A real gateway (``python app.py``: localdisk, embedded bus, SQLite) per module."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.e2e import Gateway
from tests.tus.client import Tus

MAX_LENGTH = 64 * 1024 * 1024


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    work: Path = tmp_path_factory.mktemp("tus") / "work"
    running = Gateway({"WORKDIR": str(work), "MAX_LENGTH": str(MAX_LENGTH),
                       "TUS_CORS_ORIGINS": "http://app.example"}).start()
    yield running
    running.stop()


@pytest.fixture
def tus(gateway: Gateway) -> Tus:
    return Tus(gateway.base)
