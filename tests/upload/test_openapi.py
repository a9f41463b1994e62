"""The OpenAPI document covers every endpoint, and a schemathesis run against a real
``python app.py`` finds no 5xx and no response that breaks the document (issue 13)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from core.services import Services
from core.settings import Settings
from pull.api import routes as pull_routes
from tests.e2e import Gateway
from upload.app import routes
from upload.openapi import SPEC


def _shape(path: str) -> str:
    """``/a/([0-9a-f]{32})/?`` and ``/a/{id}`` both become ``/a/{}``."""
    path = path.replace("(.*)", "").replace("/?", "").replace("\\.", ".")
    path = re.sub(r"\([^)]*\)|\{[a-z_]+\}", "{}", path)
    return path.rstrip("/") or "/"


def test_every_route_is_described(tmp_path: Path) -> None:
    services = Services.build(Settings.from_env({"WORKDIR": str(tmp_path)}))
    try:
        table = routes(services) + pull_routes(services, {}, lambda name: None, ("/api/v1",))
    finally:
        services.close()
    served = {_shape(route[0]) for route in table
              if not route[0].startswith("/api/ingress/") and route[0] not in ("/staff",
                                                                               "/upload")}
    described = {_shape(path) for path in SPEC["paths"]}
    assert served - described == set()
    assert described - served == set()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = Gateway({"WORKDIR": str(tmp_path_factory.mktemp("schemathesis") / "work"),
                  "MAX_LENGTH": "65536"}).start()
    yield gw
    assert gw.stop() == 0


@pytest.fixture(scope="module")
def api_schema(gateway: Gateway) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(gateway.base + "/api/v1/openapi.json")


@schemathesis.serializer("application/offset+octet-stream")
def _tus_bytes(ctx: object, value: object) -> bytes:
    """tus PATCH bodies: the generated binary string as it is."""
    return value if isinstance(value, bytes) else str(value).encode()


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.mark.timeout(600)
@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_5xx_and_answers_match_the_document(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=[not_a_server_error, response_schema_conformance],
                           timeout=30)
