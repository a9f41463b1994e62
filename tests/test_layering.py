"""Layers point down only (issue 13): core.settings imports nothing of the packages that
use it, and no module below the intake packages imports one of them."""
from __future__ import annotations

import ast
from pathlib import Path

from tests.e2e import ROOT

INTAKES = ("upload", "watcher", "tus", "pull", "areas", "consumer", "validators")
BELOW = ("core", "storage", "bus", "db")


def imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_settings_import_only_the_standard_library() -> None:
    found = imported(ROOT / "core" / "settings.py")
    assert not {n for n in found if n.split(".")[0] in (*INTAKES, *BELOW, "app")}, found


def test_nothing_below_imports_an_intake() -> None:
    wrong = []
    for package in BELOW:
        for path in sorted((ROOT / package).rglob("*.py")):
            for name in imported(path):
                if name.split(".")[0] in INTAKES:
                    wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_auth_imports_no_http_package_and_nothing_of_ours_below() -> None:
    """auth/ is used by every HTTP package and uses none of them (nor core and the layers
    below: it takes an engine and the environment)."""
    wrong = []
    for path in sorted((ROOT / "auth").rglob("*.py")):
        for name in imported(path):
            if name.split(".")[0] in (*INTAKES, *BELOW, "app"):
                wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong, "\n".join(wrong)
