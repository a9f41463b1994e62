"""Pull fixtures: a loopback SFTP server with an ``outgoing`` directory, and a GnuPG
keyring whose agent caches no passphrase (so that a wrong one is always noticed)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.fixtures.gpg import PASSPHRASE, Keyring, _keyring, _remove
from tests.pull.sftpserver import SFTPTestServer


@pytest.fixture
def sftp(tmp_path: Path) -> Iterator[SFTPTestServer]:
    server = SFTPTestServer(tmp_path / "sftp-root")
    (server.root / "outgoing").mkdir()
    with server:
        yield server


@pytest.fixture
def frequent_checkpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    """Checkpoints every 0.2 s instead of 2 s, for a test that stops a slowed download
    after its first checkpoint: a fast machine fetched the 24 MiB file of such a test in
    under 2 s, whole before the first checkpoint (the test then failed about half the
    time)."""
    import pull.download
    monkeypatch.setattr(pull.download, "CHECKPOINT_SECONDS", 0.2)


@pytest.fixture(scope="session")
def provider_keyring() -> Iterator[Keyring]:
    made = _keyring("provider@example.org", PASSPHRASE, cache=False)
    yield made
    _remove(made)
