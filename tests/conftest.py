"""Shared fixtures live in tests/fixtures/, one module per real backend."""
import sys
from typing import Iterator

import pytest

from tests.e2e import kill_leftovers

pytest_plugins = ["tests.fixtures.s3", "tests.fixtures.kafka", "tests.fixtures.db",
                  "tests.fixtures.gpg"]


@pytest.fixture(autouse=True, scope="module")
def _no_leftover_processes() -> Iterator[None]:
    """A gateway a test started and did not stop (it failed first) is killed when its
    module ends (module-scoped gateways are stopped before this runs), and said so."""
    yield
    if killed := kill_leftovers():
        print(f"killed gateway processes a test left running: {killed}", file=sys.stderr)
