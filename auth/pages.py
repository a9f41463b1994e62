"""Sign-in for staff: ``/auth/login`` (local accounts; and a link to the identity provider
when OIDC is configured), ``/auth/logout``, ``/auth/session`` (who is signed in, and the
CSRF token the staff page sends back), ``/auth/oidc/start`` and ``/auth/oidc/callback``
(auth/oidc.py).

The sign-in form is protected against login CSRF by a double-submit token: the form's
hidden ``csrf`` field must match the signed ``gw_login`` cookie set with the form (and an
``Origin``, when sent, must be the gateway's). After sign-in the browser is sent to
``next`` when it is a path on this gateway (never another host), else ``/staff/``.
"""
from __future__ import annotations

import hmac
import json
import logging
import secrets
from typing import Any

import tornado.web
from tornado.escape import xhtml_escape

from auth.oidc import OidcError, error_page
from auth.sessions import Sessions, csrf_ok, same_origin, secure_request
from auth.throttle import MAX_FAILURES
from auth.users import check_password
from auth.web import Authenticator, authenticator_of, principal_of

logger = logging.getLogger(__name__)

LOGIN_COOKIE = "gw_login"
DEFAULT_NEXT = "/staff/"
CSP = ("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in - upload gateway</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;max-width:24rem;margin:3rem auto;padding:0 1rem}}
label{{display:block;margin:.6rem 0}}input{{width:100%;padding:.4rem;font:inherit}}
button,.button{{padding:.5rem 1rem;font:inherit;margin-top:.6rem;display:inline-block}}
.error{{color:#b3261e}}</style></head>
<body><h1>Staff sign-in</h1>{message}
<form id="login" method="post" action="/auth/login">
<input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="next" value="{next}">
<label>User <input id="login-user" name="user" autocomplete="username" required autofocus></label>
<label>Password <input id="login-password" name="password" type="password"
 autocomplete="current-password" required></label>
<button id="login-submit" type="submit">Sign in</button></form>{oidc}
</body></html>
"""


def safe_next(raw: str | None) -> str:
    """A path of this gateway, else the staff page (no open redirect)."""
    if not raw or not raw.startswith("/") or raw.startswith("//") or "\\" in raw \
            or any(ord(c) < 0x20 for c in raw):
        return DEFAULT_NEXT
    return raw


class AuthPage(tornado.web.RequestHandler):
    @property
    def auth(self) -> Authenticator:
        return authenticator_of(self)

    @property
    def sessions(self) -> Sessions:
        if self.auth.sessions is None:
            raise tornado.web.HTTPError(404)
        return self.auth.sessions

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Content-Security-Policy", CSP)
        self.set_header("Referrer-Policy", "same-origin")

    def check_xsrf_cookie(self) -> None:  # our own double-submit check, below
        return None


class LoginHandler(AuthPage):
    def get(self) -> None:
        self.render_form(safe_next(self.get_query_argument("next", None)))

    def render_form(self, next_path: str, message: str = "", status: int = 200) -> None:
        token = secrets.token_urlsafe(32)
        self.set_cookie(LOGIN_COOKIE, self.sessions.seal(token), httponly=True,
                        samesite="Strict", path="/auth", secure=secure_request(self))
        oidc = ""
        if self.auth.oidc is not None:
            oidc = (f'<p>or <a id="oidc-login" class="button" href="/auth/oidc/start?next='
                    f'{tornado.escape.url_escape(next_path)}">Sign in with '
                    f'{xhtml_escape(self.auth.oidc.label)}</a></p>')
        self.set_status(status)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(PAGE.format(
            message=f'<p class="error" id="login-error">{xhtml_escape(message)}</p>' if message else "",
            csrf=xhtml_escape(token), next=xhtml_escape(next_path), oidc=oidc))

    async def post(self) -> None:
        next_path = safe_next(self.get_body_argument("next", None))
        expected = self.sessions.unseal(self.get_cookie(LOGIN_COOKIE), max_age=3600)
        sent = self.get_body_argument("csrf", "")
        if not (isinstance(expected, str) and same_origin(self)
                and hmac.compare_digest(expected.encode(), sent.encode())):
            self.render_form(next_path, "The form expired; please sign in again.", 403)
            return
        name = self.get_body_argument("user", "").strip()
        password = self.get_body_argument("password", "")
        # per client address, and (higher, so that others cannot easily lock a user
        # out) per user name
        keys = (f"user:{name.lower()}", f"ip:{self.request.remote_ip}")
        limits = (MAX_FAILURES * 5, MAX_FAILURES)
        if any(self.auth.failures.count(k) >= n for k, n in zip(keys, limits, strict=True)):
            logger.warning("sign-in of %r from %s refused: too many failures", name[:64],
                           self.request.remote_ip)
            self.render_form(next_path, "Too many failed sign-ins; try again later.", 429)
            return
        user = await self.auth.run(check_password, self.auth.engine, name, password) \
            if name and password else None
        if user is None:
            for key in keys:
                self.auth.failures.add(key)
            logger.info("sign-in refused for %r from %s", name[:64], self.request.remote_ip)
            self.render_form(next_path, "Wrong user name or password.", 401)
            return
        self.auth.failures.clear(keys[0])
        self.clear_cookie(LOGIN_COOKIE, path="/auth")
        self.sessions.start(self, user.name, user.org_id, "local")
        logger.info("user %s signed in (local) from %s", user.name, self.request.remote_ip)
        self.redirect(next_path)


class LogoutHandler(AuthPage):
    def post(self) -> None:
        session = self.sessions.read(self)
        if session is not None and not csrf_ok(self, session):
            raise tornado.web.HTTPError(403)
        self.sessions.end(self)
        self.redirect("/auth/login")


class SessionHandler(AuthPage):
    """``GET /auth/session``: ``{"user", "org_id", "via", "csrf"}`` for the signed-in
    user (the staff page reads its CSRF token here), 401 otherwise."""

    async def get(self) -> None:
        principal = await principal_of(self)
        self.set_header("Content-Type", "application/json")
        if principal is None or principal.session is None:
            self.set_status(401)
            self.finish(json.dumps({"error": "unauthorized", "message": "not signed in"}))
            return
        body: dict[str, Any] = {"user": principal.name, "org_id": principal.org_id,
                                "via": principal.session.via, "csrf": principal.session.csrf}
        self.finish(json.dumps(body))


class OidcStartHandler(AuthPage):
    """``/auth/oidc/start?next=``: to the identity provider (auth/oidc.py)."""

    async def get(self) -> None:
        if self.auth.oidc is None:
            raise tornado.web.HTTPError(404)
        try:
            url = await self.auth.oidc.start(self, self.sessions,
                                             safe_next(self.get_query_argument("next", None)))
        except OidcError as exc:
            self.fail(str(exc), 502)
            return
        self.redirect(url)

    def fail(self, message: str, status: int) -> None:
        logger.info("OIDC sign-in failed from %s: %s", self.request.remote_ip, message)
        self.set_status(status)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(error_page(message))


class OidcCallbackHandler(OidcStartHandler):
    """``/auth/oidc/callback``: the provider sends the browser back here with a code."""

    async def get(self) -> None:
        if self.auth.oidc is None:
            raise tornado.web.HTTPError(404)
        try:
            identity, next_path = await self.auth.oidc.finish(self, self.sessions)
        except OidcError as exc:
            self.fail(str(exc), 403)
            return
        self.sessions.start(self, identity.user, identity.org_id, "oidc")
        logger.info("user %s signed in (OIDC) from %s", identity.user, self.request.remote_ip)
        self.redirect(safe_next(next_path))


def routes() -> list[Any]:
    table: list[Any] = [
        (r"/auth/login", LoginHandler),
        (r"/auth/logout", LogoutHandler),
        (r"/auth/session", SessionHandler),
        (r"/auth/oidc/start", OidcStartHandler),
        (r"/auth/oidc/callback", OidcCallbackHandler),
    ]
    return table
