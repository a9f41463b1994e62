"""OpenID Connect sign-in for staff: the authorization code flow with PKCE (S256), the ID
token verified with PyJWT against the issuer's JWKS.

Variables (unset ``OIDC_ISSUER``: no OIDC, local accounts only):

| variable | default | meaning |
| --- | --- | --- |
| ``OIDC_ISSUER`` | unset | the issuer URL; ``/.well-known/openid-configuration`` is read from it |
| ``OIDC_CLIENT_ID`` | (required with the issuer) | this gateway's client id |
| ``OIDC_CLIENT_SECRET`` | unset | for a confidential client (sent as ``client_secret_post``) |
| ``OIDC_REDIRECT_URL`` | the request's ``/auth/oidc/callback`` | the callback registered at the provider |
| ``OIDC_SCOPES`` | ``openid profile email`` | scopes asked for |
| ``OIDC_USER_CLAIM`` | ``preferred_username`` | the claim naming the user (``sub`` when absent) |
| ``OIDC_ORG_CLAIM`` | ``org_id`` | the claim naming the user's org (absent: every org's) |
| ``OIDC_STAFF_GROUP`` | unset | when set, only users whose ``groups`` claim holds it are staff |
| ``OIDC_LABEL`` | the issuer's host | the name on the sign-in button |

The flow: ``/auth/oidc/start`` keeps a random ``state``, ``nonce`` and PKCE verifier in a
signed, ``HttpOnly`` cookie for 10 minutes and sends the browser to the provider with the
verifier's S256 challenge; ``/auth/oidc/callback`` checks ``state``, redeems the code with
the verifier at the token endpoint, and accepts the ID token only when its signature
verifies with a key of the issuer's JWKS (``kid``; asymmetric algorithms only, never
``none`` or HMAC), ``iss`` is the issuer, ``aud`` holds the client id, ``exp``/``iat`` are
current (60 s leeway) and ``nonce`` is the one sent. Then the staff session starts as for
a local account (auth/sessions.py).
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlencode, urlsplit

import jwt
import tornado.web
from tornado.escape import xhtml_escape
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from auth.config import AuthConfigError

logger = logging.getLogger(__name__)

STATE_COOKIE = "gw_oidc"
FLOW_SECONDS = 600
LEEWAY = 60
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
              "ES512", "EdDSA"]
DISCOVERY_TTL = 3600.0


class OidcError(Exception):
    """The sign-in cannot complete (the message is safe to show)."""


@dataclass(frozen=True)
class OidcConfig:
    issuer: str
    client_id: str
    client_secret: str | None
    redirect_url: str | None
    scopes: str
    user_claim: str
    org_claim: str
    staff_group: str | None
    label: str


def oidc_config(env: Mapping[str, str]) -> OidcConfig | None:
    issuer = (env.get("OIDC_ISSUER") or "").strip().rstrip("/")
    if not issuer:
        return None
    parts = urlsplit(issuer)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise AuthConfigError(f"OIDC_ISSUER must be an http(s) URL, got {issuer!r}")
    client_id = (env.get("OIDC_CLIENT_ID") or "").strip()
    if not client_id:
        raise AuthConfigError("OIDC_CLIENT_ID must be set with OIDC_ISSUER")
    redirect = (env.get("OIDC_REDIRECT_URL") or "").strip() or None
    if redirect is not None and urlsplit(redirect).scheme not in ("http", "https"):
        raise AuthConfigError(f"OIDC_REDIRECT_URL must be an http(s) URL, got {redirect!r}")
    return OidcConfig(
        issuer=issuer, client_id=client_id,
        client_secret=env.get("OIDC_CLIENT_SECRET") or None, redirect_url=redirect,
        scopes=env.get("OIDC_SCOPES") or "openid profile email",
        user_claim=env.get("OIDC_USER_CLAIM") or "preferred_username",
        org_claim=env.get("OIDC_ORG_CLAIM") or "org_id",
        staff_group=env.get("OIDC_STAFF_GROUP") or None,
        label=env.get("OIDC_LABEL") or parts.netloc)


def s256_challenge(verifier: str) -> str:
    """RFC 7636 section 4.2: BASE64URL(SHA256(ASCII(code_verifier))), unpadded."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class Identity:
    user: str
    org_id: str | None


class OidcClient:
    def __init__(self, config: OidcConfig) -> None:
        self.config = config
        self.label = config.label
        self._discovery: dict[str, Any] | None = None
        self._discovered_at = 0.0
        self._jwks: jwt.PyJWKClient | None = None

    async def discovery(self) -> dict[str, Any]:
        if self._discovery is None or time.monotonic() - self._discovered_at > DISCOVERY_TTL:
            url = self.config.issuer + "/.well-known/openid-configuration"
            try:
                response = await AsyncHTTPClient().fetch(url, request_timeout=10)
                found = json.loads(response.body)
            except (OSError, HTTPClientError, ValueError) as exc:
                raise OidcError(f"the identity provider cannot be reached ({exc})") from None
            if found.get("issuer", "").rstrip("/") != self.config.issuer:
                raise OidcError("the identity provider names another issuer")
            for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                if not isinstance(found.get(key), str):
                    raise OidcError(f"the identity provider's configuration lacks {key}")
            self._discovery, self._discovered_at = found, time.monotonic()
            self._jwks = jwt.PyJWKClient(found["jwks_uri"], cache_keys=True, lifespan=300,
                                         timeout=10)
        return self._discovery

    def redirect_url(self, handler: tornado.web.RequestHandler) -> str:
        return self.config.redirect_url or (
            f"{handler.request.protocol}://{handler.request.host}/auth/oidc/callback")

    async def start(self, handler: tornado.web.RequestHandler, sessions: Any, next_path: str) -> str:
        """The provider's authorization URL; the flow's secrets go in a signed cookie."""
        found = await self.discovery()
        state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(64)  # 86 characters of the unreserved set
        handler.set_cookie(STATE_COOKIE, sessions.seal(
            {"s": state, "n": nonce, "v": verifier, "next": next_path}),
            httponly=True, samesite="Lax", path="/auth/oidc",
            secure=handler.request.protocol == "https", expires_days=FLOW_SECONDS / 86400)
        query = urlencode({
            "response_type": "code", "client_id": self.config.client_id,
            "redirect_uri": self.redirect_url(handler), "scope": self.config.scopes,
            "state": state, "nonce": nonce, "code_challenge": s256_challenge(verifier),
            "code_challenge_method": "S256"})
        endpoint = found["authorization_endpoint"]
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"

    async def finish(self, handler: tornado.web.RequestHandler, sessions: Any) -> tuple[Identity, str]:
        """Check the callback, redeem the code, verify the ID token: (identity, next)."""
        flow = sessions.unseal(handler.get_cookie(STATE_COOKIE), max_age=FLOW_SECONDS)
        handler.clear_cookie(STATE_COOKIE, path="/auth/oidc")
        if not isinstance(flow, dict):
            raise OidcError("the sign-in expired or was not started here; please start again")
        error = handler.get_query_argument("error", None)
        if error:
            raise OidcError(f"the identity provider refused: {error[:200]}")
        state = handler.get_query_argument("state", "")
        if not secrets.compare_digest(state.encode(), str(flow.get("s")).encode()):
            raise OidcError("the sign-in's state does not match; please start again")
        code = handler.get_query_argument("code", "")
        if not code:
            raise OidcError("the identity provider sent no code")
        found = await self.discovery()
        form = {"grant_type": "authorization_code", "code": code,
                "redirect_uri": self.redirect_url(handler), "client_id": self.config.client_id,
                "code_verifier": flow["v"]}
        if self.config.client_secret:
            form["client_secret"] = self.config.client_secret
        try:
            response = await AsyncHTTPClient().fetch(
                found["token_endpoint"], method="POST", body=urlencode(form), request_timeout=10,
                headers={"Content-Type": "application/x-www-form-urlencoded",
                         "Accept": "application/json"})
            tokens = json.loads(response.body)
        except HTTPClientError as exc:
            raise OidcError(f"the identity provider refused the code ({exc.code})") from None
        except (OSError, ValueError) as exc:
            raise OidcError(f"the identity provider cannot be reached ({exc})") from None
        id_token = tokens.get("id_token") if isinstance(tokens, dict) else None
        if not isinstance(id_token, str):
            raise OidcError("the identity provider sent no ID token")
        loop = asyncio.get_running_loop()
        claims = await loop.run_in_executor(None, self.verify, id_token, str(flow["n"]))
        return self.identity(claims), str(flow.get("next") or "/staff/")

    def verify(self, id_token: str, nonce: str) -> dict[str, Any]:
        """The ID token's claims, verified (blocking: may fetch the JWKS)."""
        assert self._jwks is not None
        try:
            key = self._jwks.get_signing_key_from_jwt(id_token)
            claims: dict[str, Any] = jwt.decode(
                id_token, key.key, algorithms=ALGORITHMS, audience=self.config.client_id,
                issuer=self.config.issuer, leeway=LEEWAY,
                options={"require": ["iss", "aud", "exp", "iat", "sub"]})
        except jwt.PyJWKClientError as exc:
            raise OidcError(f"the ID token's key is not the issuer's ({exc})") from None
        except jwt.InvalidTokenError as exc:
            raise OidcError(f"the ID token is not valid ({exc})") from None
        if not secrets.compare_digest(str(claims.get("nonce", "")).encode(), nonce.encode()):
            raise OidcError("the ID token's nonce does not match")
        return claims

    def identity(self, claims: dict[str, Any]) -> Identity:
        user = claims.get(self.config.user_claim) or claims.get("sub")
        if not isinstance(user, str) or not user or len(user) > 200:
            raise OidcError("the ID token names no user")
        group = self.config.staff_group
        if group is not None:
            groups = claims.get("groups")
            if not isinstance(groups, list) or group not in groups:
                raise OidcError(f"{user} is not in the staff group")
        org = claims.get(self.config.org_claim)
        return Identity(user, str(org) if org not in (None, "") else None)


def error_page(message: str) -> str:
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sign-in "
            "failed</title></head><body><h1>Sign-in failed</h1><p id=\"oidc-error\">"
            f"{xhtml_escape(message)}</p><p><a href=\"/auth/login\">Back to sign-in</a></p>"
            "</body></html>")
