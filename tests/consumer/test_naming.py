"""File names → case number, step and type; ASSET_NAME_PATTERN; the migration matches the
tables the code describes."""
from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from consumer.naming import parse_file_name
from consumer.records import metadata
from core.settings import DEFAULT_ASSET_NAME_PATTERN, Settings, SettingsError
from db import Database

DEFAULT = DEFAULT_ASSET_NAME_PATTERN


@pytest.mark.parametrize("name, expected", [
    ("12345_Step1.obj", ("12345", 1, "obj")),
    ("AB-12_Step10.obj", ("AB-12", 10, "obj")),
    ("lab1/sub/C7_Step3.obj", ("C7", 3, "obj")),
    ("lab1\\C7_Step4.obj", ("C7", 4, "obj")),
])
def test_default_pattern_parses(name: str, expected: tuple[str, int, str]) -> None:
    parsed = parse_file_name(name, DEFAULT)
    assert parsed.matched and (parsed.case_number, parsed.step, parsed.type) == expected


@pytest.mark.parametrize("name", ["C7_Step.obj", "C7-Step1.obj", "C7_Step1.stl", "C7_Step1.obj.gz",
                                  "_Step1.obj", "C7_Step1234567.obj", "x" * 70 + "_Step1.obj"])
def test_names_that_do_not_parse_are_unmatched_with_a_reason(name: str) -> None:
    parsed = parse_file_name(name, DEFAULT)
    assert not parsed.matched and parsed.unmatched_reason
    assert parsed.case_number is None or parsed.step is None


def test_configured_pattern(tmp_path: Path) -> None:
    pattern = r"(?i)case(?P<case_number>\d+)-s(?P<step>\d+)\.(obj|stl)"
    settings = Settings.from_env({"WORKDIR": str(tmp_path), "ASSET_NAME_PATTERN": pattern})
    parsed = parse_file_name("CASE42-S7.STL", settings.asset_name_pattern)
    assert (parsed.case_number, parsed.step, parsed.type) == ("42", 7, "stl")


@pytest.mark.parametrize("pattern", ["(?P<case_number>.*", r"(?P<case_number>\w+)\.obj"])
def test_bad_pattern_stops_start_up_naming_the_variable(pattern: str, tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="ASSET_NAME_PATTERN"):
        Settings.from_env({"WORKDIR": str(tmp_path), "ASSET_NAME_PATTERN": pattern})


def test_migration_creates_the_tables_the_code_describes(database: Database) -> None:
    ours = {table.name for table in metadata.sorted_tables}

    def include_name(name: str | None, type_: str, _parents: object) -> bool:
        return type_ != "table" or name in ours  # other packages' tables are theirs

    with database.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": include_name})
        assert compare_metadata(context, metadata) == []


def test_association_body_nested_too_deep_is_a_bad_request() -> None:
    from consumer.api import parse_association
    from upload.errors import ApiError

    with pytest.raises(ApiError) as raised:
        parse_association(b"[" * 30_000 + b"]" * 30_000)
    assert raised.value.status_code == 400


def test_the_unmatched_reason_says_what_name_was_expected() -> None:
    """issue 13, staff page: the reason was a raw regular expression."""
    reason = parse_file_name("lab/C7 export.obj", DEFAULT).unmatched_reason
    assert reason == ("file name 'C7 export.obj' does not match the naming rule: expected "
                      "<case number>_Step<step number>.obj, for example C12345_Step1.obj")
    assert "(?P<" not in reason
    assert parse_file_name("C12345_Step1.obj", DEFAULT).matched  # the example is one
    pattern = r"(?P<case_number>\d+)-(?P<step>\d+)\.obj"
    custom = parse_file_name("x.obj", pattern).unmatched_reason
    assert custom == f"file name 'x.obj' does not match ASSET_NAME_PATTERN ({pattern})"
