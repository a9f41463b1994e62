"""Bundler fixtures: a database (SQLite and PostgreSQL, through ``database``) with the
bundler's tables emptied, local disk storage, and the ``Lab`` that plays the watcher and
the gateway."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from sqlalchemy import delete

from consumer.records import metadata
from core.settings import Settings
from db import Database
from storage import Storage
from storage.localdisk import LocalDiskStorage
from tests.consumer.lab import Lab


@pytest.fixture
def bundle_db(database: Database) -> Database:
    """``database`` without rows left in the bundler's tables by an earlier test (the
    PostgreSQL database lives for the session)."""
    with database.engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(delete(table))
    return database


@pytest.fixture
def lab_settings(tmp_path: Path) -> Settings:
    return Settings.from_env({"WORKDIR": str(tmp_path / "work"), "URL_SIGNING_KEY": "k"})


@pytest.fixture
def lab_storage(lab_settings: Settings) -> Iterator[Storage]:
    storage = LocalDiskStorage(lab_settings)
    yield storage
    storage.close()


@pytest.fixture
def lab(lab_settings: Settings, lab_storage: Storage, bundle_db: Database) -> Lab:
    return Lab(lab_settings, lab_storage, bundle_db)
