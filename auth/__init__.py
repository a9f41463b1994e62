"""Authentication and authorisation for every HTTP package (upload/, consumer/, pull/,
areas/, tus/ ...). auth/ imports none of them (tests/test_layering.py).

- ``require_scope(scope)``: the decorator a Tornado handler method uses (auth/web.py says
  how); ``principal_of``/``has_scope`` for endpoints that show more to some callers.
- ``Authenticator``: what an application carries in ``settings["auth"]``.
- API keys (auth/keys.py) with the scopes ``staff``, ``areas``, ``admin``, ``pulls``,
  ``status``, managed with ``python app.py keys add|list|revoke`` (auth/cli.py).
- ``AUTH_REQUIRED`` (auth/config.py).
"""
from auth.config import AuthConfigError, auth_required
from auth.keys import SCOPES
from auth.web import (
    Authenticator,
    Principal,
    Unauthorized,
    authorize,
    has_scope,
    principal_of,
    require_scope,
    require_signed_in_page,
)

__all__ = ["SCOPES", "AuthConfigError", "Authenticator", "Principal", "Unauthorized",
           "auth_required", "authorize", "has_scope", "principal_of", "require_scope",
           "require_signed_in_page"]
