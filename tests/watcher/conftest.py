"""Watcher fixtures: a throw-away GnuPG keyring with one key (and a second keyring whose
key the watcher does not have)."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

PASSPHRASE = "lab-share secret"


@dataclass(frozen=True)
class Keyring:
    home: Path
    fingerprint: str

    def encrypt(self, data: bytes, target: Path) -> None:
        import gnupg  # type: ignore[import-untyped]

        result = gnupg.GPG(gnupghome=str(self.home)).encrypt(
            data, [self.fingerprint], always_trust=True, armor=False, output=str(target))
        assert result.ok, result.stderr


def _keyring(email: str, passphrase: str | None) -> Keyring:
    import gnupg  # type: ignore[import-untyped]

    if shutil.which("gpg") is None:
        pytest.fail("the gpg binary is missing (scripts/test.sh installs Debian's gpg)")
    # short path: gpg-agent's socket lives in the home directory when /run/user is absent
    home = Path(tempfile.mkdtemp(prefix="gpg-", dir="/tmp"))
    # a cheap passphrase hash: gpg-agent's calibrated default costs seconds per key
    (home / "gpg-agent.conf").write_text("s2k-count 65536\n")
    gpg = gnupg.GPG(gnupghome=str(home))
    key = gpg.gen_key(gpg.gen_key_input(
        key_type="EDDSA", key_curve="ed25519", subkey_type="ECDH", subkey_curve="cv25519",
        name_email=email, passphrase=passphrase, no_protection=passphrase is None,
        expire_date=0))
    assert key.fingerprint, key.stderr
    return Keyring(home, key.fingerprint)


def _remove(keyring: Keyring) -> None:
    subprocess.run(["gpgconf", "--homedir", str(keyring.home), "--kill", "gpg-agent"],
                   check=False, capture_output=True)
    shutil.rmtree(keyring.home, ignore_errors=True)


@pytest.fixture(scope="session")
def keyring() -> Iterator[Keyring]:
    made = _keyring("lab@example.org", PASSPHRASE)
    yield made
    _remove(made)


@pytest.fixture(scope="session")
def other_keyring() -> Iterator[Keyring]:
    made = _keyring("someone-else@example.org", None)
    yield made
    _remove(made)
