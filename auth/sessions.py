"""Staff sessions: signed cookies (itsdangerous), ``HttpOnly``, ``SameSite=Lax``,
``Secure`` over HTTPS, and the CSRF token each one carries.

The session cookie ``gw_session`` holds the user's name, org, how they signed in and a
random CSRF token, signed and timestamped with ``SESSION_SECRET`` (or a random key kept in
``WORKDIR/session.key``; give every gateway the same one) and valid ``SESSION_HOURS``
(8). Nothing is stored server-side; a disabled user is refused at the next request.

CSRF: a request authenticated by the cookie that changes state (any method but GET, HEAD,
OPTIONS) must carry the session's token in ``X-CSRF-Token`` (or a form field ``csrf``), and
an ``Origin`` header, when sent, must be the gateway's own. A page of another origin can
send neither (a custom header forces a CORS preflight the gateway never grants), so a
cross-origin form or ``text/plain`` POST fails with 403 even when the browser sends the
cookie. Requests with an API key need no token: a browser never adds one by itself.
"""
from __future__ import annotations

import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

import tornado.web
from itsdangerous import BadSignature, URLSafeTimedSerializer

from auth.config import AuthConfigError

COOKIE = "gw_session"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


@dataclass(frozen=True)
class Session:
    user: str
    org_id: str | None
    via: str  # "local" or "oidc"
    csrf: str


def session_secret(env: Mapping[str, str], workdir: Path) -> bytes:
    raw = env.get("SESSION_SECRET")
    if raw:
        if len(raw) < 32:
            raise AuthConfigError("SESSION_SECRET must have at least 32 characters")
        return raw.encode()
    path = workdir / "session.key"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    # Roles started at once on one WORKDIR race to create it: the key is written whole
    # to a file of this process's own, then linked into place (link fails if another got
    # there first, whose whole key is then read), so nobody reads a half-written key or
    # fails because the file appeared meanwhile.
    workdir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48).encode()
    draft = workdir / f".session.key.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.write(fd, key)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(draft, path)
        except FileExistsError:
            return path.read_bytes()
    finally:
        draft.unlink(missing_ok=True)
    return key


def session_hours(env: Mapping[str, str]) -> float:
    raw = env.get("SESSION_HOURS") or "8"
    try:
        value = float(raw)
    except ValueError:
        raise AuthConfigError(f"SESSION_HOURS must be a number, got {raw!r}") from None
    if not 0 < value <= 24 * 30:
        raise AuthConfigError(f"SESSION_HOURS must be between 0 and 720, got {raw!r}")
    return value


def secure_request(handler: tornado.web.RequestHandler) -> bool:
    return handler.request.protocol == "https"


class Sessions:
    def __init__(self, secret: bytes, hours: float = 8.0) -> None:
        self.serializer = URLSafeTimedSerializer(secret, salt="gateway-session")
        self.login_serializer = URLSafeTimedSerializer(secret, salt="gateway-login")
        self.max_age = int(hours * 3600)

    def start(self, handler: tornado.web.RequestHandler, user: str, org_id: str | None,
              via: str) -> Session:
        session = Session(user, org_id, via, secrets.token_urlsafe(32))
        value = self.serializer.dumps({"u": user, "o": org_id, "v": via, "c": session.csrf})
        handler.set_cookie(COOKIE, value, httponly=True, samesite="Lax", path="/",
                           secure=secure_request(handler), expires_days=self.max_age / 86400)
        return session

    def end(self, handler: tornado.web.RequestHandler) -> None:
        handler.clear_cookie(COOKIE, path="/")

    def read(self, handler: tornado.web.RequestHandler) -> Session | None:
        raw = handler.get_cookie(COOKIE)
        if not raw:
            return None
        try:
            data: Any = self.serializer.loads(raw, max_age=self.max_age)
        except BadSignature:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("u"), str):
            return None
        return Session(data["u"], data.get("o"), str(data.get("v")), str(data.get("c")))

    # a short-lived signed value for flows that start before a session exists (the sign-in
    # form's CSRF token, the OIDC state and PKCE verifier)
    def seal(self, value: Any) -> str:
        return self.login_serializer.dumps(value)

    def unseal(self, raw: str | None, max_age: int = 600) -> Any:
        if not raw:
            return None
        try:
            return self.login_serializer.loads(raw, max_age=max_age)
        except BadSignature:
            return None


def same_origin(handler: tornado.web.RequestHandler) -> bool:
    """An ``Origin`` header, when sent, names the gateway itself."""
    origin = handler.request.headers.get("Origin")
    if origin is None:
        return True
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == handler.request.host.lower()


def csrf_ok(handler: tornado.web.RequestHandler, session: Session) -> bool:
    if handler.request.method in SAFE_METHODS:
        return True
    if not same_origin(handler):
        return False
    sent = handler.request.headers.get("X-CSRF-Token")
    if sent is None:
        content_type = handler.request.headers.get("Content-Type", "")
        if content_type.startswith("application/x-www-form-urlencoded"):
            sent = handler.get_body_argument("csrf", None)
    return sent is not None and hmac.compare_digest(sent.encode(), session.csrf.encode())
