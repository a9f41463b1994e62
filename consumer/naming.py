"""Case number, step and type from an asset file name.

The pattern (``ASSET_NAME_PATTERN``, default ``<case_number>_Step<N>.obj``) must match the
whole base name (directories the watcher kept are dropped) and has the named groups
``case_number`` and ``step``. The type is the extension, lower case, without the dot. A
name that does not parse is not an error: the record is kept as *unmatched*, with the
reason, so that staff can see it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import PurePosixPath

from core.settings import DEFAULT_ASSET_NAME_PATTERN

MAX_CASE_NUMBER = 64
EXAMPLE = "C12345_Step1.obj"
BUNDLED_TYPE = "obj"


@dataclass(frozen=True)
class ParsedName:
    case_number: str | None
    step: int | None
    type: str | None
    unmatched_reason: str | None = None

    @property
    def matched(self) -> bool:
        return self.unmatched_reason is None


def base_name(file_name: str) -> str:
    """The last path component, whichever separator the sender used."""
    return PurePosixPath(file_name.replace("\\", "/")).name


@lru_cache(maxsize=8)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def unmatched_reason(name: str, pattern: str) -> str:
    """Why ``name`` was not taken, in words staff can act on: the expected form and an
    example for the default pattern, the configured expression for another."""
    if pattern == DEFAULT_ASSET_NAME_PATTERN:
        return (f"file name {name!r} does not match the naming rule: expected "
                f"<case number>_Step<step number>.obj, for example {EXAMPLE}")
    return f"file name {name!r} does not match ASSET_NAME_PATTERN ({pattern})"


def parse_file_name(file_name: str, pattern: str) -> ParsedName:
    name = base_name(file_name)
    suffix = PurePosixPath(name).suffix.lower().lstrip(".") or None
    found = _compiled(pattern).fullmatch(name)
    if found is None:
        return ParsedName(None, None, suffix, unmatched_reason(name, pattern))
    case_number, step = found.group("case_number"), found.group("step")
    if not case_number or len(case_number) > MAX_CASE_NUMBER:
        return ParsedName(None, None, suffix, f"case number {case_number!r} is empty or too long")
    if not step or not step.isdigit() or len(step) > 6:
        return ParsedName(case_number, None, suffix, f"step {step!r} is not a number")
    return ParsedName(case_number, int(step), suffix)
