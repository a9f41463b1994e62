"""The GnuPG fixtures moved to tests/fixtures/gpg.py (pull providers use them too)."""
from tests.fixtures.gpg import PASSPHRASE, Keyring

__all__ = ["PASSPHRASE", "Keyring"]
