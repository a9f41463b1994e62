"""The ``x-rh-identity`` header: base64 of a JSON object with ``identity.account_number``
and ``identity.org_id`` (or ``identity.internal.org_id``)."""
from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from upload.errors import ApiError

MAX_HEADER = 16 * 1024


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
    raise ApiError("malformed_identity", f"identity {field} must be a short string")


def parse_identity(header: str | None) -> Identity | None:
    """None when the header is absent; ``ApiError`` (400) when it cannot be read."""
    if header is None:
        return None
    if len(header) > MAX_HEADER:
        raise ApiError("malformed_identity", "x-rh-identity header is too large")
    try:
        decoded = json.loads(base64.b64decode(header.strip(), validate=True))
    except (binascii.Error, ValueError, RecursionError):  # RecursionError: nested too deep
        raise ApiError("malformed_identity", "x-rh-identity is not base64-encoded JSON") from None
    identity = decoded.get("identity") if isinstance(decoded, dict) else None
    if not isinstance(identity, dict):
        raise ApiError("malformed_identity", "x-rh-identity has no identity object")
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
        raise ApiError("malformed_identity", "identity names neither account_number nor org_id")
    return result
