"""The watcher's own start-up checks (``python app.py`` refuses to start, naming the
variable, instead of discovering a mistake later):

- ``WATCH_DIR`` must exist, be a directory, and be readable and writable by this user. It
  is never created: a typo or a share that is not mounted would otherwise be watched
  silently, empty, while the lab's files land elsewhere.
- ``WATCH_RULES`` must parse (``watcher.rules``) and name services in
  ``VALID_UPLOAD_TYPES``.
- Rules that ``decrypt`` need the gpg binary and, when set, ``GPG_HOME`` a directory.
"""
from __future__ import annotations

import os

from core.settings import Settings, SettingsError
from core.steps import Decryptor
from watcher.rules import DEFAULT_RULES, Rule, RuleError, parse_rules


def rules_of(settings: Settings) -> tuple[Rule, ...]:
    """``WATCH_RULES`` (or the default rules), parsed; ``SettingsError`` naming it."""
    try:
        return parse_rules(settings.watch_rules or DEFAULT_RULES, settings.valid_upload_types)
    except RuleError as exc:
        raise SettingsError(f"WATCH_RULES: {exc}") from None


def preflight(settings: Settings) -> None:
    """Raise ``SettingsError`` naming the first variable the watcher cannot work with."""
    root = settings.watch_dir
    if root is None:
        raise SettingsError("role watcher needs WATCH_DIR")
    if not root.exists():
        raise SettingsError(f"WATCH_DIR {str(root)!r} does not exist (a typo, or a share "
                            "that is not mounted?); it is never created")
    if not root.is_dir():
        raise SettingsError(f"WATCH_DIR {str(root)!r} is not a directory")
    if not os.access(root, os.R_OK | os.W_OK | os.X_OK):
        raise SettingsError(f"WATCH_DIR {str(root)!r} is not readable and writable by this "
                            "user")
    rules = rules_of(settings)
    if any("decrypt" in rule.steps for rule in rules):
        if settings.gpg_home is not None and not settings.gpg_home.is_dir():
            raise SettingsError(f"GPG_HOME {str(settings.gpg_home)!r} is not a directory")
        try:
            Decryptor(settings.gpg_home, settings.gpg_passphrase)
        except RuntimeError as exc:
            raise SettingsError(f"GPG_HOME: {exc}") from None
