"""A small OpenID Connect issuer on loopback for the tests: discovery, JWKS, an
authorization endpoint that signs in whoever it is told to (no form), and a token endpoint
that checks the PKCE verifier, the client and the redirect URI, and hands out an ID token
signed with an RSA key the test minted. Knobs let a test make it misbehave (another
audience, an expired token, a foreign key, a wrong nonce)."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import threading
import time
from typing import Any
from urllib.parse import urlencode

import jwt
import tornado.web
from cryptography.hazmat.primitives.asymmetric import rsa
from tornado.httpserver import HTTPServer

from tests.helpers import free_port

CLIENT_ID = "upload-gateway"


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class Issuer:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.key = new_key()
        self.kid = secrets.token_hex(4)
        self.user = "oidc.user"
        self.claims: dict[str, Any] = {}  # extra or overriding claims of the next tokens
        self.sign_with: rsa.RSAPrivateKey | None = None  # a key not in the JWKS
        self.codes: dict[str, dict[str, Any]] = {}
        self.token_requests: list[dict[str, str]] = []
        self.page = "<!doctype html><title>empty</title>"
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: HTTPServer | None = None

    # the endpoints ---------------------------------------------------------------------

    def app(self) -> tornado.web.Application:
        issuer = self

        class Discovery(tornado.web.RequestHandler):
            def get(self) -> None:
                self.finish({"issuer": issuer.url,
                             "authorization_endpoint": issuer.url + "/authorize",
                             "token_endpoint": issuer.url + "/token",
                             "jwks_uri": issuer.url + "/jwks",
                             "response_types_supported": ["code"],
                             "code_challenge_methods_supported": ["S256"],
                             "id_token_signing_alg_values_supported": ["RS256"]})

        class Jwks(tornado.web.RequestHandler):
            def get(self) -> None:
                public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(issuer.key.public_key()))
                self.finish({"keys": [{**public, "kid": issuer.kid, "use": "sig",
                                       "alg": "RS256"}]})

        class Authorize(tornado.web.RequestHandler):
            def get(self) -> None:
                args = {k: self.get_query_argument(k, "") for k in (
                    "response_type", "client_id", "redirect_uri", "state", "nonce",
                    "code_challenge", "code_challenge_method", "scope")}
                if args["client_id"] != CLIENT_ID or args["response_type"] != "code" \
                        or args["code_challenge_method"] != "S256" or not args["code_challenge"]:
                    raise tornado.web.HTTPError(400)
                code = secrets.token_urlsafe(16)
                issuer.codes[code] = args
                self.redirect(args["redirect_uri"] + "?" + urlencode(
                    {"code": code, "state": args["state"]}))

        class Token(tornado.web.RequestHandler):
            def post(self) -> None:
                form = {k: self.get_body_argument(k, "") for k in (
                    "grant_type", "code", "redirect_uri", "client_id", "code_verifier")}
                issuer.token_requests.append(form)
                asked = issuer.codes.pop(form["code"], None)  # a code is used once
                digest = hashlib.sha256(form["code_verifier"].encode()).digest()
                challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
                if asked is None or form["grant_type"] != "authorization_code" \
                        or form["client_id"] != CLIENT_ID \
                        or form["redirect_uri"] != asked["redirect_uri"] \
                        or challenge != asked["code_challenge"]:
                    self.set_status(400)
                    self.finish({"error": "invalid_grant"})
                    return
                self.finish({"access_token": secrets.token_urlsafe(16), "token_type": "Bearer",
                             "id_token": issuer.id_token(asked["nonce"])})

        class Page(tornado.web.RequestHandler):
            """Any page a test puts here: another origin than the gateway's (another port
            of the same host: same site, so SameSite=Lax cookies do go along)."""

            def get(self) -> None:
                self.set_header("Content-Type", "text/html; charset=utf-8")
                self.finish(issuer.page)

        return tornado.web.Application([
            (r"/.well-known/openid-configuration", Discovery), (r"/jwks", Jwks),
            (r"/authorize", Authorize), (r"/token", Token), (r"/page", Page)])

    def id_token(self, nonce: str) -> str:
        now = int(time.time())
        claims = {"iss": self.url, "aud": CLIENT_ID, "sub": f"sub-{self.user}",
                  "preferred_username": self.user, "iat": now, "exp": now + 300,
                  "nonce": nonce, **self.claims}
        return jwt.encode(claims, self.sign_with or self.key, algorithm="RS256",
                          headers={"kid": self.kid})

    # running it --------------------------------------------------------------------------

    def start(self) -> Issuer:
        self.thread.start()

        async def listen() -> None:
            self.server = HTTPServer(self.app())
            self.server.listen(self.port, "127.0.0.1")

        asyncio.run_coroutine_threadsafe(listen(), self.loop).result(10)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.loop.call_soon_threadsafe(self.server.stop)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def env(self) -> dict[str, str]:
        return {"OIDC_ISSUER": self.url, "OIDC_CLIENT_ID": CLIENT_ID, "OIDC_LABEL": "Test IdP"}
