"""What every HTTP intake (multipart uploads, tus) reads from a request the same way: the
request id, the caller's ``x-rh-identity``, the service a content type routes to, and the
recorded file name. Errors are ``IntakeError`` with a stable code; each HTTP package
renders them with its own status table.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from dataclasses import dataclass

REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
MAX_IDENTITY_HEADER = 16 * 1024
CONTENT_TYPE = re.compile(
    r"^application/vnd\.redhat\.(?P<service>[a-z0-9_-]+)\.(?P<category>[A-Za-z0-9_.-]+?)"
    r"(?:\+(?P<ext>[A-Za-z0-9.-]+))?$"
)


class IntakeError(Exception):
    """A request an intake refuses: ``code`` is one of the stable error codes."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def request_id_from(*headers: str | None) -> str:
    """The first of ``headers`` (``x-rh-insights-request-id``, then ``X-Request-ID``) that
    is a usable id, else a new random one."""
    for header in headers:
        if header and REQUEST_ID.match(header):
            return header
    return uuid.uuid4().hex


TRACEPARENT = re.compile(r"^00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$")


def traceparent_from(header: str | None) -> str | None:
    """A W3C ``traceparent`` (version 00) worth carrying on, else None."""
    value = (header or "").strip()
    return value if TRACEPARENT.match(value) else None


# identity --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Identity:
    account: str | None
    org_id: str | None
    principal: str | None
    raw: str


def _text(value: object, field: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        text = str(value)
        if 0 < len(text) <= 64 and text.isprintable():
            return text
    raise IntakeError("malformed_identity", f"identity {field} must be a short string")


def parse_identity(header: str | None) -> Identity | None:
    """The ``x-rh-identity`` header (base64 of a JSON object with
    ``identity.account_number`` and ``identity.org_id`` or ``identity.internal.org_id``).
    None when the header is absent; ``IntakeError`` when it cannot be read."""
    if header is None:
        return None
    if len(header) > MAX_IDENTITY_HEADER:
        raise IntakeError("malformed_identity", "x-rh-identity header is too large")
    try:
        decoded = json.loads(base64.b64decode(header.strip(), validate=True))
    except (binascii.Error, ValueError, RecursionError):  # RecursionError: nested too deep
        raise IntakeError("malformed_identity",
                          "x-rh-identity is not base64-encoded JSON") from None
    identity = decoded.get("identity") if isinstance(decoded, dict) else None
    if not isinstance(identity, dict):
        raise IntakeError("malformed_identity", "x-rh-identity has no identity object")
    internal = identity.get("internal")
    org_id = identity.get("org_id")
    if org_id is None and isinstance(internal, dict):
        org_id = internal.get("org_id")
    user = identity.get("user")
    principal = user.get("username") if isinstance(user, dict) else None
    result = Identity(
        account=_text(identity.get("account_number"), "account_number"),
        org_id=_text(org_id, "org_id"),
        principal=_text(principal, "user.username") if principal is not None else None,
        raw=header.strip(),
    )
    if result.account is None and result.org_id is None:
        raise IntakeError("malformed_identity",
                          "identity names neither account_number nor org_id")
    return result


def same_owner(identity: Identity | None, account: str | None, org_id: str | None) -> bool:
    """Whether ``identity`` may see what was recorded for ``account``/``org_id``: its
    org's (its account's, when it names no org). Without an identity: everything."""
    if identity is None:
        return True
    if identity.org_id is not None:
        return identity.org_id == org_id
    return identity.account == account


# routing ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Route:
    service: str
    category: str
    content_type: str


def route(content_type: str | None, valid_services: tuple[str, ...]) -> Route:
    """Service and category from ``application/vnd.redhat.<service>.<category>[+ext]``."""
    value = (content_type or "").split(";", 1)[0].strip()
    match = CONTENT_TYPE.match(value)
    if not match:
        raise IntakeError("unsupported_media_type",
                          f"content type {value[:200]!r} is not "
                          "application/vnd.redhat.<service>.<category>[+ext]")
    if match["service"] not in valid_services:
        raise IntakeError("unsupported_service",
                          f"service {match['service']!r} is not one of "
                          f"{', '.join(valid_services)}")
    return Route(match["service"], match["category"], value)


def clean_filename(name: str | None) -> str | None:
    """Keep the base name only, printable, at most 255 characters (it is recorded, never
    used as a path)."""
    if not name:
        return None
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(ch for ch in base if ch.isprintable())[:255]
    return cleaned or None
