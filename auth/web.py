"""Authentication for Tornado handlers: ``require_scope`` and ``Authenticator``.

Any handler of any package protects a method (or ``prepare``) with the decorator::

    from auth import require_scope

    class AreasHandler(tornado.web.RequestHandler):
        @require_scope("areas")
        async def post(self, name: str) -> None:
            who = self.principal          # auth.Principal: kind, name, scopes, org_id
            ...

The application must carry an ``Authenticator`` in its settings under ``"auth"``
(``tornado.web.Application(routes, auth=Authenticator(engine, required=...))``; the gateway's
``make_app`` does it). A request without credentials gets 401 ``unauthorized`` (with
``WWW-Authenticate: Bearer``), one whose key (or signed-in user) lacks the scope 403
``forbidden``; both as the JSON error body of the contract, written by the decorator, and
the method is not called. Credentials are ``Authorization: Bearer <API key>`` or, for the
scope ``staff``, a signed-in staff user's session cookie. With ``AUTH_REQUIRED=false`` a
request without credentials passes (``self.principal`` is None); credentials that are sent
are still checked. An application without an ``Authenticator`` refuses every protected
request (500): a missing wire-up never opens an endpoint. A signed-in user's request that
changes state also needs the session's CSRF token (auth/sessions.py), else 403.

``await principal_of(handler)`` tells who is calling without refusing anyone (None for
anonymous or bad credentials), for endpoints that show more to some callers (health
details with ``admin``, every upload's status with ``status``); ``await has_scope(handler,
scope)`` is the same as a yes/no (true for everyone when ``AUTH_REQUIRED`` is off).
"""
from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import tornado.web
from sqlalchemy.engine import Engine
from tornado.escape import url_escape

from auth.keys import SCOPES, KeyVerifier
from auth.sessions import Session, Sessions, csrf_ok
from auth.throttle import Failures
from auth.users import active_user

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Principal:
    """Who a request comes from: an API key (``kind`` ``key``) or a staff user (``user``)."""

    kind: str
    name: str
    scopes: frozenset[str]
    org_id: str | None = None
    session: Session | None = None  # a signed-in user's (kind ``user``)

    def has(self, scope: str) -> bool:
        return scope in self.scopes


class Unauthorized(Exception):
    """Credentials were sent but are not valid (unknown, revoked or malformed)."""


class Authenticator:
    """Resolves a request's credentials to a ``Principal``; database reads run on a small
    executor of its own, never on the event loop."""

    def __init__(self, engine: Engine, required: bool = True,
                 sessions: Sessions | None = None, oidc: Any = None) -> None:
        self.required = required
        self.keys = KeyVerifier(engine)
        self.engine = engine
        self.sessions = sessions
        self.oidc = oidc  # auth.oidc.OidcClient when OIDC_ISSUER is set
        self.failures = Failures()  # failed sign-ins (auth/throttle.py)
        self.executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="auth")

    async def run(self, func: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, func, *args)

    async def identify(self, handler: tornado.web.RequestHandler) -> Principal | None:
        """The caller, None when the request carries no credentials; ``Unauthorized``
        when it carries bad ones."""
        header = handler.request.headers.get("Authorization")
        if header is not None:
            scheme, _, token = header.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthorized("Authorization must be 'Bearer <API key>'")
            loop = asyncio.get_running_loop()
            key = await loop.run_in_executor(self.executor, self.keys.verify, token.strip())
            if key is None:
                raise Unauthorized("unknown or revoked API key")
            return Principal("key", key.name, frozenset(key.scopes))
        session = self.sessions.read(handler) if self.sessions is not None else None
        if session is None:
            return None
        if session.via == "local" and await self.run(active_user, self.engine, session.user) is None:
            return None  # disabled or removed since: signed out
        return Principal("user", session.user, frozenset({"staff"}), session.org_id, session)


def authenticator_of(handler: tornado.web.RequestHandler) -> Authenticator:
    found = handler.application.settings.get("auth")
    if not isinstance(found, Authenticator):
        raise RuntimeError("the application has no Authenticator (settings['auth'])")
    return found


def _refuse(handler: tornado.web.RequestHandler, status: int, code: str, message: str) -> None:
    handler.clear_header("Content-Disposition")
    handler.set_status(status)
    if status == 401:
        handler.set_header("WWW-Authenticate", 'Bearer realm="gateway"')
    handler.set_header("Content-Type", "application/json")
    handler.set_header("Cache-Control", "no-store")
    handler.finish(json.dumps({"error": code, "message": message}))


async def authorize(handler: tornado.web.RequestHandler, scope: str) -> bool:
    """Check the request for ``scope``; on failure write the 401/403 and return False.
    Sets ``handler.principal``."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")
    auth = authenticator_of(handler)
    try:
        principal = await auth.identify(handler)
    except Unauthorized as exc:
        _refuse(handler, 401, "unauthorized", str(exc))
        return False
    handler.principal = principal  # type: ignore[attr-defined]
    if principal is None:
        if not auth.required:
            return True
        _refuse(handler, 401, "unauthorized",
                "credentials required: Authorization: Bearer <API key>"
                + (" or a signed-in staff user" if scope == "staff" else ""))
        return False
    if principal.session is not None and not csrf_ok(handler, principal.session):
        logger.info("%s %s refused: no valid CSRF token (user %s, Origin %s)",
                    handler.request.method, handler.request.path, principal.name,
                    handler.request.headers.get("Origin", "-"))
        _refuse(handler, 403, "forbidden", "missing or wrong X-CSRF-Token, or another Origin")
        return False
    if not principal.has(scope):
        logger.info("%s %s refused: %s %s lacks scope %s", handler.request.method,
                    handler.request.path, principal.kind, principal.name, scope)
        _refuse(handler, 403, "forbidden", f"this needs the scope {scope!r}")
        return False
    return True


def require_scope(scope: str) -> Callable[[F], F]:
    """Decorate a handler method (``get``, ``post``, ..., or ``prepare``) so that it runs
    only for a caller with ``scope`` (see the module docstring)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; scopes are {', '.join(SCOPES)}")

    def decorate(method: F) -> F:
        @functools.wraps(method)
        async def wrapper(self: tornado.web.RequestHandler, *args: Any, **kwargs: Any) -> Any:
            if not await authorize(self, scope):
                return None
            result = method(self, *args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            return result

        return wrapper  # type: ignore[return-value]

    return decorate


def require_signed_in_page(method: F) -> F:
    """For pages (``/staff/``): a caller without a staff session (or key with ``staff``)
    is sent to the sign-in page, which brings them back here."""

    @functools.wraps(method)
    async def wrapper(self: tornado.web.RequestHandler, *args: Any, **kwargs: Any) -> Any:
        auth = authenticator_of(self)
        principal = await principal_of(self)
        if (principal is None and auth.required) or (principal is not None
                                                      and not principal.has("staff")):
            self.redirect("/auth/login?next=" + url_escape(self.request.uri or "/staff/"))
            return None
        self.principal = principal  # type: ignore[attr-defined]
        result = method(self, *args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result

    return wrapper  # type: ignore[return-value]


async def principal_of(handler: tornado.web.RequestHandler) -> Principal | None:
    """Who calls, without refusing anyone: None for anonymous or bad credentials."""
    auth = handler.application.settings.get("auth")
    if not isinstance(auth, Authenticator):
        return None
    try:
        return await auth.identify(handler)
    except Unauthorized:
        return None
    except Exception as exc:  # noqa: BLE001 - the database is down: anonymous, not a 500
        logger.warning("%s %s: credentials not checked, taken as anonymous (%s: %s)",
                       handler.request.method, handler.request.path, type(exc).__name__,
                       str(exc).strip()[:200])
        return None


async def has_scope(handler: tornado.web.RequestHandler, scope: str) -> bool:
    """True when the caller has ``scope``, or when ``AUTH_REQUIRED`` is off."""
    auth = handler.application.settings.get("auth")
    if isinstance(auth, Authenticator) and not auth.required:
        return True
    principal = await principal_of(handler)
    return principal is not None and principal.has(scope)


__all__ = ["Authenticator", "Principal", "Unauthorized", "authorize", "has_scope",
           "principal_of", "require_scope", "require_signed_in_page"]
