"""Building the ``Authenticator`` of a process from its environment and ``WORKDIR``."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from sqlalchemy.engine import Engine

from auth.config import auth_required
from auth.oidc import OidcClient, oidc_config
from auth.sessions import Sessions, session_hours, session_secret
from auth.web import Authenticator


def preflight(env: Mapping[str, str], workdir: Path) -> None:
    """Check auth/'s variables at start-up (``AuthConfigError`` names the one that is
    wrong)."""
    auth_required(env)
    session_secret(env, workdir)
    session_hours(env)
    oidc_config(env)


def build_authenticator(engine: Engine, env: Mapping[str, str], workdir: Path) -> Authenticator:
    sessions = Sessions(session_secret(env, workdir), session_hours(env))
    config = oidc_config(env)
    return Authenticator(engine, required=auth_required(env), sessions=sessions,
                         oidc=OidcClient(config) if config is not None else None)
