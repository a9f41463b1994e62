"""auth/'s variables, read from the environment the settings kept (``Settings.env``).

- ``AUTH_REQUIRED`` (default ``true``): everything but uploads (``POST /api/v1/upload``,
  the tus endpoint, the status API, callbacks), health, probes, metrics, version, the API
  description and signed downloads needs credentials. ``false`` opens it all again (a
  development machine only).
"""
from __future__ import annotations

from typing import Mapping

TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class AuthConfigError(ValueError):
    """A variable of auth/ has a value that cannot be used (the message names it)."""


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in TRUE:
        return True
    if raw in FALSE:
        return False
    raise AuthConfigError(f"{name} must be true or false, got {env.get(name)!r}")


def auth_required(env: Mapping[str, str]) -> bool:
    return env_bool(env, "AUTH_REQUIRED", True)
