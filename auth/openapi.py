"""The sign-in endpoints' part of /api/v1/openapi.json (merged by upload/openapi.py)."""
from __future__ import annotations

from typing import Any

_HTML = {"content": {"text/html": {"schema": {"type": "string"}}}}
_ERROR = {"description": "error", "content": {"application/json": {"schema": {
    "$ref": "#/components/schemas/Error"}}}}
_REDIRECT = {"description": "signed in (or out): to next, the staff page or the sign-in page"}

PATHS: dict[str, Any] = {
    "/auth/login": {
        "get": {"summary": "The staff sign-in page (local accounts; the identity provider "
                           "when OIDC is configured)",
                "parameters": [{"name": "next", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "the form", **_HTML}}},
        "post": {"summary": "Sign in with a local account (the form's fields and its CSRF "
                            "token)",
                 "requestBody": {"required": True, "content": {
                     "application/x-www-form-urlencoded": {"schema": {
                         "type": "object", "required": ["user", "password", "csrf"],
                         "properties": {"user": {"type": "string"},
                                        "password": {"type": "string"},
                                        "csrf": {"type": "string"},
                                        "next": {"type": "string"}}}}}},
                 "responses": {"302": _REDIRECT,
                               "401": {"description": "wrong name or password", **_HTML},
                               "403": {"description": "the form's token is missing or "
                                                      "expired", **_HTML},
                               "429": {"description": "too many failed sign-ins", **_HTML}}}},
    "/auth/logout": {"post": {
        "summary": "Sign out (the session's CSRF token as X-CSRF-Token or form field csrf)",
        "responses": {"302": _REDIRECT, "403": {"description": "no valid CSRF token"}}}},
    "/auth/oidc/start": {"get": {
        "summary": "Sign in through the identity provider (OIDC, code flow with PKCE)",
        "parameters": [{"name": "next", "in": "query", "schema": {"type": "string"}}],
        "responses": {"302": {"description": "to the provider"},
                      "404": {"description": "OIDC is not configured"},
                      "502": {"description": "the provider cannot be reached", **_HTML}}}},
    "/auth/oidc/callback": {"get": {
        "summary": "Where the provider sends the browser back (code, state)",
        "parameters": [{"name": "code", "in": "query", "schema": {"type": "string"}},
                       {"name": "state", "in": "query", "schema": {"type": "string"}}],
        "responses": {"302": _REDIRECT,
                      "403": {"description": "the sign-in failed (why, in the page)", **_HTML},
                      "404": {"description": "OIDC is not configured"}}}},
    "/auth/session": {"get": {
        "summary": "The signed-in user and the session's CSRF token",
        "responses": {"200": {"description": "user, org_id, via, csrf", "content": {
            "application/json": {"schema": {"type": "object", "properties": {
                "user": {"type": "string"}, "org_id": {"type": "string", "nullable": True},
                "via": {"type": "string"}, "csrf": {"type": "string"}}}}}},
            "401": _ERROR}}},
}
