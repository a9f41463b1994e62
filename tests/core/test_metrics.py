"""Prometheus names (issue 13): one common prefix, counters ending in ``_total``, units
in the name, and every metric listed in the README's Metrics table."""
from __future__ import annotations

import re

from prometheus_client import REGISTRY

import app  # noqa: F401 - every package that defines metrics is imported
from tests.e2e import ROOT

UNITS = ("_seconds", "_bytes", "_files", "_messages", "_files_per_second")


def our_metrics() -> list[tuple[str, str]]:
    return [(m.name + ("_total" if m.type == "counter" else ""), m.type)
            for m in REGISTRY.collect() if not m.name.startswith(("python_", "process_"))]


def test_names_follow_the_naming_guide() -> None:
    found = our_metrics()
    assert len(found) >= 20
    for name, kind in found:
        assert re.fullmatch(r"gateway_[a-z0-9_]+", name), name
        if kind == "counter":
            assert name.endswith("_total"), name
        else:
            assert not name.endswith("_total") and name.endswith(UNITS), name


def test_every_metric_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `(gateway_[a-z0-9_]+)` \|", table, re.MULTILINE))
    assert {name for name, _ in our_metrics()} == listed
